"""The console's pure parts: signed sessions and CSRF, the live calls table."""

from __future__ import annotations

from datetime import UTC, datetime

from keypress_ari.calllog.ops import CallEvent, CallOpened, CallUpdated
from keypress_ari.console.live import LiveCalls
from keypress_ari.console.session import Sessions


def test_a_session_is_signed_expires_and_dies_with_the_token() -> None:
    sessions = Sessions("secret-token", lifetime=60)
    assert sessions.token_ok("secret-token") and not sessions.token_ok("secret-tokeN")
    session, cookie = sessions.issue(now=1000)
    assert sessions.read(cookie, now=1059) == session
    assert sessions.read(cookie, now=1061) is None  # expired
    expires, csrf, sig = cookie.split(".")
    assert sessions.read(f"{int(expires) + 3600}.{csrf}.{sig}", now=1000) is None  # altered
    assert sessions.read("garbage", now=1000) is None and sessions.read(None) is None
    assert Sessions("another-token").read(cookie, now=1000) is None
    assert Sessions.csrf_ok(session, session.csrf)
    assert not Sessions.csrf_ok(session, "x") and not Sessions.csrf_ok(session, None)


def _at() -> datetime:
    return datetime.now(UTC)


def test_live_rows_follow_the_call_log_ops_and_tell_subscribers() -> None:
    clock = [100.0]
    live = LiveCalls(clock=lambda: clock[0])
    queue = live.subscribe()
    assert queue is not None
    live.observe_op(CallOpened("c1", "18005550100", "5551234", "r", "ch1", "entering", _at()))
    clock[0] = 103.0
    live.observe_op(CallUpdated("c1", "prompting", {}, {}, None, {"buyer": None,
                                                                 "mode": "stasis"}))
    live.observe_op(CallEvent("c1", 3, _at(), "caller", "key_press", "1", None, {}))
    live.observe_op(CallEvent("c9", 1, _at(), "caller", "key_press", "1", None, {}))  # not live
    clock[0] = 110.0
    [row] = live.rows()
    assert (row["stage"], row["last_key"], row["in_stage_s"]) == ("prompting", "1 (caller)", 7)
    live.observe_op(CallUpdated("c1", "ended", {}, {}, "sale", {}, ended_at=_at()))
    assert live.rows() == [] and len(live) == 0
    updates = [queue.get_nowait() for _ in range(queue.qsize())]
    assert updates[0]["row"]["number"] == "18005550100" and updates[-1] == {"gone": "c1"}


def test_a_page_that_stops_reading_is_dropped_not_waited_for() -> None:
    live = LiveCalls()
    queue = live.subscribe()
    assert queue is not None
    for n in range(600):  # more than a page's backlog
        live.observe_op(CallOpened(f"c{n}", "1", "2", None, "ch", "entering", _at()))
    assert queue.qsize() == 500  # full: it was dropped, and gets no more
    live.observe_op(CallOpened("late", "1", "2", None, "ch", "entering", _at()))
    assert queue.qsize() == 500 and len(live) == 601


def test_the_last_hour_is_sixty_minute_buckets() -> None:
    from keypress_ari.console.activity import Activity

    clock = [3600.0 * 10]
    activity = Activity(clock=lambda: clock[0])

    def press(**detail: object) -> CallEvent:
        return CallEvent("c1", 1, _at(), "caller", "key_press", "1", None, dict(detail))

    activity.observe_op(press(matched=True))
    activity.observe_op(press(matched=False))
    activity.observe_op(CallEvent("c1", 2, _at(), "caller", "call_control_action", None,
                                  None, {"outcome": "failed"}))
    clock[0] += 60 * 5
    activity.observe_op(press(matched=True))
    activity.observe_op(press(matched=True, ignored=True))
    hour = activity.last_hour()
    assert hour["series"]["matched"][-6:] == [1, 0, 0, 0, 0, 1]
    assert hour["series"]["no_match"][-6] == 1 and hour["series"]["ignored"][-1] == 1
    assert hour["series"]["failed_actions"][-6] == 1 and hour["peak"] == 1
    clock[0] += 3600  # an hour later: all gone, and old buckets are dropped on the next press
    activity.observe_op(press(matched=True))
    assert sum(activity.last_hour()["series"]["matched"]) == 1
    assert len(activity._buckets) == 1
