"""Which key presses reach the flows: a repeated digit within the dedup window is one press,
and a call gets at most ``press_burst`` presses at once and ``max_presses_per_second``
sustained (a token bucket). Pure: the time is an argument."""

from __future__ import annotations

from typing import NamedTuple

from keypress_ari.config import CallSettings


class Drop(NamedTuple):
    """A press kept from the flows; ``logged``: it gets its own ``key_press`` row (every
    duplicate does; of a rate-limited burst only the first, the rest are counted)."""

    reason: str
    logged: bool


class PressGate:
    """One call's gate. :meth:`check` says why a press is dropped (None: let it through);
    :meth:`end_burst` returns how many were dropped by the rate limit since the last press
    let through (the call logs that count once per burst)."""

    __slots__ = ("_bucket", "_last", "_settings", "limited")

    def __init__(self, settings: CallSettings) -> None:
        self._settings = settings
        self._last: tuple[str, str, float] | None = None  # (channel, digit, monotonic time)
        self._bucket: tuple[float, float] | None = None  # (tokens, monotonic time)
        self.limited = 0  # presses dropped by the rate limit in the current burst

    def check(self, channel_id: str, digit: str, now: float) -> Drop | None:
        s = self._settings
        last, self._last = self._last, (channel_id, digit, now)
        window = s.dtmf_dedup_ms / 1000
        if last is not None and last[0] == channel_id and last[1] == digit \
                and now - last[2] < window:
            return Drop(f"duplicate within {s.dtmf_dedup_ms} ms", True)
        if not self._allow(now):
            self.limited += 1
            return Drop(f"rate limited: over {s.max_presses_per_second:g}/s "
                        f"(burst {s.press_burst})", self.limited == 1)
        return None

    def _allow(self, now: float) -> bool:
        s = self._settings
        burst, rate = float(s.press_burst), s.max_presses_per_second
        tokens, last = self._bucket or (burst, now)
        tokens = min(burst, tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        self._bucket = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def end_burst(self) -> int:
        dropped, self.limited = self.limited, 0
        return dropped
