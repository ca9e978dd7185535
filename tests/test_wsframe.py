"""The websocket frame reader against wsproto's client frames, split anywhere."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, XorMaskerSimple

from taskcast.wsframe import (
    CLOSE_INVALID_TEXT,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    FrameReader,
    Message,
    Opcode,
    close_frame,
    close_reply,
    unmask,
)

LIMIT = 4096
# One message: text or binary, cut into fragments (each a list entry), or a ping.
texts = st.lists(st.text(max_size=300), min_size=1, max_size=4).map(lambda p: ("text", p))
blobs = st.lists(st.binary(max_size=300), min_size=1, max_size=4).map(lambda p: ("binary", p))
pings = st.binary(max_size=125).map(lambda p: ("ping", [p]))


def client_bytes(messages: list[tuple[str, list[object]]]) -> tuple[bytes, list[Message]]:
    """What a client sends (masked, by wsproto), and what the reader must return."""
    client = FrameProtocol(client=True, extensions=[])
    wire = bytearray()
    expected: list[Message] = []
    for kind, parts in messages:
        if kind == "ping":
            wire += client.ping(parts[0])  # type: ignore[arg-type]
            expected.append((Opcode.PING, parts[0]))  # type: ignore[arg-type]
            continue
        for i, part in enumerate(parts):
            wire += client.send_data(part, fin=i == len(parts) - 1)  # type: ignore[arg-type]
        if kind == "text":
            expected.append((Opcode.TEXT, "".join(parts)))  # type: ignore[arg-type]
        else:
            expected.append((Opcode.BINARY, b"".join(parts)))  # type: ignore[arg-type]
    return bytes(wire), expected


@given(st.lists(st.one_of(texts, blobs, pings), max_size=8), st.lists(st.integers(0, 5000)))
def test_reads_what_wsproto_sends_however_it_is_split(
    messages: list[tuple[str, list[object]]], cuts: list[int]
) -> None:
    wire, expected = client_bytes(messages)
    reader = FrameReader(LIMIT)
    got: list[Message] = []
    start = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        got += reader.feed(wire[start:cut])
        start = cut
    assert reader.failed is None
    assert got == expected


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_unmask_matches_wsproto(data: bytes, mask: bytes) -> None:
    assert unmask(data, mask) == bytes(XorMaskerSimple(mask).process(bytearray(data)))


def masked(first: int, payload: bytes, *, length: int | None = None) -> bytes:
    """A client frame with a chosen first byte (FIN, RSV, opcode) and declared length."""
    mask = os.urandom(4)
    n = len(payload) if length is None else length
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + mask + unmask(payload, mask)


def violation_of(*frames: bytes, limit: int = LIMIT) -> tuple[list[Message], int | None]:
    reader = FrameReader(limit)
    got = reader.feed(b"".join(frames))
    return got, reader.failed.code if reader.failed else None


def test_violations_close_with_their_code_after_the_good_frames_before_them() -> None:
    hello = masked(0x81, b"hello")
    cases = {
        "unmasked": (bytes((0x81, 5)) + b"hello", CLOSE_PROTOCOL_ERROR),
        "reserved bit": (masked(0xC1, b"x"), CLOSE_PROTOCOL_ERROR),
        "unknown opcode": (masked(0x83, b"x"), CLOSE_PROTOCOL_ERROR),
        "fragmented ping": (masked(0x09, b"x"), CLOSE_PROTOCOL_ERROR),
        "long ping": (masked(0x89, b"x" * 126), CLOSE_PROTOCOL_ERROR),
        "stray continuation": (masked(0x80, b"x"), CLOSE_PROTOCOL_ERROR),
        "bad utf-8": (masked(0x81, b"\xc3\x28"), CLOSE_INVALID_TEXT),
        "too big": (masked(0x81, b"", length=LIMIT + 1)[:14], CLOSE_MESSAGE_TOO_BIG),
        # A 64-bit length's top bit must be 0: a protocol error, before any size check.
        "top bit of a 64-bit length": (
            bytes((0x81, 0xFF)) + b"\x80" + bytes(7),
            CLOSE_PROTOCOL_ERROR,
        ),
    }
    for name, (frame, code) in cases.items():
        got, failed = violation_of(hello, frame)
        assert (got, failed) == ([(Opcode.TEXT, "hello")], code), name


def test_fragments_over_the_limit_and_a_message_inside_a_fragmented_one() -> None:
    parts = [masked(0x01, b"x" * 2000), masked(0x00, b"x" * 2000), masked(0x80, b"x" * 200)]
    assert violation_of(*parts) == ([], CLOSE_MESSAGE_TOO_BIG)
    assert violation_of(*parts[:2], masked(0x80, b"x" * 96)) == ([(Opcode.TEXT, "x" * LIMIT)], None)
    interleaved = [masked(0x01, b"a"), masked(0x81, b"b")]
    assert violation_of(*interleaved) == ([], CLOSE_PROTOCOL_ERROR)
    # A ping between fragments is allowed and comes first.
    with_ping = [masked(0x01, b"a"), masked(0x89, b"p"), masked(0x80, b"b")]
    assert violation_of(*with_ping) == ([(Opcode.PING, b"p"), (Opcode.TEXT, "ab")], None)


def test_a_reader_that_failed_reads_nothing_more() -> None:
    reader = FrameReader(LIMIT)
    reader.feed(bytes((0x81, 5)) + b"hello")
    assert reader.failed is not None
    assert reader.feed(masked(0x81, b"hello")) == []


def test_close_replies() -> None:
    assert close_reply(b"") == close_frame(1000)
    assert close_reply((1001).to_bytes(2, "big") + b"bye") == close_frame(1001)
    assert close_reply((4008).to_bytes(2, "big")) == close_frame(4008)
    assert close_reply(b"\x03") == close_frame(CLOSE_PROTOCOL_ERROR)  # one byte
    assert close_reply((1005).to_bytes(2, "big")) == close_frame(CLOSE_PROTOCOL_ERROR)
    assert close_reply((999).to_bytes(2, "big")) == close_frame(CLOSE_PROTOCOL_ERROR)
    assert close_reply((1000).to_bytes(2, "big") + b"\xc3\x28") == close_frame(CLOSE_INVALID_TEXT)
    long_reason = close_frame(1000, "é".encode() * 100)
    assert len(long_reason) <= 127 and long_reason[4:].decode()  # cut between characters
