"""The SIPp harness on the real Asterisk, without the daemon.

The test's own Stasis app registers as ``keypress`` (the name the dialplan hands inbound
calls to), so a SIPp caller's call lands in it; outbound calls to the SIPp buyers are made
with ``/channels/create`` + ``/dial`` on ``PJSIP/acme`` (127.0.0.2). Every wait has a
timeout, every sipp process is bounded (``-timeout``, ``wait``) and reaped (``close``).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keypress_ari.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    Dial,
    Event,
    StasisEnd,
    StasisStart,
)
from tests.support.asterisk import AsteriskServer
from tests.support.caller import TestCaller
from tests.support.dtmf_pcap import DTMF_EVENT_CODES, dtmf_pcap_bytes, parse_pcap
from tests.support.sipp import SippAgent, SippNotInstalled, sipp_binary, sipp_buyer, sipp_caller

pytestmark = pytest.mark.asterisk

NUMBER = "18005550100"
FINAL_DIALSTATUS = {"ANSWER", "BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL"}
HANGUP_CAUSE_STATUS = {17: "BUSY", 18: "NOANSWER", 19: "NOANSWER"}


@pytest.fixture
async def keypress_app(
    asterisk: AsteriskServer, ari_cleanup: AsteriskServer
) -> AsyncIterator[TestCaller]:
    """The test's app, registered under the daemon's name ``keypress`` (no daemon runs)."""
    app = TestCaller(asterisk.base_url, asterisk.ari_user, asterisk.ari_password, app="keypress")
    await app.start()
    try:
        yield app
    finally:
        await app.close()


def _sockets_of(pid: int) -> list[tuple[str, str]]:
    """(kind, local address) of the UDP and raw sockets of a process, from /proc."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = (fd_dir / fd.name).readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[8:-1])
    found = []
    for kind in ("udp", "udp6", "raw", "raw6"):
        for line in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            address, port = fields[1].split(":")
            if kind.endswith("6"):
                found.append((kind, f"[{address}]:{int(port, 16)}"))
            else:
                ip = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
                found.append((kind, f"{ip}:{int(port, 16)}"))
    return found


def _assert_loopback_only(agent: SippAgent) -> None:
    assert agent.pid is not None
    sockets = _sockets_of(agent.pid)
    assert sockets, f"no sockets found for {agent!r}"
    outside = [s for s in sockets if not s[1].startswith(f"{agent.local_ip}:")]
    assert not outside, f"{agent!r} has sockets beyond {agent.local_ip}: {sockets}"


def _position(app: TestCaller, event: Event, start: int = 0) -> int:
    """The index of this very event (identity, not equality) in ``app.events``."""
    return next(i for i in range(start, len(app.events)) if app.events[i] is event)


async def _dtmf_digits(
    app: TestCaller, channel_id: str, count: int, timeout: float = 10.0
) -> list[ChannelDtmfReceived]:
    """The first ``count`` ChannelDtmfReceived of a channel, in order."""
    received: list[ChannelDtmfReceived] = []
    position = 0

    def is_dtmf(event: Event) -> bool:
        return isinstance(event, ChannelDtmfReceived) and event.channel.id == channel_id

    for _ in range(count):
        event = await app.wait_for(is_dtmf, timeout=timeout, since=position)
        assert isinstance(event, ChannelDtmfReceived)
        position = _position(app, event, position) + 1
        received.append(event)
    return received


async def _final_dial(app: TestCaller, channel_id: str, timeout: float = 10.0) -> Dial:
    def final(event: Event) -> bool:
        return (
            isinstance(event, Dial)
            and event.peer.id == channel_id
            and event.dialstatus in FINAL_DIALSTATUS
        )

    event = await app.wait_for(final, timeout=timeout)
    assert isinstance(event, Dial)
    return event


async def _dial_outcome(app: TestCaller, channel_id: str, timeout: float = 10.0) -> str:
    """How a ``/dial`` ended: a final ``Dial`` event's dialstatus, else the status that
    the ``ChannelDestroyed`` cause means. Measured on Asterisk 22: a channel made with
    ``/channels/create`` + ``/dial`` that gets 486 or hits the dial timeout raises no
    final ``Dial`` event (only ``Dial`` "" and "RINGING"); it is hung up with cause 17
    (User busy) or 19 (User alerting, no answer)."""

    def ended(event: Event) -> bool:
        if isinstance(event, Dial):
            return event.peer.id == channel_id and event.dialstatus in FINAL_DIALSTATUS
        return isinstance(event, ChannelDestroyed) and event.channel.id == channel_id

    event = await app.wait_for(ended, timeout=timeout)
    if isinstance(event, Dial):
        return event.dialstatus
    assert isinstance(event, ChannelDestroyed)
    return HANGUP_CAUSE_STATUS.get(event.cause, f"cause {event.cause} {event.cause_txt}")


