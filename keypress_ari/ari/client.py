"""A thin, typed ARI REST client.

It sits on the key press hot path, so a request does little besides the HTTP round trip:
the ``Authorization`` header and the URL prefix are encoded once, ids are quoted into the
path, query values are strings, and logging stays at debug level. Requests go through our
own keep-alive HTTP/1.1 pool (:mod:`keypress_ari.ari.http`): profiled, aiohttp's client cost
more CPU per key press than the rest of the daemon (``bench/results/profile.md``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import structlog

from keypress_ari import jsoncodec
from keypress_ari.ari.auth import basic_auth_header
from keypress_ari.ari.errors import AriError, AriNotFound, AriUnavailable, error_for_status
from keypress_ari.ari.events import Bridge, Channel, Playback
from keypress_ari.ari.rest_pool import HttpPool, HttpProtocolError

log = structlog.get_logger(__name__)

Params = Mapping[str, str | None]


# Characters that never need quoting (RFC 3986 unreserved): ids and most values are made of
# them only, and checking is much cheaper than quoting (a key press makes such a request).
_unreserved = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


def _q(value: str) -> str:
    """Quote an id for use as one path segment (or one query value)."""
    return value if _unreserved(value) else quote(value, safe="")


def _query(params: Params) -> str:
    """``k=v&...`` for the values that are not None, each key and value quoted."""
    return "&".join(f"{_q(k)}={_q(v)}" for k, v in params.items() if v is not None)


def _flag(value: bool) -> str:
    return "true" if value else "false"


class AriClient:
    """ARI REST calls as typed async methods.

    ``base_url`` is the ARI root, e.g. ``http://127.0.0.1:8088/ari``. ``app`` is the Stasis
    application used by default for originated and created channels. At most
    ``max_connections`` connections to ARI are open at once: Asterisk's HTTP server takes
    100 sessions by default (http.conf ``sessionlimit``, the event websockets included) and
    drops the connections beyond. :meth:`close` closes them.
    """

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        app: str,
        timeout: float = 5.0,
        max_connections: int = 50,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_connections = max_connections
        self.user = user
        self.app = app
        self._headers = {"Authorization": basic_auth_header(user, password)}
        self._timeout = timeout
        self._pool: HttpPool | None = None
        # Called just before each request is sent (the daemon times key press latency).
        self.on_request = on_request

    def __repr__(self) -> str:
        return f"AriClient({self.base_url!r}, user={self.user!r}, app={self.app!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections to ARI (a later request opens new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body, or None for an empty body."""
        if self.on_request is not None:
            self.on_request()
        target = path
        if params:
            query = _query(params)
            if query:
                target += "?" + query
        pool = self._pool
        if pool is None:
            pool = self._pool = HttpPool(self.base_url, self._headers,
                                         limit=self.max_connections)
        body = None if json_body is None else jsoncodec.dumps_bytes(json_body)
        try:
            status, body = await pool.request(method, target, body, self._timeout)
        except TimeoutError:
            raise AriUnavailable("request timed out", method=method, path=path) from None
        except (OSError, HttpProtocolError) as exc:
            raise AriUnavailable(f"{type(exc).__name__}: {exc}", method=method,
                                 path=path) from None
        if 200 <= status < 300:
            if not body:
                return None
            try:
                return jsoncodec.loads(body)
            except ValueError:
                raise AriError(
                    "response is not JSON", status=status, method=method, path=path
                ) from None
        raise error_for_status(status, method, path, self._error_message(body, status))

    @staticmethod
    def _error_message(body: bytes, status: int) -> str:
        try:
            decoded = jsoncodec.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
            return str(decoded["message"])
        text = body.decode("utf-8", "replace").strip()
        return text[:200] or f"HTTP {status}"

    # --- asterisk ----------------------------------------------------------------------

    async def ping(self) -> None:
        """Check that ARI answers (raises on failure)."""
        await self._request("GET", "/asterisk/ping")

    async def get_application(self, name: str) -> dict[str, Any]:
        """A Stasis application's description; AriNotFound while nobody has registered it."""
        body = await self._request("GET", f"/applications/{_q(name)}")
        return dict(body) if isinstance(body, dict) else {}

    async def subscribe(self, application: str, event_source: str) -> None:
        """Subscribe ``application`` to an event source (``channel:ID``, ``bridge:ID``, ...):
        its websocket then receives that object's events too."""
        await self._request("POST", f"/applications/{_q(application)}/subscription",
                            params={"eventSource": event_source})

    async def claim(self, channel_id: str, application: str) -> None:
        """Claim a channel ``StasisBroadcast()`` offered (``CallBroadcast``): AriConflict when
        another app won it, AriNotFound when the offer is over (claimed or timed out)."""
        await self._request("POST", "/events/claim",
                            params={"channelId": channel_id, "application": application})

    # --- channels ----------------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        data = await self._request("GET", "/channels")
        return [Channel.model_validate(item) for item in data or ()]

    async def move(self, channel_id: str, app: str, app_args: str = "") -> None:
        """Move a channel from the Stasis app it is in into ``app`` (StasisEnd there,
        StasisStart here); AriNotFound when the channel is gone."""
        params = {"app": app, **({"appArgs": app_args} if app_args else {})}
        await self._request("POST", f"/channels/{_q(channel_id)}/move", params=params)

    async def get_channel(self, channel_id: str) -> Channel:
        return Channel.model_validate(await self._request("GET", f"/channels/{_q(channel_id)}"))

    async def answer(self, channel_id: str) -> None:
        await self._request("POST", f"/channels/{_q(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self._request("DELETE", f"/channels/{_q(channel_id)}", {"reason": reason})

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
    ) -> Playback:
        """Play one media URI or a list of them in order (``sound:beep``, ...)."""
        media_param = media if isinstance(media, str) else ",".join(media)
        params = {"media": media_param, "playbackId": playback_id, "lang": lang}
        data = await self._request("POST", f"/channels/{_q(channel_id)}/play", params)
        return Playback.model_validate(data)

    async def get_playback(self, playback_id: str) -> Playback:
        return Playback.model_validate(
            await self._request("GET", f"/playbacks/{_q(playback_id)}"))

    async def stop_playback(self, playback_id: str) -> None:
        await self._request("DELETE", f"/playbacks/{_q(playback_id)}")

    async def send_dtmf(
        self, channel_id: str, dtmf: str, *, duration_ms: int = 100, between_ms: int = 100
    ) -> None:
        """Send digits *to* the channel's far end (the channel itself raises no event)."""
        params = {"dtmf": dtmf, "duration": str(duration_ms), "between": str(between_ms)}
        await self._request("POST", f"/channels/{_q(channel_id)}/dtmf", params)

    async def mute(self, channel_id: str, direction: str = "both") -> None:
        """Mute ``in`` (what the channel sends), ``out`` or ``both``."""
        await self._request("POST", f"/channels/{_q(channel_id)}/mute", {"direction": direction})

    async def unmute(self, channel_id: str, direction: str = "both") -> None:
        path = f"/channels/{_q(channel_id)}/mute"
        await self._request("DELETE", path, {"direction": direction})

    async def hold(self, channel_id: str) -> None:
        await self._request("POST", f"/channels/{_q(channel_id)}/hold")

    async def unhold(self, channel_id: str) -> None:
        await self._request("DELETE", f"/channels/{_q(channel_id)}/hold")

    async def start_moh(self, channel_id: str, moh_class: str | None = None) -> None:
        path = f"/channels/{_q(channel_id)}/moh"
        await self._request("POST", path, {"mohClass": moh_class})

    async def stop_moh(self, channel_id: str) -> None:
        await self._request("DELETE", f"/channels/{_q(channel_id)}/moh")

    async def ring(self, channel_id: str) -> None:
        await self._request("POST", f"/channels/{_q(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self._request("DELETE", f"/channels/{_q(channel_id)}/ring")

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        """A channel variable, or None when it is not set.

        ARI answers 404 both for an unset variable and for a missing channel; they are told
        apart by Asterisk's message ("Provided channel was not found" for a missing
        channel), which raises :class:`AriNotFound`.
        """
        path = f"/channels/{_q(channel_id)}/variable"
        try:
            data = await self._request("GET", path, {"variable": name})
        except AriNotFound as exc:
            if "channel" in exc.message.lower():
                raise
            return None
        if isinstance(data, dict):
            value = data.get("value")
            return value if isinstance(value, str) else None
        return None

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        path = f"/channels/{_q(channel_id)}/variable"
        await self._request("POST", path, {"variable": name, "value": value})

    async def create_channel(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Create a channel in a Stasis app without dialling it (see :meth:`dial`)."""
        params = {
            "endpoint": endpoint,
            "app": app or self.app,
            "appArgs": app_args,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
        }
        body = {"variables": dict(variables)} if variables else None
        return Channel.model_validate(await self._request("POST", "/channels/create", params, body))

    async def dial(
        self,
        channel_id: str,
        *,
        caller: str | None = None,
        timeout: int | None = None,
    ) -> None:
        """Dial a channel made by :meth:`create_channel`; the outcome is a ``Dial`` event."""
        params = {"caller": caller, "timeout": None if timeout is None else str(timeout)}
        await self._request("POST", f"/channels/{_q(channel_id)}/dial", params)

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | None = None,
        caller_id: str | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        timeout: int | None = None,
    ) -> Channel:
        """Originate a call that enters a Stasis app once answered."""
        params = {
            "endpoint": endpoint,
            "app": app or self.app,
            "appArgs": app_args,
            "callerId": caller_id,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "timeout": None if timeout is None else str(timeout),
        }
        body = {"variables": dict(variables)} if variables else None
        return Channel.model_validate(await self._request("POST", "/channels", params, body))

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
    ) -> None:
        params = {
            "context": context,
            "extension": extension,
            "priority": None if priority is None else str(priority),
        }
        await self._request("POST", f"/channels/{_q(channel_id)}/continue", params)

    # --- bridges -----------------------------------------------------------------------

    async def create_bridge(
        self,
        *,
        bridge_type: str = "mixing,dtmf_events",
        bridge_id: str | None = None,
        name: str | None = None,
    ) -> Bridge:
        """Create a bridge. Keep ``dtmf_events``: a plain mixing bridge may go native RTP
        and then no ``ChannelDtmfReceived`` arrives."""
        params = {"type": bridge_type, "bridgeId": bridge_id, "name": name}
        return Bridge.model_validate(await self._request("POST", "/bridges", params))

    async def get_bridge(self, bridge_id: str) -> Bridge:
        return Bridge.model_validate(await self._request("GET", f"/bridges/{_q(bridge_id)}"))

    async def list_bridges(self) -> list[Bridge]:
        data = await self._request("GET", "/bridges")
        return [Bridge.model_validate(item) for item in data or ()]

    async def add_channel(
        self,
        bridge_id: str,
        channel_id: str,
        *,
        absorb_dtmf: bool = False,
        role: str | None = None,
    ) -> None:
        """Add a channel; ``absorb_dtmf`` keeps its digits from the other members (its
        ``ChannelDtmfReceived`` events still fire)."""
        params = {"channel": channel_id, "absorbDTMF": _flag(absorb_dtmf), "role": role}
        await self._request("POST", f"/bridges/{_q(bridge_id)}/addChannel", params)

    async def remove_channel(self, bridge_id: str, channel_id: str) -> None:
        path = f"/bridges/{_q(bridge_id)}/removeChannel"
        await self._request("POST", path, {"channel": channel_id})

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self._request("DELETE", f"/bridges/{_q(bridge_id)}")
