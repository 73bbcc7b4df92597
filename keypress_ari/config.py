"""Daemon settings: one object, resolved once at start.

Sources, strongest first: ``KEYPRESS_*`` environment variables (nested with ``__``, e.g.
``KEYPRESS_ARI__PASSWORD``), the TOML file, then the defaults below. A wrong or missing
setting raises :class:`ConfigError` whose message is one line naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_CONFIG_PATH = Path("/etc/keypress-ari/keypress-ari.toml")


class ConfigError(Exception):
    """A setting is wrong or missing; the message names it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AriSettings(_Section):
    url: str = Field("http://127.0.0.1:8088/ari", pattern=r"^https?://[^/\s]+(/\S*)?$")
    user: str = Field(min_length=1)
    password: SecretStr
    app: str = Field("keypress", pattern=r"^[A-Za-z0-9_.-]+$")
    request_timeout: float = Field(5.0, gt=0, le=60)
    reconnect_max_backoff: float = Field(5.0, gt=0, le=300)


class AsteriskEntry(AriSettings):
    """One more Asterisk server for this daemon (``[[asterisk]]``): its own ARI stream and
    REST client; its calls and their buyer legs stay on it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class DatabaseSettings(_Section):
    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/keypress")
    pool_size: int = Field(5, ge=1, le=100)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class CallSettings(_Section):
    unknown_number_cause: Literal["unallocated", "normal", "rejected", "busy"] = "unallocated"
    blocked_caller_cause: Literal["rejected", "busy", "normal", "unallocated"] = "rejected"
    while_dialling: Literal["ring", "moh"] = "ring"  # what the caller hears while buyers ring
    dtmf_dedup_ms: int = Field(50, ge=0, le=1000)  # same digit, same leg, within: a duplicate
    max_presses_per_second: float = Field(5.0, gt=0, le=1000)  # per call, sustained
    press_burst: int = Field(10, ge=1, le=10_000)  # presses allowed at once before limiting
    log_batch_size: int = Field(500, ge=1, le=10_000)
    # Buyers' max_concurrency counts the legs of every daemon on the database (buyer_legs):
    # a daemon's legs stop counting this many seconds after it stopped renewing them (died).
    buyer_lease: float = Field(30.0, ge=1, le=3600)
    # A reservation PostgreSQL has not answered within this: the daemon's own count decides.
    buyer_reserve_timeout: float = Field(1.0, gt=0, le=30)


class AdminSettings(_Section):
    """The admin HTTP API. It is served only when a token is set; it binds 127.0.0.1 unless
    told otherwise."""

    host: str = "127.0.0.1"
    port: int = Field(8089, ge=0, le=65535)
    token: SecretStr = SecretStr("")


class WebhookSettings(_Section):
    """Webhook delivery (flow ``actions``). ``secret`` keys the ``X-Keypress-Signature``
    HMAC; when empty, requests are still signed (with an empty key) and the worker logs a
    warning the first time it sends: set one whenever a flow has webhooks."""

    secret: SecretStr = SecretStr("")
    timeout: float = Field(5.0, gt=0, le=120)            # seconds for one attempt
    max_attempts: int = Field(6, ge=1, le=100)           # then the webhook is marked dead
    initial_backoff: float = Field(1.0, gt=0, le=3600)   # seconds before the 2nd attempt
    max_backoff: float = Field(300.0, gt=0, le=86400)    # cap of the doubling backoff
    poll_interval: float = Field(1.0, gt=0, le=300)      # outbox polling (rows from elsewhere)
    concurrency: int = Field(10, ge=1, le=1000)          # requests in flight at most


class JournalSettings(_Section):
    """The local journal that keeps call log rows and webhook outbox entries while
    PostgreSQL is unreachable (and across a crash): ``STATE_DIR/journal/``."""

    state_dir: Path = Path("/var/lib/keypress-ari")
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)  # then: loud error, kept in memory

    @property
    def directory(self) -> Path:
        return self.state_dir / "journal"


class AgiSettings(_Section):
    """The FastAGI server of the fastagi call mode (``Dial()`` calls whose keys run
    ``AGI(agi://HOST:PORT/keypress?digit=D)`` from a features applicationmap). Off unless
    enabled; binds 127.0.0.1 unless told otherwise."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(4573, ge=0, le=65535)
    header_timeout: float = Field(5.0, gt=0, le=60)    # the request's lines, from connect
    command_timeout: float = Field(5.0, gt=0, le=60)   # each command's answer
    session_timeout: float = Field(60.0, gt=0, le=3600)  # one press's whole session
    max_sessions: int = Field(256, ge=1, le=100_000)   # at once; more are closed at once
    sweep_interval: float = Field(30.0, gt=0, le=3600)  # closing calls whose channels left
    idle_close: float = Field(4 * 3600.0, gt=0)        # a call with no press for this long


class AmiSettings(_Section):
    """The ami call mode: AMI events show the key presses of calls Dial() bridged, AMI actions
    act on them; no dialplan change. Off unless enabled."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    user: str = "keypress"
    secret: SecretStr = SecretStr("")
    action_timeout: float = Field(5.0, gt=0, le=60)
    reconnect_max_backoff: float = Field(10.0, gt=0, le=300)
    # The dialplan context whose extensions "caller" and "buyer" run Stasis(<app>,handover):
    # where a call goes when a flow needs the Stasis app (hold, play, continue routing).
    handover_context: str = Field("keypress-handover", pattern=r"^[A-Za-z0-9_-]+$")


class BroadcastSettings(_Section):
    """Calls offered by ``StasisBroadcast()`` to several daemons (one app name each): the
    first claim wins. A daemon claims while it accepts calls and has fewer than
    ``max_calls`` live; it waits ``delay_per_call_ms`` per live call first (at most
    ``max_delay_ms``), so that the least loaded daemon tends to claim first."""

    claim: bool = True
    max_calls: int | None = Field(None, ge=1)
    delay_per_call_ms: float = Field(0.0, ge=0, le=1000)
    max_delay_ms: float = Field(200.0, ge=0, le=10_000)


class ClusterSettings(_Section):
    """Several daemons on one PostgreSQL. Each holds a lease it renews every
    ``renew_interval`` s for ``lease_ttl`` s; a peer on the same Asterisk takes over the
    calls of a daemon whose lease ran out. Off by default (one daemon): then leases are
    only written, never acted on. On: a daemon that cannot renew for ``lease_ttl`` (paused,
    or cut off from PostgreSQL) holds its calls' events until it renews, since a peer may be
    carrying them (fencing). ``name`` identifies this daemon across restarts (default:
    ``<ari.app>@<ARI host:port>``): a restarted daemon with the same name takes back its
    calls if no peer took them first."""

    enabled: bool = False
    name: str = Field("", pattern=r"^[A-Za-z0-9_.:@-]{0,200}$")
    lease_ttl: float = Field(3.0, gt=0, le=300)
    renew_interval: float = Field(1.0, gt=0, le=60)


class RuntimeSettings(_Section):
    # uvloop: about 15-20 % more key presses per CPU-second and shorter latency tails under
    # load than asyncio's own loop (bench/results/profile.md); "asyncio" is the fallback.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEYPRESS_", env_nested_delimiter="__", extra="forbid"
    )

    ari: AriSettings | None = None  # required by `run`; db and flows commands do without
    asterisk: list[AsteriskEntry] = []  # more Asterisk servers beside [ari] (or instead)
    database: DatabaseSettings = DatabaseSettings()
    log: LogSettings = LogSettings()
    calls: CallSettings = CallSettings()
    webhooks: WebhookSettings = WebhookSettings()
    admin: AdminSettings = AdminSettings()
    agi: AgiSettings = AgiSettings()
    ami: AmiSettings = AmiSettings()
    broadcast: BroadcastSettings = BroadcastSettings()
    cluster: ClusterSettings = ClusterSettings()
    journal: JournalSettings = JournalSettings()
    runtime: RuntimeSettings = RuntimeSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; environment variables win over it.
        return (env_settings, init_settings)


def extra_servers(settings: Settings) -> list[AsteriskEntry]:
    """The Asterisk servers beside the first (see :func:`require_ari`), checked: distinct
    names and distinct ARI URLs."""
    extra = settings.asterisk if settings.ari is not None else settings.asterisk[1:]
    names = [e.name for e in settings.asterisk]
    if len(set(names)) != len(names):
        raise ConfigError(f"asterisk: two entries share a name: {names}")
    urls = [e.url for e in settings.asterisk] + ([settings.ari.url] if settings.ari else [])
    if len(set(urls)) != len(urls):
        raise ConfigError("asterisk: two servers share an ARI URL")
    return list(extra)


def load_settings(path: Path | None = None, *, require_file: bool | None = None) -> Settings:
    """Read the TOML file (if any) and the environment; raise ConfigError naming the problem.

    ``path`` None means the default path, which may be absent (environment-only setups);
    an explicitly given path must exist.
    """
    explicit = path is not None
    path = path or Path(os.environ.get("KEYPRESS_CONFIG", DEFAULT_CONFIG_PATH))
    must_exist = explicit if require_file is None else require_file
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: malformed TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    elif must_exist:
        raise ConfigError(f"{path}: config file not found")
    try:
        return Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        env = "KEYPRESS_" + "__".join(str(p) for p in err["loc"]).upper()
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        raise ConfigError(f"{path}: {where}: {msg} (or set {env})") from None


def require_ari(settings: Settings, path: Path | None = None) -> AriSettings:
    """The daemon's first Asterisk: ``[ari]``, else the first ``[[asterisk]]`` entry."""
    if settings.ari is None and settings.asterisk:
        return settings.asterisk[0]
    if settings.ari is None:
        where = path or Path(os.environ.get("KEYPRESS_CONFIG", DEFAULT_CONFIG_PATH))
        raise ConfigError(f"{where}: ari: section missing (or set KEYPRESS_ARI__USER and "
                          "KEYPRESS_ARI__PASSWORD)")
    return settings.ari
