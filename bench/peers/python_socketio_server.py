"""python-socketio on aiohttp: each "event" goes to every other connected socket."""

import asyncio
import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])
app = web.Application()
sio.attach(app)


@sio.on("event")  # type: ignore[untyped-decorator]  # python-socketio ships no type hints
async def relay(sid: str, data: object) -> None:
    await sio.emit("event", data, skip_sid=sid)


async def main(port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    bound = runner.addresses[0][1]
    print(f"listening on ws://127.0.0.1:{bound}/socket.io/?EIO=4&transport=websocket", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