async def _answered_caller(
    app: TestCaller, agent: SippAgent, since: int, timeout: float = 10.0
) -> StasisStart:
    """Wait for the SIPp caller's StasisStart and answer it through ARI."""

    def from_sipp(event: Event) -> bool:
        return isinstance(event, StasisStart) and event.channel.name.startswith("PJSIP/caller-")

    try:
        start = await app.wait_for(from_sipp, timeout=timeout, since=since)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{agent.describe()}") from None
    assert isinstance(start, StasisStart)
    await app.client.answer(start.channel.id)
    return start


# --- pcap generator ----------------------------------------------------------------------


def test_dtmf_pcap_packets() -> None:
    digits = "0123456789*#"
    packets = parse_pcap(dtmf_pcap_bytes(digits, lead_in_ms=40, gap_ms=60))
    seqs = [p.seq for p in packets]
    times = [p.time_us for p in packets]
    stamps = [p.timestamp for p in packets]
    assert seqs == list(range(seqs[0], seqs[0] + len(packets)))
    assert times == sorted(times) and len(set(times)) == len(times)
    assert stamps == sorted(stamps)
    assert {p.ssrc for p in packets} == {packets[0].ssrc}
    assert packets[0].payload_type == 0 and packets[0].marker
    events = [p for p in packets if p.payload_type == 101]
    assert all(p.is_event for p in events)
    # group by event start timestamp: one group per digit, in order
    groups: dict[int, list[tuple[int, bool, int, int]]] = {}
    for p in events:
        groups.setdefault(p.timestamp, []).append(p.event())
    assert [g[0][0] for g in groups.values()] == [DTMF_EVENT_CODES[d] for d in digits]
    for group in groups.values():
        ends = [e for e in group if e[1]]
        assert len(ends) == 3 and len(set(ends)) == 1  # end packet sent three times
        assert not any(e[1] for e in group[:-3])
        durations = [e[3] for e in group]
        assert durations == sorted(durations) and durations[-1] == 800  # 100 ms at 8 kHz
        assert len({e[0] for e in group}) == 1
    # the marker bit opens each event
    starts = [p for p in events if p.marker]
    assert [p.event()[0] for p in starts] == [DTMF_EVENT_CODES[d] for d in digits]
    # audio timestamps follow the clock: 160 per 20 ms packet
    audio = [p for p in packets if p.payload_type == 0]
    for a, b in itertools.pairwise(audio):
        assert b.timestamp - a.timestamp == (b.time_us - a.time_us) // 125


def test_dtmf_pcap_repeated_digits_are_distinct_events() -> None:
    events = [p for p in parse_pcap(dtmf_pcap_bytes("11")) if p.payload_type == 101]
    assert len({p.timestamp for p in events}) == 2
    assert len({p.seq for p in events}) == len(events)


def test_dtmf_pcap_rejects_non_digits() -> None:
    with pytest.raises(ValueError, match="not DTMF"):
        dtmf_pcap_bytes("1x")


async def test_sipp_missing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SippNotInstalled, match="sipp not installed: run make system-deps"):
        sipp_binary()


async def test_sipp_agent_stop_is_bounded(asterisk: AsteriskServer) -> None:
    """An agent that never gets its call is stopped (SIGTERM, then SIGKILL) and reaped."""
    agent = sipp_buyer(asterisk, "127.0.0.3", "noanswer")
    async with agent:
        assert agent.running
        _assert_loopback_only(agent)
        began = time.monotonic()
        code = await agent.stop()
        assert code is not None and not agent.running
        assert time.monotonic() - began < 9
    assert not agent.workdir.exists()


# --- real calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("digits", ["1#", "11", "0123456789*#"])
async def test_sipp_caller_dtmf_reaches_stasis(
    asterisk: AsteriskServer, keypress_app: TestCaller, digits: str
) -> None:
    since = keypress_app.mark()
    async with sipp_caller(asterisk, NUMBER, digits, delay_ms=300) as caller:
        _assert_loopback_only(caller)
        start = await _answered_caller(keypress_app, caller, since)
        assert start.channel.dialplan is not None
        assert start.channel.dialplan.exten == NUMBER
        assert start.channel.caller.number == "5551234"
        got = await _dtmf_digits(keypress_app, start.channel.id, len(digits))
        assert [e.digit for e in got] == list(digits), caller.describe()
        assert all(e.duration_ms >= 80 for e in got), [e.duration_ms for e in got]
        await keypress_app.client.hangup(start.channel.id)
        await caller.wait_success(10)
        assert "BYE sip:" in caller.message_log()


