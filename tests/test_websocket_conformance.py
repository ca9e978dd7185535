"""RFC 6455 conformance of the hub's front door, case group by case group as
Autobahn|Testsuite arranges them (1 framing, 2 pings, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close handling, 9 limits, 10 masking, 12/13 compression,
and the opening handshake).

The client here is a raw socket that writes every byte itself — wsproto's client would
refuse to send most of these frames — against a real hub process. The hub does not echo,
so "the message was read" is its answer: an ack for a publish, ``binary_unsupported``
for a binary message, a pong for a ping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HubProcess

LIMIT = 65_536  # --max-frame-bytes of the hub under test
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
CLOSE_NORMAL, PROTOCOL_ERROR, INVALID_TEXT, TOO_BIG = 1000, 1002, 1007, 1009


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    root: Path = tmp_path_factory.mktemp("conformance")
    process = HubProcess(f"sqlite:{root / 'events.db'}", "--max-frame-bytes", str(LIMIT))
    process.start(root / "hub.log")
    yield process
    process.terminate()


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame as a client writes it; ``length`` overrides the declared length."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def publish(size: int | None = None, task: str = "c") -> bytes:
    """A valid publish frame's text, padded to exactly ``size`` bytes when given."""
    body: dict[str, Any] = {"type": "probe", "channel": f"tasks.{task}", "payload": {"pad": ""}}
    text = json.dumps(body, separators=(",", ":")).encode()
    if size is not None:
        body["payload"]["pad"] = "x" * (size - len(text))
        text = json.dumps(body, separators=(",", ":")).encode()
        assert len(text) == size
    return text


class Peer:
    """One raw connection: the handshake, then frames in and out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, hub: HubProcess, extra: str = "") -> Peer:
        status, headers, _ = await handshake(hub, extra)
        assert status == 101, status
        return cls(*headers["__streams__"])

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def next_frame(self, timeout: float = 10) -> tuple[bool, int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not head[1] & 0x80, "server frames are never masked"
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return bool(head[0] & 0x80), head[0] & 0x0F, payload

    async def json(self) -> dict[str, Any]:
        fin, opcode, payload = await self.next_frame()
        assert fin and opcode == TEXT, (opcode, payload)
        decoded: dict[str, Any] = json.loads(payload)
        return decoded

    async def expect_close(self, code: int) -> bytes:
        """The server's close frame (after any frames before it), then its TCP close."""
        while True:
            _, opcode, payload = await self.next_frame()
            if opcode == CLOSE:
                break
        assert struct.unpack("!H", payload[:2])[0] == code, payload
        payload[2:].decode()  # a reason the server sends is UTF-8
        assert await asyncio.wait_for(self.reader.read(), 10) == b""  # the server closed TCP
        self.writer.close()
        return payload

    async def expect_open(self) -> None:
        """Still served: a ping now is answered with its pong."""
        self.send(frame(PING, b"still-open"))
        while True:
            _, opcode, payload = await self.next_frame()
            if opcode == PONG and payload == b"still-open":
                return

    async def finish(self) -> None:
        self.send(frame(CLOSE, close_payload(CLOSE_NORMAL)))
        await self.expect_close(CLOSE_NORMAL)


