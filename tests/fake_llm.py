"""A local HTTP server that speaks the OpenAI Chat Completions and Anthropic Messages
protocols (plain JSON and SSE streaming), replaying scripted replies. The official SDKs
talk to it over a real connection."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"id","name","arguments"}
    status: int = 200
    input_tokens: int = 11
    output_tokens: int = 7
    cached_tokens: int = 3
    delay: float = 0.0  # seconds before answering (a slow model)
    hold: asyncio.Event | None = None  # answer only once set (a model still thinking)
    stream_error: str | None = None  # Anthropic: an SSE error event (e.g. overloaded_error)


class FakeLLM:
    """``replies`` are answered in order; once they run out, ``exhausted`` (if set) is
    answered to every request (Claude Code may ask once more than a script expects)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.exhausted: Reply | None = None
        self.arrived = asyncio.Event()  # set at each request (tests wait on it)
        self._message_ids = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.openai)
        self.app.router.add_post("/v1/messages", self.anthropic)  # any query (?beta=true)
        self.app.router.add_route("*", "/{tail:.*}", self.anything_else)
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def anything_else(self, request: web.Request) -> web.Response:
        """What a client asks besides the model (Claude Code: ``HEAD /``): an empty 200."""
        return web.json_response({})

    async def start(self) -> FakeLLM:
        self.runner = web.AppRunner(self.app, shutdown_timeout=1.0)  # slow replies end
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    def cli_args(self) -> list[str]:
        """``taskcast run`` options that point its OpenAI provider at this server."""
        return [
            "--provider",
            "openai",
            "--model",
            "gpt-test",
            "--base-url",
            f"{self.base}/v1",
            "--api-key",
            "k",
        ]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _next(self, request_body: dict[str, Any]) -> Reply:
        self.requests.append(request_body)
        self.arrived.set()
        if not self.replies and self.exhausted is not None:
            return self.exhausted
        reply = self.replies.pop(0)
        if reply.hold is not None:
            await reply.hold.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply

    # --- OpenAI ---------------------------------------------------------------

    async def openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = await self._next(body)
        if reply.status != 200:
            return web.json_response(
                {"error": {"message": "scripted failure", "type": "server_error"}},
                status=reply.status,
            )
        usage = {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        }
        finish = "tool_calls" if reply.tool_calls else "stop"
        calls = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for c in reply.tool_calls
        ]
        base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if calls:
                message["tool_calls"] = calls
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            data = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            await response.write(f"data: {json.dumps(data)}\n\n".encode())

        await chunk({"role": "assistant", "content": ""})
        for start in range(0, len(reply.text), 4):  # the text in small pieces
            await chunk({"content": reply.text[start : start + 4]})
        for index, call in enumerate(calls):
            arguments = call["function"]["arguments"]
            await chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for start in range(0, len(arguments), 5):
                await chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": arguments[start : start + 5]},
                            }
                        ]
                    }
                )
        await chunk({}, finish)
        if body.get("stream_options", {}).get("include_usage"):
            data = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # --- Anthropic --------------------------------------------------------------

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = await self._next(body)
        if reply.status != 200:
            return web.json_response(
                {"type": "error", "error": {"type": "overloaded_error", "message": "scripted"}},
                status=reply.status,
            )
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["name"],
                    "input": call["arguments"],
                }
            )
        stop = "tool_use" if reply.tool_calls else "end_turn"
        usage = {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_read_input_tokens": reply.cached_tokens,
            "cache_creation_input_tokens": 0,
        }
        self._message_ids += 1
        message = {
            "id": f"msg_{self._message_ids}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(kind: str, data: dict[str, Any]) -> None:
            await response.write(
                f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            )

        await event(
            "message_start",
            {
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "usage": {**usage, "output_tokens": 1},
                }
            },
        )
        if reply.stream_error:  # the stream started with HTTP 200, then the API errs
            await event("error", {"error": {"type": reply.stream_error, "message": "busy"}})
            await response.write_eof()
            return response
        for index, block in enumerate(content):
            if block["type"] == "text":
                await event(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "text", "text": ""}},
                )
                for start in range(0, len(block["text"]), 4):
                    await event(
                        "content_block_delta",
                        {
                            "index": index,
                            "delta": {
                                "type": "text_delta",
                                "text": block["text"][start : start + 4],
                            },
                        },
                    )
            else:
                await event(
                    "content_block_start",
                    {
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
                partial = json.dumps(block["input"])
                for start in range(0, len(partial), 5):
                    await event(
                        "content_block_delta",
                        {
                            "index": index,
                            "delta": {
                                "type": "input_json_delta",
                                "partial_json": partial[start : start + 5],
                            },
                        },
                    )
            await event("content_block_stop", {"index": index})
        await event(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        )
        await event("message_stop", {})
        await response.write_eof()
        return response


async def _serve(script: str) -> None:
    """``python -m tests.fake_llm SCRIPT.json``: serve scripted replies (a list of Reply
    fields) and print the base URL — for test suites outside pytest (node --test)."""
    replies = [Reply(**fields) for fields in json.loads(Path(script).read_text())]
    server = await FakeLLM(replies).start()
    server.exhausted = Reply(text="(no more scripted replies)")
    print(server.base, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve(sys.argv[1]))
