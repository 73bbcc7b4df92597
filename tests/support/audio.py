"""Proving what a party hears, with Asterisk's ``TALK_DETECT`` (``func_talkdetect.so``).

Mute, hold and music on hold leave no state visible over ARI, so the tests listen instead:
``TALK_DETECT`` on a channel the test owns raises ``ChannelTalkingStarted`` when the audio
*read* from that channel gets loud. For a Local pair, what is written into one half is read
from the other, so detection on the test's half hears what the other half is sent:

* the buyer hears what its leg (``;1``, in the daemon's bridge) is sent: detect on the buyer
  phone (``;2`` in kp-test);
* the caller hears what the daemon's caller leg (``;2``) is sent: detect on the caller's phone
  (``;1`` in kp-test).

A speaker is a kp-test channel that plays media (the caller's phone ``;1`` or the buyer phone
``;2``): what it plays is read from its other half and enters the bridge.

Measured on Asterisk 22 (bridge ``mixing,dtmf_events``, two Local pairs, GSM prompts):

* ``talking = (ms of consecutive silence so far) < silence_ms``, evaluated per voice frame read
  (see func_talkdetect.c): a *fresh* detector with a large ``silence_ms`` reports "talking" on
  its first frame even when that frame is silent. With ``silence_ms = 1`` "talking" means "this
  20 ms frame is loud", so there is no spurious start; speech prompts then give only 2-11
  start events per playback (e.g. ``hello-world``: 2).
* Voice frames reach the listener only while something is sent to it: once a playback or
  music on hold stops, nothing is read any more, so the detector stays "talking" and no
  ``ChannelTalkingFinished`` ever comes. Hence every measurement here installs a fresh
  detector and removes it afterwards, and never relies on ``ChannelTalkingFinished``.
* Loudness (average magnitude per 20 ms frame, the ``talk_threshold``): Allison prompts trigger
  at 2048 and mostly not at 4096; MOH class ``default`` (opsound ``macroform-cold_day`` first)
  at 1024, not at 2048; ``sound:silence/*`` and a muted speaker never, not even at 64.
  Chosen: ``TALK_THRESHOLD = 256`` (Asterisk's default), 4x below the music, 8x below speech.
* Latency from ``PlaybackStarted`` on the speaker to ``ChannelTalkingStarted`` on the listener:
  80-220 ms for prompts (``hello-world`` ~80-160 ms); MOH started on the caller leg to talking on
  the caller's phone: ~25 ms.
* MOH started on the daemon's caller leg (``POST /channels/{;2}/moh``) is heard by the caller
  only, not by the other bridge member; the caller is still heard by the buyer unless the leg
  is also muted (``direction=in``). ``DELETE .../moh``: the caller hears nothing again.
* ``POST /channels/{leg}/hold`` on a bridged Local leg: that leg's party (e.g. the caller)
  hears music, the other member does not, and the held party is **still heard** (hold does
  not mute); ``DELETE .../hold`` ends the music. So "caller hears MOH and is not heard" needs
  hold (or moh) plus ``mute?direction=in``.

Negative results are bounded by events where possible: :func:`hears` returns False when the
speaker's playback (``SPEECH_MEDIA``, 1.4 s) finishes without the listener hearing anything.
Where no event can bound the wait (music stopped, digits not passed on), use
:func:`stays_quiet` / :func:`no_event_within`, which wait ``QUIET_WINDOW_S`` seconds: only for
negative assertions.

Stopping is not immediate: ``DELETE /channels/{id}/moh`` (like ``POST .../moh``) only queues
the command to the channel's thread (res_stasis ``stasis_app_send_command_async``) and
answers 204 before the music stops, so a loaded machine can still send a few frames of music
after the daemon logged "consumer off hold". After a stop, use :func:`falls_quiet`: quiet
within ``FALL_QUIET_ATTEMPTS`` fresh windows, so music that never stops still fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError
from keypress_ari.ari.events import ChannelTalkingStarted, Event, PlaybackFinished
from tests.support.caller import EventPredicate, TestCaller

__all__ = [
    "FALL_QUIET_ATTEMPTS",
    "MUSIC_TIMEOUT_S",
    "QUIET_WINDOW_S",
    "SPEECH_MEDIA",
    "TALK_SILENCE_MS",
    "TALK_THRESHOLD",
    "disable_talk_detect",
    "enable_talk_detect",
    "falls_quiet",
    "hears",
    "hears_music",
    "no_event_within",
    "stays_quiet",
]

# A short, loud core prompt: speech from ~0.1 s, 1.42 s long (bounds the negative case).
SPEECH_MEDIA = "sound:hello-world"
# 1 ms: "talking" means "the current frame is loud" (no spurious start on a fresh detector).
TALK_SILENCE_MS = 1
# Average magnitude per frame: speech >= 2048, MOH >= 1024, silence/muted 0.
TALK_THRESHOLD = 256
# How long music on hold may take to be heard before hears_music() says no (it takes ~25 ms).
MUSIC_TIMEOUT_S = 3.0
# The one "nothing happened within N seconds" wait, for negative assertions only: every
# positive path measured here answers within 0.25 s.
QUIET_WINDOW_S = 1.0
# How many fresh quiet windows falls_quiet() allows for a stop Asterisk carries out late.
FALL_QUIET_ATTEMPTS = 3

_playback_ids = itertools.count(1)


async def enable_talk_detect(
    client: AriClient,
    channel_id: str,
    *,
    silence_ms: int = TALK_SILENCE_MS,
    talk_threshold: int = TALK_THRESHOLD,
) -> None:
    """Install a fresh talk detector on ``channel_id`` (any existing one is removed first, so
    its "talking" state starts over). The channel must be one the test's app controls."""
    await disable_talk_detect(client, channel_id)
    await client.set_variable(channel_id, "TALK_DETECT(set)", f"{silence_ms},{talk_threshold}")


