"""``keypress-ari doctor``: what is right and wrong between this daemon's settings, the
Asterisk it points at and PostgreSQL, one line per check with the fix (pure: judged from
:class:`Facts` that ``doctor_probe`` gathers).

Exit status 0 when no check FAILs, so it can gate a deploy; WARN lines are worth reading.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from typing import Literal
from urllib.parse import urlsplit

from keypress_ari.flows.model import Catalog

Status = Literal["OK", "WARN", "FAIL"]

STASIS_MODULES = ("res_stasis", "app_stasis", "res_ari", "res_ari_channels", "res_ari_bridges",
                  "res_ari_playbacks", "bridge_simple", "bridge_softmix", "res_musiconhold")
FASTAGI_MODULES = ("res_agi", "res_speech", "app_stack", "res_mutestream")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.detail}"
        return text + (f"\n     fix: {self.fix}" if self.fix and self.status != "OK" else "")


@dataclass(slots=True)
class Facts:
    """What the probe found; None where it could not look."""

    ari_url: str
    app: str
    server: str = ""                       # set when the daemon has several Asterisk servers
    ari_status: int | None = None          # HTTP status of GET /asterisk/info
    ari_error: str = ""
    asterisk_version: str = ""
    modules: set[str] | None = None        # loaded module names (no .so)
    applications: set[str] | None = None   # registered Stasis apps
    asterisk_skew: float | None = None     # seconds, Asterisk's Date header minus ours
    db_error: str = ""
    schema: int | None = None              # newest applied migration (None: empty or away)
    latest: int = 0
    db_skew: float | None = None
    catalog: Catalog | None = None
    catalog_error: str = ""
    agi_enabled: bool = False
    ami_enabled: bool = False
    dialplan: str | None = None            # `dialplan show` over AMI (None: not read)
    dialplan_error: str = ""
    handover_context: str = "keypress-handover"
    notes: list[str] = field(default_factory=list)


def _ari(f: Facts) -> Check:
    if f.ari_status == 200:
        return Check("ARI", "OK", f"{f.ari_url} answered (Asterisk {f.asterisk_version})")
    if f.ari_status == 401:
        return Check("ARI", "FAIL", f"{f.ari_url} refused the user (401)",
                     "make [ari] user/password match a `type = user` section of ari.conf")
    if f.ari_status is not None:
        return Check("ARI", "FAIL", f"{f.ari_url} answered {f.ari_status}",
                     "is ARI enabled (ari.conf [general] enabled = yes) at this URL?")
    return Check("ARI", "FAIL", f"{f.ari_url} unreachable: {f.ari_error}",
                 "start Asterisk, or enable HTTP (http.conf enabled = yes, bindport) and check "
                 "[ari] url")


def _bind(f: Facts) -> Check:
    host = urlsplit(f.ari_url).hostname or ""
    try:
        loopback = host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return Check("http.conf bind", "OK", f"ARI reached on loopback ({host})")
    return Check("http.conf bind", "WARN", f"ARI reached on {host}, not loopback",
                 "bind http.conf to 127.0.0.1 unless the daemon runs on another host; then "
                 "use TLS (tlsenable) and a firewall")


def _modules(f: Facts, needed: tuple[str, ...], why: str) -> Check:
    if f.modules is None:
        return Check(f"modules ({why})", "WARN", "could not list Asterisk's modules",
                     "needs ARI reachable (GET /asterisk/modules)")
    missing = [m for m in needed if m not in f.modules]
    if not missing:
        return Check(f"modules ({why})", "OK", ", ".join(needed) + " loaded")
    return Check(f"modules ({why})", "FAIL", "not loaded: " + ", ".join(missing),
                 "add `load => NAME.so` to modules.conf for each, then `core restart when "
                 "convenient`")


def _uses(catalog: Catalog | None, mode: str) -> bool:
    return catalog is not None and any(mode in g.modes for g in catalog.flow_groups)


def checks(f: Facts, others: tuple[Facts, ...] = ()) -> list[Check]:
    """Every check: those of each Asterisk server (``f`` the first, ``others`` the rest of
    ``[[asterisk]]``, each named after its server), then the dialplan (over the one [ami]),
    PostgreSQL and the catalog, once."""
    out = server_checks(f)
    for other in others:
        out.extend(server_checks(other))
    out.extend(_dialplan(f))
    out.append(_database(f))
    if f.db_skew is not None:
        out.append(_skew("clock vs PostgreSQL", f.db_skew))
    out.extend(_catalog(f))
    return out


def server_checks(f: Facts) -> list[Check]:
    """The checks of one Asterisk server; their names carry ``f.server`` when it is set."""
    out = _asterisk(f)
    if not f.server:
        return out
    return [Check(f"{c.name} [{f.server}]", c.status, c.detail, c.fix) for c in out]


def _asterisk(f: Facts) -> list[Check]:
    out = [_ari(f), _bind(f)]
    if f.ari_status == 200:
        out.append(_modules(f, STASIS_MODULES, "Stasis mode"))
        if f.agi_enabled or _uses(f.catalog, "fastagi"):
            out.append(_modules(f, FASTAGI_MODULES, "fastagi mode"))
        if f.modules is not None and "bridge_native_rtp" in f.modules and (
                f.ami_enabled or _uses(f.catalog, "ami")):
            out.append(Check("native RTP bridge", "WARN",
                             "bridge_native_rtp is loaded: natively bridged calls give the ami "
                             "mode no DTMF events",
                             "set any DYNAMIC_FEATURES value before Dial(), or "
                             "noload => bridge_native_rtp.so"))
        if f.applications is not None:
            out.append(Check("Stasis app", "OK", f"{f.app} registered")
                       if f.app in f.applications else
                       Check("Stasis app", "WARN", f"{f.app} not registered: the daemon is not "
                             "running (or uses another [ari] app)",
                             "systemctl start keypress-ari"))
        if f.asterisk_skew is not None:
            out.append(_skew("clock vs Asterisk", f.asterisk_skew))
    return out


def _dialplan(f: Facts) -> list[Check]:
    if f.dialplan is None:
        return [Check("dialplan", "WARN", f"not read: {f.dialplan_error or 'no [ami] secret'}",
                      "set [ami] user/secret (manager.conf, write = command) so the doctor "
                      "can read the dialplan")]
    out = [Check("dialplan", "OK", f"an extension runs Stasis({f.app})")
           if f"Stasis({f.app}" in f.dialplan else
           Check("dialplan", "FAIL", f"no extension runs Stasis({f.app}): no call reaches "
                 "the Stasis mode", f"add `exten => _X.,1,Stasis({f.app})` to the context "
                 "your trunk's calls enter (see asterisk/etc/extensions.conf keypress-inbound)")]
    if f.ami_enabled or _uses(f.catalog, "ami"):
        ctx = f.handover_context
        out.append(Check("dialplan (ami handover)", "OK", f"context {ctx} exists")
                   if f"'{ctx}'" in f.dialplan else
                   Check("dialplan (ami handover)", "WARN", f"no context {ctx}: hold, play and "
                         "continue routing are refused on ami calls",
                         f"add [{ctx}] with caller and buyer running Stasis({f.app},handover) "
                         "(asterisk/examples/plain-dial.conf)"))
    return out


def _skew(name: str, seconds: float) -> Check:
    if abs(seconds) <= 2.0:
        return Check(name, "OK", f"{seconds:+.1f} s")
    return Check(name, "WARN", f"{seconds:+.1f} s apart: timeouts and the call log's times "
                 "disagree", "run NTP (systemd-timesyncd or chrony) on both hosts")


def _database(f: Facts) -> Check:
    if f.db_error:
        return Check("PostgreSQL", "FAIL", f"unreachable: {f.db_error}",
                     "check [database] dsn and that PostgreSQL accepts this host")
    if f.schema is None or f.schema < f.latest:
        return Check("PostgreSQL", "FAIL", f"schema at {f.schema or 'nothing'}, this "
                     f"keypress-ari needs {f.latest:03d}", "run `keypress-ari db migrate`")
    if f.schema > f.latest:
        return Check("PostgreSQL", "FAIL", f"schema at {f.schema:03d}, newer than this "
                     f"keypress-ari knows ({f.latest:03d})", "upgrade keypress-ari")
    return Check("PostgreSQL", "OK", f"reachable, schema at {f.schema:03d} (the latest)")


def _catalog(f: Facts) -> list[Check]:
    if f.catalog_error:
        return [Check("catalog", "FAIL", f.catalog_error, "fix the stored flows "
                      "(keypress-ari flows export, edit, flows import)")]
    c = f.catalog
    if c is None:
        return []
    out: list[Check] = []
    for r in c.routers:
        if not r.buyers:
            out.append(Check("catalog", "WARN", f"router {r.name} has no buyers",
                             "list buyers under the router, or calls to it end at once"))
    used = {r.flow_group for r in c.routers} | {b.flow_group for b in c.buyers} | {
        n.flow_group for n in c.numbers}
    for g in c.flow_groups:
        if g.name not in used:
            out.append(Check("catalog", "WARN", f"flow group {g.name} is assigned nowhere",
                             "assign it to a router, buyer or number, or remove it"))
    routed = {n.router for n in c.numbers}
    for r in c.routers:
        if r.name not in routed:
            out.append(Check("catalog", "WARN", f"router {r.name} has no numbers",
                             "point a number at it, or remove it"))
    if not out:
        out.append(Check("catalog", "OK", f"{len(c.numbers)} numbers, {len(c.routers)} "
                         f"routers, {len(c.buyers)} buyers, {len(c.flow_groups)} flow groups"))
    return out


def failed(results: list[Check]) -> bool:
    return any(c.status == "FAIL" for c in results)


def render(results: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([asdict(c) for c in results], indent=2)
    return "\n".join(c.line() for c in results)
