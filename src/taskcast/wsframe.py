"""RFC 6455 framing for the hub's batched writes.

aiohttp writes one frame per ``transport.write`` — one ``send`` syscall per
delivered event, which profiling showed to be over 40% of the hub's time in
fan-out. Server-to-client frames are unmasked and uncompressed here, so an event is
framed once for all its subscribers and a connection's whole batch goes out in one
call.
"""

from __future__ import annotations

import struct
from enum import IntEnum

_TEXT_FIN = 0x81
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def text_frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((_TEXT_FIN, length))
    if length < 65536:
        return _HEADER_16.pack(_TEXT_FIN, 126, length)
    return _HEADER_64.pack(_TEXT_FIN, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One whole text frame: an event framed once is written to every subscriber."""
    return text_frame_header(len(payload)) + payload


# --- control frames the hub sends --------------------------------------------


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_TEXT = 1007
CLOSE_MESSAGE_TOO_BIG = 1009
MAX_CONTROL_PAYLOAD = 125


def control_frame(opcode: Opcode, payload: bytes = b"") -> bytes:
    """A ping, pong or close frame (a payload of at most 125 bytes, unfragmented)."""
    payload = payload[:MAX_CONTROL_PAYLOAD]
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """A close frame; the reason is cut to fit, never inside a UTF-8 character."""
    reason = reason[: MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode()
    return control_frame(Opcode.CLOSE, code.to_bytes(2, "big") + reason)


def close_reply(payload: bytes) -> bytes:
    """The close frame that answers a peer's close frame (RFC 6455 §5.5.1, §7.4): its
    code echoed; a malformed close fails the connection — a bad code with 1002, a reason
    that is not UTF-8 with 1007 (§8.1: invalid text data)."""
    if not payload:
        return close_frame(CLOSE_NORMAL)
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or not valid_close_code(code):
        return close_frame(CLOSE_PROTOCOL_ERROR)
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return close_frame(CLOSE_INVALID_TEXT)
    return close_frame(code)


def valid_close_code(code: int) -> bool:
    """Codes a peer may send: the defined ones (not 1004-1006, 1015) and 3000-4999."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


# --- reading what a client sends ---------------------------------------------


class ProtocolViolation(Exception):
    """A client broke RFC 6455: the connection is closed with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


Message = tuple[Opcode, "str | bytes"]
_CONTROL = (Opcode.CLOSE, Opcode.PING, Opcode.PONG)
_OPCODES = {int(opcode): opcode for opcode in Opcode}
_WHOLE_TEXT = 0x80 | Opcode.TEXT  # FIN, no reserved bits


def unmask(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (C speed, any length)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameReader:
    """Sans-I/O reader of the frames a client sends (masked, no extensions negotiated):
    whole messages — fragments joined, text decoded — and control frames, in order.

    Why not wsproto's (used for the handshake): its parser is general and pure Python —
    about 6 µs per frame, a quarter of the hub's time in a publish benchmark; this one
    reads only what a client may send. Tested against wsproto's client frames.
    A frame declaring more than ``limit`` bytes is refused from its header, unread.
    """

    __slots__ = ("_buffer", "_opcode", "_parts", "_size", "failed", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = b""
        self._parts: list[bytes] | None = None  # a fragmented message so far
        self._opcode = Opcode.TEXT
        self._size = 0
        self.failed: ProtocolViolation | None = None  # set once; read nothing after it

    def feed(self, data: bytes) -> list[Message]:
        """The messages and control frames ``data`` completes; on a violation, those
        before it, with ``failed`` set."""
        if self.failed is not None:
            return []
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        pos = 0
        out: list[Message] = []
        try:
            while end - pos >= 2:
                first, second = buffer[pos], buffer[pos + 1]
                head = pos + 2
                length = second & 0x7F
                if length == 126:
                    if end - head < 2:
                        break
                    length = int.from_bytes(buffer[head : head + 2], "big")
                    head += 2
                elif length == 127:
                    if end - head < 8:
                        break
                    length = int.from_bytes(buffer[head : head + 8], "big")
                    if length >> 63:  # §5.2: the most significant bit MUST be 0
                        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "64-bit length's top bit set")
                    head += 8
                if first == _WHOLE_TEXT and second & 0x80 and self._parts is None:
                    # The usual frame: a whole, masked text message.
                    if length > self.limit:
                        raise ProtocolViolation(CLOSE_MESSAGE_TOO_BIG, "message too big")
                    start = head + 4
                    if end - start < length:
                        break
                    pos = start + length
                    try:
                        text = unmask(buffer[start:pos], buffer[head:start]).decode()
                    except UnicodeDecodeError:
                        raise ProtocolViolation(CLOSE_INVALID_TEXT, "text is not UTF-8") from None
                    out.append((Opcode.TEXT, text))
                    continue
                opcode = self._check(first, second, length)
                start = head + 4
                if end - start < length:
                    break
                pos = start + length
                payload = unmask(buffer[start:pos], buffer[head:start])
                if opcode in _CONTROL:
                    out.append((opcode, payload))
                elif first & 0x80:  # FIN
                    out.append(self._message(opcode, payload))
                elif self._parts is None:
                    self._opcode, self._parts, self._size = opcode, [payload], length
                else:
                    self._parts.append(payload)
                    self._size += length
        except ProtocolViolation as violation:
            self.failed = violation
            self._buffer = b""
            return out
        self._buffer = buffer[pos:] if pos < end else b""
        return out

    def _check(self, first: int, second: int, length: int) -> Opcode:
        """A frame header's rules; the opcode, or a violation."""
        if first & 0x70:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        opcode = _OPCODES.get(first & 0x0F)
        if opcode is None:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if opcode in _CONTROL:
            if not first & 0x80 or length > MAX_CONTROL_PAYLOAD:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "bad control frame")
            return opcode
        if opcode is Opcode.CONTINUATION:
            if self._parts is None:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "continuation without a message")
        elif self._parts is not None:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a message inside a fragmented one")
        if (self._size if opcode is Opcode.CONTINUATION else 0) + length > self.limit:
            raise ProtocolViolation(CLOSE_MESSAGE_TOO_BIG, "message too big")
        return opcode

    def _message(self, opcode: Opcode, payload: bytes) -> Message:
        """A final frame: the whole message (joined with its fragments), text decoded."""
        if opcode is Opcode.CONTINUATION:
            assert self._parts is not None
            self._parts.append(payload)
            opcode, payload = self._opcode, b"".join(self._parts)
            self._parts, self._size = None, 0
        if opcode is Opcode.TEXT:
            try:
                return opcode, payload.decode()
            except UnicodeDecodeError:
                raise ProtocolViolation(CLOSE_INVALID_TEXT, "text is not UTF-8") from None
        return opcode, payload