async def test_sipp_caller_hangs_up_itself(
    asterisk: AsteriskServer, keypress_app: TestCaller
) -> None:
    since = keypress_app.mark()
    agent = sipp_caller(asterisk, NUMBER, "2", delay_ms=100, hangup_after_ms=300)
    async with agent as caller:
        start = await _answered_caller(keypress_app, caller, since)
        (dtmf,) = await _dtmf_digits(keypress_app, start.channel.id, 1)
        assert dtmf.digit == "2"
        hangup = await keypress_app.wait_for(
            lambda e: (
                isinstance(e, ChannelHangupRequest | StasisEnd | ChannelDestroyed)
                and e.channel.id == start.channel.id
            ),
            timeout=10,
        )
        assert hangup is not None
        await caller.wait_success(10)
        assert caller.message_log().count("BYE sip:") >= 1


async def _dial_acme(app: TestCaller, timeout: int) -> str:
    since = app.mark()
    channel = await app.client.create_channel("PJSIP/acme", app=app.app)
    await app.wait_event(StasisStart, channel.id, since=since, timeout=5)
    await app.client.dial(channel.id, timeout=timeout)
    return channel.id


async def test_sipp_buyer_answers_and_sends_dtmf(
    asterisk: AsteriskServer, keypress_app: TestCaller
) -> None:
    async with sipp_buyer(asterisk, "127.0.0.2", "answer_dtmf", "5", delay_ms=300) as buyer:
        _assert_loopback_only(buyer)
        channel_id = await _dial_acme(keypress_app, timeout=10)
        dial = await _final_dial(keypress_app, channel_id)
        assert dial.dialstatus == "ANSWER", buyer.describe()
        (dtmf,) = await _dtmf_digits(keypress_app, channel_id, 1)
        assert dtmf.digit == "5"
        assert dtmf.duration_ms >= 80
        await keypress_app.client.hangup(channel_id)
        await buyer.wait_success(10)


async def test_sipp_buyer_busy(asterisk: AsteriskServer, keypress_app: TestCaller) -> None:
    async with sipp_buyer(asterisk, "127.0.0.2", "busy") as buyer:
        since = keypress_app.mark()
        channel_id = await _dial_acme(keypress_app, timeout=10)
        assert await _dial_outcome(keypress_app, channel_id) == "BUSY", buyer.describe()
        request = await keypress_app.wait_event(
            ChannelHangupRequest, channel_id, since=since, timeout=5
        )
        assert request.cause == 17, request
        await buyer.wait_success(10)
        assert "486 Busy Here" in buyer.message_log()


async def test_sipp_buyer_noanswer(asterisk: AsteriskServer, keypress_app: TestCaller) -> None:
    async with sipp_buyer(asterisk, "127.0.0.3", "noanswer") as buyer:
        began = time.monotonic()
        since = keypress_app.mark()
        channel = await keypress_app.client.create_channel("PJSIP/globex", app="keypress")
        await keypress_app.wait_event(StasisStart, channel.id, since=since, timeout=5)
        await keypress_app.client.dial(channel.id, timeout=2)
        outcome = await _dial_outcome(keypress_app, channel.id)
        assert outcome == "NOANSWER", buyer.describe()
        assert 1.5 < time.monotonic() - began < 6  # the 2 s dial timeout
        await buyer.wait_success(10)
        assert "CANCEL sip:" in buyer.message_log()


async def test_bridged_caller_and_buyer(asterisk: AsteriskServer, keypress_app: TestCaller) -> None:
    """The later daemon test's flow, with the test app in the daemon's place: the caller
    presses 1, the app dials acme and bridges both legs (connected-line updates reach both
    SIPp agents), acme presses 9, the app hangs up both legs, both agents exit 0."""
    app = keypress_app
    since = app.mark()
    buyer = sipp_buyer(asterisk, "127.0.0.2", "answer_dtmf", "9", delay_ms=800)
    caller = sipp_caller(asterisk, NUMBER, "1", delay_ms=300)
    async with buyer, caller:
        start = await _answered_caller(app, caller, since)
        caller_id = start.channel.id
        (one,) = await _dtmf_digits(app, caller_id, 1)
        assert one.digit == "1"
        bridge = await app.client.create_bridge()
        await app.client.add_channel(bridge.id, caller_id)
        mark = app.mark()
        acme = await app.client.create_channel("PJSIP/acme", app=app.app, originator=caller_id)
        await app.wait_event(StasisStart, acme.id, since=mark, timeout=5)
        await app.client.dial(acme.id, caller=caller_id, timeout=10)
        assert (await _final_dial(app, acme.id)).dialstatus == "ANSWER", buyer.describe()
        await app.client.add_channel(bridge.id, acme.id)
        (nine,) = await _dtmf_digits(app, acme.id, 1)
        assert nine.digit == "9"
        await app.client.hangup(acme.id)
        await app.client.hangup(caller_id)
        await app.client.destroy_bridge(bridge.id)
        await buyer.wait_success(10)
        await caller.wait_success(10)