async def disable_talk_detect(client: AriClient, channel_id: str) -> None:
    """Remove the talk detector (no error if there is none or the channel is gone)."""
    with contextlib.suppress(AriError):
        await client.set_variable(channel_id, "TALK_DETECT(remove)", "")


def _talking(listener_id: str) -> EventPredicate:
    def matches(event: Event) -> bool:
        return isinstance(event, ChannelTalkingStarted) and event.channel.id == listener_id

    return matches


async def hears(
    test_caller: TestCaller,
    listener_id: str,
    speaker_id: str,
    *,
    media: str = SPEECH_MEDIA,
    timeout: float = 8.0,
) -> bool:
    """Whether ``listener_id`` hears ``speaker_id``: play ``media`` on the speaker and return
    True at the listener's first ``ChannelTalkingStarted``, False if the playback finishes
    first. Both channels must be in the test's app; the listener must otherwise be quiet.
    The playback is stopped and the detector removed before returning. Raises
    AssertionError if neither event arrives within ``timeout``."""
    client = test_caller.client
    playback_id = f"kp-hears-{os.getpid()}-{next(_playback_ids)}"
    heard = _talking(listener_id)

    def settled(event: Event) -> bool:
        return heard(event) or (
            isinstance(event, PlaybackFinished) and event.playback.id == playback_id
        )

    since = test_caller.mark()  # before the detector: anything it hears counts
    await enable_talk_detect(client, listener_id)
    try:
        await client.play(speaker_id, media, playback_id=playback_id)
        event = await test_caller.wait_for(settled, timeout=timeout, since=since)
        return heard(event)
    finally:
        with contextlib.suppress(AriError):
            await client.stop_playback(playback_id)
        await disable_talk_detect(client, listener_id)


async def hears_music(
    test_caller: TestCaller, listener_id: str, timeout: float = MUSIC_TIMEOUT_S
) -> bool:
    """Whether ``listener_id`` hears sound (music on hold) while nobody in the test speaks:
    True at the first ``ChannelTalkingStarted``, False after ``timeout`` seconds without."""
    client = test_caller.client
    since = test_caller.mark()
    await enable_talk_detect(client, listener_id)
    try:
        await test_caller.wait_for(_talking(listener_id), timeout=timeout, since=since)
    except AssertionError:
        return False
    finally:
        await disable_talk_detect(client, listener_id)
    return True


async def no_event_within(
    test_caller: TestCaller,
    predicate: EventPredicate,
    *,
    since: int | None = None,
    seconds: float = QUIET_WINDOW_S,
) -> bool:
    """True if no event matching ``predicate`` arrives (at or after ``since``, default now)
    within ``seconds``. A bounded wait: use it only to assert that something did NOT happen."""
    start = test_caller.mark() if since is None else since
    try:
        await test_caller.wait_for(predicate, timeout=seconds, since=start)
    except AssertionError:
        return True
    return False


async def stays_quiet(
    test_caller: TestCaller, listener_id: str, seconds: float = QUIET_WINDOW_S
) -> bool:
    """True if ``listener_id`` hears nothing for ``seconds`` (fresh detector; nobody in the
    test should be speaking). Negative assertions only."""
    client = test_caller.client
    since = test_caller.mark()
    await enable_talk_detect(client, listener_id)
    try:
        return await no_event_within(
            test_caller, _talking(listener_id), since=since, seconds=seconds
        )
    finally:
        await disable_talk_detect(client, listener_id)


async def falls_quiet(test_caller: TestCaller, listener_id: str) -> bool:
    """True once ``listener_id`` hears nothing for ``QUIET_WINDOW_S`` on a fresh detector,
    within ``FALL_QUIET_ATTEMPTS`` windows: for sound that was just told to stop (Asterisk
    stops it after its 204). Music that goes on is heard in every window: False. Negative
    assertions only."""
    for _ in range(FALL_QUIET_ATTEMPTS):
        if await stays_quiet(test_caller, listener_id):
            return True
    return False
