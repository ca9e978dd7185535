"""The floor for acknowledged publishes: a picows server that decodes each JSON event
and acknowledges it by id in taskcast's ack shape — no validation, no storage, no
fan-out. What one Python process on asyncio can do per event at best
(``bench/publishers.py``)."""

import asyncio
import sys

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

_decode = msgspec.json.Decoder().decode
_seq = 0


class Acker(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        global _seq
        if frame.msg_type == WSMsgType.TEXT:
            event = _decode(frame.get_payload_as_bytes())
            _seq += 1
            transport.send(
                WSMsgType.TEXT, b'{"type":"ack","id":"%s","seq":%d}' % (event["id"].encode(), _seq)
            )
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def main(port: int) -> None:
    server = await ws_create_server(lambda _request: Acker(), "127.0.0.1", port)
    print(f"listening on ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
