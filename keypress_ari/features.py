"""What an operator adds to Asterisk for the fastagi mode, made from the catalog (pure):
``features.conf`` ``[applicationmap]`` entries, one per key the fastagi flow groups use, and
the dialplan lines that turn them on before ``Dial()``. ``keypress-ari asterisk features``
prints it.

Which leg gets which keys: the caller's leg gets the keys of the groups that numbers use
(key press controls), set with a plain ``Set(DYNAMIC_FEATURES=...)`` (the caller only); the
buyer's leg the keys of the groups that buyers use (external agents), set by a ``b()``
pre-dial handler on the callee only. ``U(keypress-answered)`` records when the buyer
answered (``KEYPRESS_ANSWERED_AT`` on the buyer's leg, read for the conference time limit).
"""

from __future__ import annotations

from dataclasses import dataclass

from keypress_ari.flows.model import Catalog, FlowGroup
from keypress_ari.flows.syntax import NO_KEY_PRESS

_NAMES = {"*": "star", "#": "hash"}
PREDIAL_CONTEXT = "keypress-buyer-features"
ANSWERED_CONTEXT = "keypress-answered"


_PREFIX = {"caller": "kp", "buyer": "kpb", "any": "kpa"}


def feature_name(key: str, leg: str = "caller") -> str:
    """The applicationmap entry for a key on a leg: ``kp1``, ``kpstar``, ``kphash`` on the
    caller's; ``kpb1`` ... on the buyer's (the entry's URL names the leg); ``kpa1`` ... on
    any leg (an inherited ``__DYNAMIC_FEATURES``: the daemon tells the legs apart by
    linkedid)."""
    return _PREFIX[leg] + _NAMES.get(key, key)


@dataclass(frozen=True, slots=True)
class FeatureKeys:
    caller: tuple[str, ...]  # keys the numbers' groups use (caller leg)
    buyer: tuple[str, ...]   # keys the buyers' groups use (buyer leg)

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.caller) | set(self.buyer), key=_order))


def _order(key: str) -> tuple[int, str]:
    return (0, key) if key.isdigit() else (1, key)


def _keys(groups: list[FlowGroup]) -> tuple[str, ...]:
    keys = {flow.key for group in groups for flow in group.flows if flow.key != NO_KEY_PRESS}
    return tuple(sorted(keys, key=_order))


def feature_keys(catalog: Catalog) -> FeatureKeys:
    """The keys of the fastagi groups, by the leg they are pressed on."""
    def fastagi(name: str | None) -> FlowGroup | None:
        group = catalog.flow_group(name) if name else None
        return group if group is not None and "fastagi" in group.modes else None

    caller = [g for n in catalog.numbers if n.keypress_controls
              if (g := fastagi(n.flow_group)) is not None]
    buyer = [g for b in catalog.buyers if b.forwards_to_external_agent
             if (g := fastagi(b.flow_group)) is not None]
    return FeatureKeys(_keys(caller), _keys(buyer))


def render(catalog: Catalog, *, host: str = "127.0.0.1", port: int = 4573,
           moh_class: str | None = None, any_leg: bool = False) -> str:
    """The text to paste: applicationmap entries, the dialplan line, the two contexts
    (``any_leg``: one set of keys for both legs, inherited, as FreePBX needs)."""
    keys = feature_keys(catalog)
    if not keys.all:
        return ("; keypress-ari: no flow group lists fastagi in its modes and is assigned to a\n"
                "; number (keypress_controls) or a buyer (forwards_to_external_agent):\n"
                "; nothing to add to features.conf.\n")
    moh = f",{moh_class}" if moh_class else ""
    lines = [
        "; ---- features.conf (keypress-ari, fastagi mode) -------------------------------",
        "; Each key runs keypress-ari's FastAGI server on the channel that pressed. The key",
        "; never reaches the other party. res_agi.so (which needs res_speech.so) must be",
        "; loaded, or pressing a key hangs up the call.",
        "[general]",
        "featuredigittimeout = 1000",
        "",
        "[applicationmap]",
    ]
    legs = [("any", keys.all)] if any_leg else [("caller", keys.caller), ("buyer", keys.buyer)]
    for leg, leg_keys in legs:
        said = "" if leg == "any" else f"&leg={leg}"
        for key in leg_keys:
            lines.append(f"{feature_name(key, leg)} => {key},self,AGI(agi://{host}:{port}/"
                         f"keypress?digit={_url_digit(key)}{said}){moh}")
    if any_leg:
        every = "#".join(feature_name(k, "any") for k in keys.all)
        return "\n".join([*lines, "", "; ---- extensions.conf (FreePBX: extensions_custom.conf, "
                          "see asterisk/examples/) ----",
                          " same => n,Set(__KEYPRESS_NUMBER=${EXTEN})",
                          f" same => n,Set(__DYNAMIC_FEATURES={every})   ; both legs", ""])
    caller = "#".join(feature_name(k, "caller") for k in keys.caller)
    buyer = "#".join(feature_name(k, "buyer") for k in keys.buyer)
    predial = f"b({PREDIAL_CONTEXT}^s^1)" if buyer else ""
    lines += [
        "",
        "; ---- extensions.conf: before Dial() in the context of the tracking numbers ------",
        "; (FreePBX: extensions_custom.conf, see asterisk/examples/)",
        " same => n,Set(__KEYPRESS_NUMBER=${EXTEN})",
    ]
    if caller:
        lines.append(f" same => n,Set(DYNAMIC_FEATURES={caller})   ; the caller's keys")
    lines.append(f" same => n,Dial(PJSIP/buyer,30,{predial}U({ANSWERED_CONTEXT}))")
    lines.append("")
    if buyer:
        lines += [f"[{PREDIAL_CONTEXT}]   ; runs on the buyer's leg only (Dial b() option)",
                  f"exten => s,1,Set(DYNAMIC_FEATURES={buyer})",
                  " same => n,Return()", ""]
    lines += [f"[{ANSWERED_CONTEXT}]   ; the buyer answered: start of the conference time limit",
              "exten => s,1,Set(KEYPRESS_ANSWERED_AT=${EPOCH})   ; on the buyer's leg",
              " same => n,Return()", ""]
    if "*" in keys.all or "#" in keys.all:
        lines += ["; Note: Dial options t/T/h/H/k/K/x/X make # and * prefixes of the built-in",
                  "; transfer/disconnect features: a * or # key then waits featuredigittimeout.",
                  ""]
    return "\n".join(lines)


def _url_digit(key: str) -> str:
    return {"#": "%23", "*": "%2A"}.get(key, key)
