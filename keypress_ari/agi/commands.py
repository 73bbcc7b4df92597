"""The AGI commands the FastAGI mode sends, typed, over one :class:`AgiSession`.

``GET FULL VARIABLE`` evaluates an expression (``${CHANNEL(linkedid)}``) and, given a channel
name, reads another channel's variables; ``HANGUP NAME`` hangs up another channel. A
command that fails raises :class:`AgiCommandFailed` carrying Asterisk's answer.
"""

from __future__ import annotations

from keypress_ari.agi.protocol import AgiResult, command, quote
from keypress_ari.agi.server import AgiSession


class AgiCommandFailed(Exception):
    def __init__(self, what: str, result: AgiResult) -> None:
        super().__init__(f"{what}: {result.code} {result.text}".strip())
        self.result = result


class AgiCommands:
    __slots__ = ("session",)

    def __init__(self, session: AgiSession) -> None:
        self.session = session

    async def _ok(self, what: str, line: str) -> AgiResult:
        result = await self.session.run(line)
        if not result.ok or (result.result is not None and result.result < 0):
            raise AgiCommandFailed(what, result)
        return result

    async def evaluate(self, expression: str, channel: str | None = None) -> str | None:
        """The value of ``expression`` (None when empty or unset), on ``channel`` if given."""
        words = ["GET FULL VARIABLE", quote(expression)]
        if channel:
            words.append(quote(channel))
        result = await self._ok("GET FULL VARIABLE", command(*words))
        if result.result != 1:
            return None
        return result.data or None

    async def variable(self, name: str, channel: str | None = None) -> str | None:
        return await self.evaluate("${" + name + "}", channel)

    async def set_variable(self, name: str, value: str) -> None:
        await self._ok("SET VARIABLE", command("SET VARIABLE", quote(name), quote(value)))

    async def hangup(self, channel: str | None = None) -> bool:
        """Hang up this channel, or ``channel`` by name; False when no such channel."""
        words = ["HANGUP"] + ([quote(channel)] if channel else [])
        result = await self.session.run(command(*words))
        if not result.ok:
            raise AgiCommandFailed("HANGUP", result)
        return result.result == 1

    async def exec(self, app: str, data: str = "") -> int:
        """Run a dialplan application on this channel; its return (-2: no such app)."""
        result = await self.session.run(command("EXEC", app, quote(data)))
        if not result.ok or result.result == -2:
            raise AgiCommandFailed(f"EXEC {app}", result)
        return result.result or 0

    async def stream_file(self, name: str, escape_digits: str = "") -> None:
        await self._ok("STREAM FILE",
                       command("STREAM FILE", quote(name), quote(escape_digits)))
