"""A real local websocket server replaying recorded frames, dropping connections on a plan."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.server import ServerConnection, serve


@dataclass
class ReplayServer:
    """Per connection: wait for `subscribes` client messages, then send the next `plan[i][0]`
    frames from a shared cursor, then `drop` (close the TCP connection without a close frame),
    go `silent` (send nothing more, keep the socket open) or `stay`.

    `sent` lists, in order, every frame the server handed to a connection; `requests` holds the
    client messages received on each connection."""

    frames: list[str]
    plan: list[tuple[int, str]]
    subscribes: int = 1
    reply: object = None  # callable(request text) -> reply text or None
    cursor: int = 0
    sent: list[str] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)
    port: int = 0

    async def _handler(self, ws: ServerConnection) -> None:
        conn = len(self.requests)
        got: list[str] = []
        self.requests.append(got)
        with contextlib.suppress(websockets.ConnectionClosed):
            while len(got) < self.subscribes:
                msg = await ws.recv()
                got.append(msg if isinstance(msg, str) else msg.decode())
                if self.reply is not None:
                    answer = self.reply(got[-1])  # type: ignore[operator]
                    if answer:
                        await ws.send(answer)
            count, action = self.plan[conn] if conn < len(self.plan) else (10**9, "stay")
            for _ in range(count):
                if self.cursor >= len(self.frames):
                    break
                frame = self.frames[self.cursor]
                await ws.send(frame)
                self.sent.append(frame)
                self.cursor += 1
            if action == "drop":
                ws.transport.close()  # flushes what was sent, then closes: no close frame
                return
            await ws.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self):
        async with serve(self._handler, "127.0.0.1", 0, max_size=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            yield self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


async def wait_until(predicate, timeout: float = 60.0) -> None:
    """Poll until predicate() is true; fail the test (not hang) after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def http_server(routes: dict[str, object]):
    """A real local HTTP server (aiohttp) answering GET `routes` (path -> handler); yields
    its base URL ``http://127.0.0.1:PORT``."""
    from aiohttp import web

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