@pytest.mark.parametrize(
    ("side", "method"), [("caller", "invite"), ("caller", "update"), ("buyer", "update")]
)
async def test_sipp_answers_session_refresh(
    asterisk: AsteriskServer, keypress_app: TestCaller, side: str, method: str
) -> None:
    """In-dialog re-INVITE / UPDATE (with an SDP offer) from Asterisk, forced with
    ``PJSIP_SEND_SESSION_REFRESH()`` once the first digit arrived: the scenario answers
    and the call goes on (the second digit arrives, the BYE ends it, exit 0). Asterisk
    with this pjsip.conf sends no connected-line updates (no send_pai/send_rpid), so
    these are the in-dialog requests a SIPp agent can meet. (Forcing the refresh right
    after the ARI answer, before the caller's ACK, sometimes kept Asterisk from sending
    it and from receiving the caller's RTP at all: hence the wait for the first digit.)"""
    app = keypress_app
    since = app.mark()
    agent = (
        sipp_caller(asterisk, NUMBER, "78", delay_ms=200, gap_ms=600)
        if side == "caller"
        else sipp_buyer(asterisk, "127.0.0.2", "answer_dtmf", "78", delay_ms=200, gap_ms=600)
    )
    async with agent:
        if side == "caller":
            channel_id = (await _answered_caller(app, agent, since)).channel.id
        else:
            channel_id = await _dial_acme(app, timeout=10)
            assert (await _final_dial(app, channel_id)).dialstatus == "ANSWER"
        (seven,) = await _dtmf_digits(app, channel_id, 1)
        assert seven.digit == "7"
        await app.client.set_variable(channel_id, "PJSIP_SEND_SESSION_REFRESH()", method)
        eight = await app.wait_event(ChannelDtmfReceived, channel_id, digit="8", since=since)
        # Measured: a refresh that lands between the copies of the 7's end packet makes
        # Asterisk report each later copy as one more "7" (its duplicate check is reset).
        between = app.events[_position(app, seven) + 1 : _position(app, eight)]
        dtmf_between = [e.digit for e in between if isinstance(e, ChannelDtmfReceived)]
        assert set(dtmf_between) <= {"7"} and len(dtmf_between) <= 2, dtmf_between
        await app.client.hangup(channel_id)
        await agent.wait_success(10)
        request = f"{method.upper()} sip:"
        log = agent.message_log()
        expected = 1 if method == "update" or side == "buyer" else 2  # + the caller's INVITE
        assert log.count(request) == expected, agent.describe()
        # the 200 to the refresh carries an SDP answer
        refresh_ok = log[log.rindex(request) :].split("SIP/2.0 200 OK", 1)[1]
        assert "m=audio" in refresh_ok.split("-----------", 1)[0], agent.describe()


# --- a retransmitted INVITE (Asterisk under load) ----------------------------------------


