"""Pure-Python pcap files of RTP with RFC 4733 DTMF events, for SIPp's ``play_pcap_audio``.

SIPp (3.6.1, ``prepare_pcap.c``/``send_packets.c``) reads a pcap with Ethernet (or Linux
cooked) framing, keeps the UDP header + payload of each IPv4/IPv6 UDP packet (the length
comes from the UDP header, and ``len`` must equal ``caplen``), and replays them through a
raw socket at the pace of the capture timestamps. It rewrites only the UDP ports (source:
its media port, destination: the port of the far end's SDP, plus the packet's offset from
the smallest destination port in the file) and the UDP checksum; the RTP header (sequence
number, timestamp, SSRC) goes out exactly as written here. Hence:

* one pcap per call and digit string: replaying the same file twice in one call repeats
  sequence numbers and timestamps, and the receiver drops the repeats;
* sequence numbers and RTP timestamps rise across the whole file, over every digit;
* every packet of the file has the same destination port (the addresses do not matter).

The stream is what a phone sends: G.711 mu-law silence (payload type 0, 20 ms packets)
for ``lead_in_ms`` and between digits, and for each digit RFC 4733 event packets
(payload type 101) that share the RTP timestamp of the event start, carry a rising
duration, set the marker bit on the first packet and the end bit on the last, which is
sent ``end_copies`` times (RFC 4733 2.5.1.4: three), each copy with a new sequence number.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DTMF_EVENT_CODES",
    "RtpPacket",
    "dtmf_pcap_bytes",
    "dtmf_rtp_packets",
    "parse_pcap",
    "pcap_bytes",
    "pcap_duration_ms",
    "write_dtmf_pcap",
]

#: RFC 4733 event codes of the DTMF keys.
DTMF_EVENT_CODES: dict[str, int] = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}

CLOCK_RATE = 8000  # telephone-event/8000 and PCMU/8000
PCMU_SILENCE = b"\xff"  # mu-law encoding of 0
PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet and the moment it is sent (microseconds from the first packet)."""

    time_us: int
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes

    def to_bytes(self) -> bytes:
        first = 0x80  # version 2, no padding, no extension, no CSRC
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        header = struct.pack(
            "!BBHII", first, second, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        return header + self.payload

    @classmethod
    def from_bytes(cls, data: bytes, time_us: int = 0) -> RtpPacket:
        if len(data) < 12:
            raise ValueError(f"RTP packet too short: {len(data)} bytes")
        first, second, seq, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
        if first >> 6 != 2:
            raise ValueError(f"not RTP version 2: first byte {first:#04x}")
        csrc_len = 4 * (first & 0x0F)
        return cls(
            time_us, second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc, data[12 + csrc_len :]
        )

    @property
    def is_event(self) -> bool:
        return len(self.payload) == 4 and self.payload_type != 0

    def event(self) -> tuple[int, bool, int, int]:
        """An RFC 4733 payload as ``(event code, end bit, volume, duration)``."""
        code, flags, duration = struct.unpack("!BBH", self.payload[:4])
        return code, bool(flags & 0x80), flags & 0x3F, duration


def dtmf_rtp_packets(
    digits: str,
    *,
    lead_in_ms: int = 60,
    digit_ms: int = 100,
    gap_ms: int = 100,
    tail_ms: int = 40,
    ptime_ms: int = 20,
    end_copies: int = 3,
    volume: int = 10,
    event_payload_type: int = 101,
    audio_payload_type: int = 0,
    ssrc: int = 0x4B50_0001,
    first_seq: int = 1000,
    first_timestamp: int = 16000,
) -> list[RtpPacket]:
    """The RTP stream of a digit string (see the module docstring).

    ``lead_in_ms`` of silence precedes the first digit (at least one packet, so that the
    far end has seen the stream before the first event), each digit lasts ``digit_ms``
    (rounded up to whole packets), ``gap_ms`` of silence separates digits and ``tail_ms``
    of silence follows the last one. Times, sequence numbers and timestamps all rise.
    """
    unknown = sorted({d for d in digits if d not in DTMF_EVENT_CODES})
    if unknown:
        raise ValueError(f"not DTMF digits: {unknown!r} (allowed: 0-9 * # A-D)")
    if ptime_ms <= 0 or digit_ms <= 0 or end_copies < 1:
        raise ValueError("ptime_ms and digit_ms must be > 0 and end_copies >= 1")
    if min(lead_in_ms, gap_ms, tail_ms) < 0:
        raise ValueError("lead_in_ms, gap_ms and tail_ms must be >= 0")
    samples = CLOCK_RATE * ptime_ms // 1000  # per packet: 160 at 20 ms
    silence = PCMU_SILENCE * samples
    packets: list[RtpPacket] = []
    seq = first_seq
    tick = 0  # packet slots of ptime_ms since the start of the stream

    def emit(payload_type: int, marker: bool, timestamp: int, payload: bytes) -> None:
        nonlocal seq
        packets.append(
            RtpPacket(tick * ptime_ms * 1000, payload_type, marker, seq, timestamp, ssrc, payload)
        )
        seq += 1

    def silence_for(ms: int, minimum: int = 0) -> None:
        nonlocal tick
        for _ in range(max(minimum, -(-ms // ptime_ms))):
            emit(audio_payload_type, not packets, first_timestamp + tick * samples, silence)
            tick += 1

    silence_for(lead_in_ms, minimum=1)
    event_packets = max(1, -(-digit_ms // ptime_ms))
    for index, digit in enumerate(digits):
        if index:
            silence_for(gap_ms)
        code = DTMF_EVENT_CODES[digit]
        start = first_timestamp + tick * samples  # every packet of the event carries it
        for k in range(1, event_packets + 1):
            end = k == event_packets
            flags = (0x80 if end else 0) | (volume & 0x3F)
            payload = struct.pack("!BBH", code, flags, min(k * samples, 0xFFFF))
            for copy in range(end_copies if end else 1):
                emit(event_payload_type, k == 1 and copy == 0, start, payload)
                tick += 1
    silence_for(tail_ms)
    return packets


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ident: int) -> bytes:
    """Ethernet/IPv4/UDP framing with valid lengths (UDP checksum 0: SIPp recomputes it)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    src_ip = bytes(int(part) for part in src[0].split("."))
    dst_ip = bytes(int(part) for part in dst[0].split("."))
    # version 4 + 20-byte header, DSCP EF, total length, id, don't fragment, TTL 64
    fields = (0x45, 0xB8, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, IPPROTO_UDP, 0)
    ip = struct.pack("!BBHHHBBH4s4s", *fields, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    ethernet = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"  # dst, src (local)
    return ethernet + struct.pack("!H", ETHERTYPE_IPV4) + ip + udp


def pcap_bytes(
    packets: Iterable[RtpPacket],
    *,
    src: tuple[str, int] = ("127.0.0.1", 6000),
    dst: tuple[str, int] = ("127.0.0.1", 10000),
    start_time: float = 1_700_000_000.0,
) -> bytes:
    """A classic little-endian pcap (Ethernet link type) of the RTP packets."""
    out = [struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    base_us = int(start_time * 1_000_000)
    for ident, packet in enumerate(packets):
        frame = _frame(packet.to_bytes(), src, dst, ident)
        when = base_us + packet.time_us
        out.append(
            struct.pack("<IIII", when // 1_000_000, when % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    return b"".join(out)


def dtmf_pcap_bytes(digits: str, **options: int) -> bytes:
    """:func:`dtmf_rtp_packets` of ``digits`` (same keyword options) as pcap bytes."""
    return pcap_bytes(dtmf_rtp_packets(digits, **options))


def write_dtmf_pcap(path: Path | str, digits: str, **options: int) -> Path:
    """Write the pcap of ``digits`` to ``path`` and return the path."""
    target = Path(path)
    target.write_bytes(dtmf_pcap_bytes(digits, **options))
    return target


def pcap_duration_ms(digits: str, **options: int) -> int:
    """How long SIPp takes to play the pcap of ``digits`` (first to last packet + ptime)."""
    packets = dtmf_rtp_packets(digits, **options)
    return packets[-1].time_us // 1000 + options.get("ptime_ms", 20)


def parse_pcap(data: bytes) -> list[RtpPacket]:
    """The RTP packets of a pcap written by :func:`pcap_bytes` (or any Ethernet/IPv4/UDP
    pcap), with ``time_us`` relative to the first packet. Checks the framing lengths."""
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == PCAP_MAGIC else ">"
    if struct.unpack(f"{endian}I", data[:4])[0] != PCAP_MAGIC:
        raise ValueError(f"not a microsecond pcap: magic {data[:4].hex()}")
    linktype = struct.unpack(f"{endian}I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"link type {linktype}, expected Ethernet")
    offset = 24
    packets: list[RtpPacket] = []
    first_us: int | None = None
    while offset < len(data):
        sec, usec, caplen, length = struct.unpack(f"{endian}IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        if caplen != length or len(frame) != caplen:
            raise ValueError(f"truncated packet: caplen {caplen}, len {length}")
        if struct.unpack("!H", frame[12:14])[0] != ETHERTYPE_IPV4:
            raise ValueError("not IPv4")
        ihl = 4 * (frame[14] & 0x0F)
        ip_total = struct.unpack("!H", frame[16:18])[0]
        if frame[23] != IPPROTO_UDP or 14 + ip_total != len(frame):
            raise ValueError("not UDP, or the IPv4 total length does not match the frame")
        if _ipv4_checksum(frame[14 : 14 + ihl]) != 0:
            raise ValueError("bad IPv4 header checksum")
        udp = frame[14 + ihl :]
        if struct.unpack("!H", udp[4:6])[0] != len(udp):
            raise ValueError("UDP length does not match the packet")
        when = sec * 1_000_000 + usec
        first_us = when if first_us is None else first_us
        packets.append(RtpPacket.from_bytes(udp[8:], when - first_us))
    return packets