async def handshake(hub: HubProcess, extra: str = "", request: str | None = None) -> Any:
    """Send an upgrade request; the status, the headers (lower-case) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            request
            or (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, Any] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = b""
    if status == 101:
        expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert headers["sec-websocket-accept"] == expected
        headers["__streams__"] = (reader, writer)
    else:
        body = await asyncio.wait_for(reader.read(), 10)  # and the server closes
        writer.close()
    return status, headers, body


# --- 1. framing ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, 125, 126, 127, 128, 65535, LIMIT])
async def test_1_text_messages_of_every_length_class_are_read(hub: HubProcess, size: int) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, publish(size)))
    assert (await peer.json())["type"] == "ack"
    await peer.finish()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
async def test_1_binary_messages_are_read_and_refused_politely(hub: HubProcess, size: int) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(BINARY, b"\xfe" * size))
    assert (await peer.json())["code"] == "binary_unsupported"
    await peer.expect_open()
    await peer.finish()


async def test_1_an_empty_text_message_is_an_error_frame_not_a_close(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, b""))
    assert (await peer.json())["code"] == "bad_json"
    await peer.expect_open()
    await peer.finish()


# --- 2. pings and pongs --------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes(range(125)), b"\xff" * 125])
async def test_2_a_ping_is_answered_with_its_payload(hub: HubProcess, payload: bytes) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(PING, payload))
    assert await peer.next_frame() == (True, PONG, payload)
    await peer.finish()


async def test_2_a_ping_over_125_bytes_is_a_protocol_error(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(PING, b"x" * 126))
    await peer.expect_close(PROTOCOL_ERROR)


async def test_2_unsolicited_pongs_are_ignored(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(PONG), frame(PONG, b"unsolicited"))
    await peer.expect_open()
    await peer.finish()


async def test_2_ten_pings_in_one_write_get_ten_pongs_in_order(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(*(frame(PING, f"ping {i}".encode()) for i in range(10)))
    for i in range(10):
        assert await peer.next_frame() == (True, PONG, f"ping {i}".encode())
    await peer.finish()


# --- 3. reserved bits ----------------------------------------------------------------


@pytest.mark.parametrize("rsv", range(1, 8))
async def test_3_reserved_bits_fail_the_connection(hub: HubProcess, rsv: int) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(PING, b"before"), frame(TEXT, publish(), rsv=rsv), frame(PING))
    assert await peer.next_frame() == (True, PONG, b"before")  # read up to the bad frame
    await peer.expect_close(PROTOCOL_ERROR)


async def test_3_reserved_bits_on_a_control_frame_fail_the_connection(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(PING, b"x", rsv=4))
    await peer.expect_close(PROTOCOL_ERROR)


# --- 4. opcodes ----------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
async def test_4_reserved_opcodes_fail_the_connection(hub: HubProcess, opcode: int) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(PING, b"before"), frame(opcode, b"reserved"))
    assert await peer.next_frame() == (True, PONG, b"before")
    await peer.expect_close(PROTOCOL_ERROR)


# --- 5. fragmentation ----------------------------------------------------------------


async def test_5_a_message_in_fragments_with_pings_between_them(hub: HubProcess) -> None:
    text = publish()
    peer = await Peer.open(hub)
    peer.send(
        frame(TEXT, text[:10], fin=False),
        frame(PING, b"between"),
        frame(CONTINUATION, text[10:20], fin=False),
        frame(PONG, b"unsolicited"),
        frame(CONTINUATION, text[20:]),
    )
    assert await peer.next_frame() == (True, PONG, b"between")
    assert (await peer.json())["type"] == "ack"
    await peer.finish()


async def test_5_a_message_in_one_byte_fragments(hub: HubProcess) -> None:
    text = publish()
    parts = [frame(TEXT, text[:1], fin=False)]
    parts += [frame(CONTINUATION, text[i : i + 1], fin=False) for i in range(1, len(text) - 1)]
    parts.append(frame(CONTINUATION, text[-1:]))
    peer = await Peer.open(hub)
    peer.send(*parts)
    assert (await peer.json())["type"] == "ack"
    await peer.finish()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([frame(PING, b"x", fin=False)], id="fragmented ping"),
        pytest.param([frame(PONG, b"x", fin=False)], id="fragmented pong"),
        pytest.param([frame(CONTINUATION, b"x")], id="continuation, no message"),
        pytest.param([frame(CONTINUATION, b"x", fin=False)], id="open continuation, no message"),
        pytest.param(
            [frame(TEXT, b"{", fin=False), frame(TEXT, b"}")], id="a message inside a message"
        ),
        pytest.param([frame(TEXT, b"{", fin=False), frame(BINARY, b"}")], id="binary inside text"),
    ],
)
async def test_5_fragmentation_errors_fail_the_connection(
    hub: HubProcess, frames: list[bytes]
) -> None:
    peer = await Peer.open(hub)
    peer.send(*frames)
    await peer.expect_close(PROTOCOL_ERROR)


# --- 6. UTF-8 ------------------------------------------------------------------------

GREEK = "κόσμε 𝄞 ✓"


async def test_6_utf8_text_split_inside_characters_arrives_intact(hub: HubProcess) -> None:
    body = {"type": "probe", "channel": "tasks.utf8", "payload": {"text": GREEK}}
    text = json.dumps(body, ensure_ascii=False).encode()
    cut = text.index("𝄞".encode()) + 2  # inside the 4-byte character
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, json.dumps({"type": "subscribe", "channel": "tasks.utf8"}).encode()))
    assert (await peer.json())["type"] == "subscribed"
    peer.send(frame(TEXT, text[:cut], fin=False), frame(CONTINUATION, text[cut:]))
    replies = [await peer.json(), await peer.json()]
    delivered = next(r for r in replies if r["type"] == "probe")
    assert delivered["payload"]["text"] == GREEK
    await peer.finish()


INVALID_UTF8 = [
    pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", id="surrogate"),
    pytest.param(b"\xc0\xaf", id="overlong"),
    pytest.param(b"\xf4\x90\x80\x80", id="beyond U+10FFFF"),
    pytest.param(b"\x80", id="lone continuation byte"),
    pytest.param(b"\xe2\x82", id="truncated sequence"),
    pytest.param(b"\xfe\xff", id="never valid bytes"),
]


@pytest.mark.parametrize("payload", INVALID_UTF8)
async def test_6_invalid_utf8_fails_with_1007(hub: HubProcess, payload: bytes) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, payload))
    await peer.expect_close(INVALID_TEXT)


@pytest.mark.parametrize("payload", INVALID_UTF8)
async def test_6_invalid_utf8_across_fragments_fails_with_1007(
    hub: HubProcess, payload: bytes
) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, b'"ok' + payload[:1], fin=False), frame(CONTINUATION, payload[1:] + b'"'))
    await peer.expect_close(INVALID_TEXT)


# --- 7. close handling ---------------------------------------------------------------


async def test_7_a_close_without_payload_is_answered_1000(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE))
    await peer.expect_close(CLOSE_NORMAL)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
)
async def test_7_valid_close_codes_are_echoed(hub: HubProcess, code: int) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, close_payload(code, b"bye")))
    await peer.expect_close(code)


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
async def test_7_invalid_close_codes_fail_with_1002(hub: HubProcess, code: int) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, close_payload(code)))
    await peer.expect_close(PROTOCOL_ERROR)


async def test_7_a_one_byte_close_payload_fails_with_1002(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, b"\x03"))
    await peer.expect_close(PROTOCOL_ERROR)


async def test_7_a_close_reason_in_utf8_is_accepted(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, close_payload(1000, GREEK.encode())))
    await peer.expect_close(CLOSE_NORMAL)


@pytest.mark.parametrize("reason", INVALID_UTF8)
async def test_7_a_close_reason_that_is_not_utf8_fails_with_1007(
    hub: HubProcess, reason: bytes
) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, close_payload(1000, reason)))
    await peer.expect_close(INVALID_TEXT)


async def test_7_a_close_payload_over_125_bytes_fails_with_1002(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, close_payload(1000, b"x" * 124)))
    await peer.expect_close(PROTOCOL_ERROR)


async def test_7_nothing_after_the_close_is_read(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(CLOSE, close_payload(1000)), frame(TEXT, publish()), frame(PING, b"late"))
    _, opcode, payload = await peer.next_frame()  # no ack, no pong before the close
    assert opcode == CLOSE and payload[:2] == close_payload(1000)
    assert await asyncio.wait_for(peer.reader.read(), 10) == b""


# --- 9. limits -----------------------------------------------------------------------


async def test_9_a_message_of_exactly_the_limit_is_read(hub: HubProcess) -> None:
    text = publish(LIMIT)
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, text[: LIMIT // 2], fin=False), frame(CONTINUATION, text[LIMIT // 2 :]))
    assert (await peer.json())["type"] == "ack"
    await peer.finish()


async def test_9_a_frame_over_the_limit_fails_with_1009_from_its_header(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, length=LIMIT + 1))  # nothing follows the header: refused unread
    await peer.expect_close(TOO_BIG)


async def test_9_fragments_over_the_limit_fail_with_1009(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, b"x" * LIMIT, fin=False), frame(CONTINUATION, b"x"))
    await peer.expect_close(TOO_BIG)


async def test_9_a_64_bit_length_with_its_top_bit_set_is_a_protocol_error(
    hub: HubProcess,
) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, length=2**63 + 5))
    await peer.expect_close(PROTOCOL_ERROR)  # before any size check (RFC 6455 §5.2)


async def test_9_a_huge_64_bit_length_is_too_big(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(BINARY, length=2**62))
    await peer.expect_close(TOO_BIG)


# --- 10. masking ---------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, CLOSE])
async def test_10_unmasked_client_frames_fail_the_connection(hub: HubProcess, opcode: int) -> None:
    peer = await Peer.open(hub)
    payload = close_payload(1000) if opcode == CLOSE else b"{}"
    peer.send(frame(opcode, payload, masked=False))
    await peer.expect_close(PROTOCOL_ERROR)


# --- 12/13. compression (not offered by the hub) -------------------------------------


async def test_12_permessage_deflate_is_not_negotiated_and_rsv1_then_fails(
    hub: HubProcess,
) -> None:
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    status, headers, _ = await handshake(hub, offer)
    assert status == 101
    assert "sec-websocket-extensions" not in headers
    peer = Peer(*headers["__streams__"])
    peer.send(frame(TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4))  # a deflated "Hello"
    await peer.expect_close(PROTOCOL_ERROR)


# --- the opening handshake -----------------------------------------------------------


async def test_handshake_a_subprotocol_offer_is_not_selected(hub: HubProcess) -> None:
    status, headers, _ = await handshake(hub, "Sec-WebSocket-Protocol: chat, superchat\r\n")
    assert status == 101
    assert "sec-websocket-protocol" not in headers
    await Peer(*headers["__streams__"]).finish()


async def test_handshake_an_unsupported_version_gets_426_naming_13(hub: HubProcess) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 12\r\n\r\n"
    )
    status, headers, body = await handshake(hub, request=request)
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    message = json.loads(body)["message"]
    assert "missing" not in message.lower()
    assert "13" in message


@pytest.mark.parametrize(
    "drop",
    ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version"],
)
async def test_handshake_a_missing_header_gets_400_with_an_error_body(
    hub: HubProcess, drop: str
) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    kept = "".join(f"{line}\r\n" for line in lines if not line.startswith(drop))
    request = f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n{kept}\r\n"
    status, _, body = await handshake(hub, request=request)
    assert status in (400, 426)
    assert json.loads(body)["code"] == "invalid_frame"


async def test_the_hub_served_every_case_and_still_serves(hub: HubProcess) -> None:
    peer = await Peer.open(hub)
    peer.send(frame(TEXT, publish()))
    assert (await peer.json())["type"] == "ack"
    await peer.finish()
    assert hub.proc is not None and hub.proc.poll() is None