class _FakeUac:
    """Asterisk's side of one call to a SIPp buyer, by hand: a UDP socket on 127.0.0.1 that
    sends the INVITE (SDP: PCMU + telephone-event, media to its own RTP socket), can send
    the very same INVITE again (what pjsip does every T1, 500 ms, until it has handled a
    response: under load the responses wait that long in its queue), ACK, CANCEL, BYE."""

    def __init__(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(5.0)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(5.0)
        self.port = self.sip.getsockname()[1]
        self.call_id = f"fake-uac-{time.monotonic_ns()}@127.0.0.1"
        self.to_tag = ""
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp.getsockname()[1]} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
        )
        self.invite = self._request("INVITE", 1, "z9hG4bK-fake-invite", sdp)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def _request(
        self, method: str, cseq: int, branch: str, body: str = "", to_tag: str = ""
    ) -> bytes:
        host, port = self.remote
        lines = [
            f"{method} sip:acme@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={branch}",
            "From: <sip:tester@127.0.0.1>;tag=fake-uac",
            f"To: <sip:acme@{host}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Contact: <sip:tester@127.0.0.1:{self.port}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            "Max-Forwards: 70",
            *(["Content-Type: application/sdp"] if body else []),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def send(self, data: bytes) -> None:
        self.sip.sendto(data, self.remote)

    def send_invite(self) -> None:
        self.send(self.invite)

    def send_request(self, method: str, cseq: int, *, invite_branch: bool = False) -> None:
        """ACK, CANCEL or BYE; ``invite_branch``: the INVITE's transaction (CANCEL, and the
        ACK of a non-2xx answer)."""
        branch = "z9hG4bK-fake-invite" if invite_branch else f"z9hG4bK-fake-{method}-{cseq}"
        to_tag = "" if method == "CANCEL" else self.to_tag
        self.send(self._request(method, cseq, branch, to_tag=to_tag))

    def receive_until(self, status: str, *, resend: bytes | None = None) -> list[str]:
        """The status lines received, up to and including ``status`` (e.g. "200").
        ``resend``: sent again every 0.5 s (T1) until a first response comes, as a UAC
        retransmits its INVITE over UDP (a SIPp just started, on a loaded machine, may
        take a while to read it)."""
        got: list[str] = []
        if resend is not None:
            self.sip.settimeout(0.5)
            try:
                for _ in range(10):  # 5 s in all, as the socket's own timeout
                    try:
                        text = self.sip.recv(65535).decode(errors="replace")
                    except TimeoutError:
                        self.send(resend)
                        continue
                    got.extend(self._seen(text))
                    if got[-1].startswith(f"SIP/2.0 {status} "):
                        return got
                    break
                else:
                    raise TimeoutError(f"no response to the request in 5 s (wanted {status})")
            finally:
                self.sip.settimeout(5.0)
        while True:  # bounded by the socket timeout
            got.extend(self._seen(self.sip.recv(65535).decode(errors="replace")))
            if got[-1].startswith(f"SIP/2.0 {status} "):
                return got

    def _seen(self, text: str) -> list[str]:
        """A response's status line; its To tag is kept for the requests that follow."""
        for line in text.split("\r\n"):
            if line.lower().startswith("to:") and ";tag=" in line:
                self.to_tag = line.split(";tag=", 1)[1].split(";")[0].strip()
        return [text.split("\r\n", 1)[0]]

    def rtp_events(self, count: int) -> list[int]:
        """The RFC 4733 event codes of the first ``count`` end packets received."""
        codes: list[int] = []
        while len(codes) < count:  # bounded by the socket timeout
            data = self.rtp.recv(2048)
            if len(data) == 16 and data[1] & 0x7F == 101 and data[13] & 0x80:
                codes.append(data[12])
        return codes


@pytest.mark.parametrize("mode", ["answer_dtmf", "busy", "noanswer"])
async def test_sipp_buyer_survives_invite_retransmission(mode: str) -> None:
    """The INVITE again after SIPp's final (or provisional) answer is answered again, and the
    call goes on: SIPp used to abort the call on it as unexpected (answer_dtmf: no digits
    were played and no BYE came, the call stayed bridged until the SIPp timeout; seen in
    the bench at 200 concurrent calls)."""
    scenario = {
        "answer_dtmf": "uas_answer_dtmf.xml",
        "busy": "uas_busy.xml",
        "noanswer": "uas_noanswer.xml",
    }[mode]
    agent = SippAgent(
        scenario,
        local_ip="127.0.0.2",
        digits="5",
        pcap_options={"lead_in_ms": 100, "digit_ms": 100, "gap_ms": 100},
        timeout=20,
    )
    async with agent:
        uac = _FakeUac(("127.0.0.2", agent.local_port))
        try:
            final = {"answer_dtmf": "200", "busy": "486", "noanswer": "180"}[mode]
            uac.send_invite()
            await asyncio.to_thread(uac.receive_until, final, resend=uac.invite)
            uac.send_invite()  # the retransmission, after the answer was sent
            again = await asyncio.to_thread(uac.receive_until, final)
            assert again[-1].startswith(f"SIP/2.0 {final} "), (again, agent.describe())
            if mode == "answer_dtmf":
                uac.send_request("ACK", 1)
                codes = await asyncio.to_thread(uac.rtp_events, 1)
                assert codes == [DTMF_EVENT_CODES["5"]], agent.describe()
                uac.send_request("BYE", 2)
                await asyncio.to_thread(uac.receive_until, "200")
            elif mode == "busy":
                uac.send_request("ACK", 1, invite_branch=True)
            else:
                uac.send_request("CANCEL", 1, invite_branch=True)
                await asyncio.to_thread(uac.receive_until, "487")
                uac.send_request("ACK", 1, invite_branch=True)
            await agent.wait_success(10)
        finally:
            uac.close()
