"""A fault-injecting HTTP/1.1 proxy for S3 tests: sits between boto3 and the real S3 server.

Every request is read whole (head + body), then a seeded coin decides whether it is forwarded
or turned into one of these faults:

- ``500``: an S3 ``InternalError`` XML response (request never reaches the server);
- ``503``: an S3 ``SlowDown`` XML response (throttling, never reaches the server);
- ``reset``: the connection is reset (RST) without any response;
- ``timeout``: the request IS forwarded and executed by the server, but the answer is held
  longer than the client's read timeout and then dropped: the client must retry an operation
  that already happened (the case that shows up double writes).

Requests are forwarded unchanged (SigV4 signatures stay valid); only ``Expect: 100-continue``
is answered by the proxy itself. Counters: requests, faults by kind and by key area, and the
retries the client announced (botocore's ``amz-sdk-request: attempt=N`` header).
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import random
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

FAULTS = ("500", "503", "reset", "timeout")

_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message>'
    "<Resource>{res}</Resource><RequestId>faultproxy</RequestId></Error>"
)


@dataclass
class FaultStats:
    requests: int = 0
    forwarded: int = 0
    faults: Counter = field(default_factory=Counter)
    faults_by_area: Counter = field(default_factory=Counter)
    requests_by_area: Counter = field(default_factory=Counter)
    # "boto3" or "object_store" (delta-rs's client), from the User-Agent
    faults_by_client: Counter = field(default_factory=Counter)
    requests_by_client: Counter = field(default_factory=Counter)
    faulted: list[tuple[str, str, str]] = field(default_factory=list)  # (method, target, kind)
    retries: int = 0  # requests whose amz-sdk-request header says attempt > 1 (botocore only)

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "faults": self.total_faults,
            "fault_rate": round(self.total_faults / self.requests, 3) if self.requests else 0.0,
            "by_kind": dict(sorted(self.faults.items())),
            "requests_by_area": dict(sorted(self.requests_by_area.items())),
            "faults_by_area": dict(sorted(self.faults_by_area.items())),
            "requests_by_client": dict(sorted(self.requests_by_client.items())),
            "faults_by_client": dict(sorted(self.faults_by_client.items())),
            "client_retries": self.retries,
        }


def _area(target: str) -> str:
    """Which part of the bucket a request touches: raw / processed / state / other."""
    path = urlsplit(target).path
    parts = [p for p in path.split("/") if p]
    # path-style addressing: /bucket/key...
    if len(parts) >= 2:
        return parts[1] if parts[1] in ("raw", "processed", "state") else "other"
    return "bucket"


class FaultProxy:
    """``with FaultProxy(upstream_url, rate=0.15, seed=1) as proxy: proxy.url``.

    With ``process=True`` the proxy runs in a child process (its stats come back on stop):
    some delta-rs calls (``DeltaTable.history``) hold the GIL while they wait for S3, so an
    in-process proxy could not answer them until their timeout (a stall no real deployment
    has). ``rule`` and ``spare`` must then be picklable (module-level functions)."""

    def __init__(
        self,
        upstream: str,
        rate: float = 0.15,
        seed: int = 0,
        hold_s: float = 1.5,
        kinds: tuple[str, ...] = FAULTS,
        min_rate: float = 0.12,
        rule: Callable[[str, str], str | None] | None = None,
        spare: Callable[[str, str], bool] | None = None,
        process: bool = False,
    ) -> None:
        self._args = {
            "upstream": upstream, "rate": rate, "seed": seed, "hold_s": hold_s,
            "kinds": kinds, "min_rate": min_rate, "rule": rule, "spare": spare,
        }  # fmt: skip
        self.process = process
        self._child: Any = None
        self._pipe: Any = None
        self._address: tuple[str, int] | None = None
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate = rate
        # after the first 10 requests, a fault is forced whenever the running fault share would
        # drop below min_rate: the injected share holds whatever the request count
        self.min_rate = min_rate
        # rule(method, target) -> a fault kind for that request, or None: targeted faults
        self.rule = rule
        # spare(method, target) -> True: that request is always forwarded untouched
        self.spare = spare
        self.hold_s = hold_s
        self.kinds = kinds
        self.enabled = True
        self.stats = FaultStats()
        self._eligible = 0  # requests not spared: the base of the forced fault share
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._address is not None:
            host, port = self._address
        else:
            assert self._server is not None
            host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        if self.process:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
            self._pipe, child_end = ctx.Pipe()
            self._child = ctx.Process(target=_serve_in_child, args=(child_end, self._args))
            self._child.daemon = True
            self._child.start()
            self._address = self._pipe.recv()
            return self
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._child is not None:
            self._pipe.send("stop")
            self.stats = self._pipe.recv()
            self._child.join(timeout=10)
            self._child = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ per connection

    def _decide(
        self, area: str, attempt: int, method: str = "", target: str = "", client: str = ""
    ) -> str | None:
        with self._lock:
            self.stats.requests += 1
            self.stats.requests_by_area[area] += 1
            self.stats.requests_by_client[client] += 1
            if attempt > 1:
                self.stats.retries += 1
            if self.spare is not None and self.spare(method, target):
                self.stats.forwarded += 1
                return None
            self._eligible += 1
            if self.rule is not None:
                kind = self.rule(method, target)
                if kind is not None:
                    self._count(kind, area, method, target, client)
                    return kind
                self.stats.forwarded += 1
                return None
            # spared requests do not count here: they would force a fault onto every other
            # request (a run of them exhausts the client's retries)
            forced = (
                self._eligible > 10 and self.stats.total_faults < self.min_rate * self._eligible
            )
            if not self.enabled or (self._rng.random() >= self.rate and not forced):
                self.stats.forwarded += 1
                return None
            kind = self._rng.choice(self.kinds)
            self._count(kind, area, method, target, client)
            if kind == "timeout":
                self.stats.forwarded += 1
            return kind

    def _count(self, kind: str, area: str, method: str, target: str, client: str) -> None:
        self.stats.faults[kind] += 1
        self.stats.faults_by_area[area] += 1
        self.stats.faults_by_client[client] += 1
        self.stats.faulted.append((method, target, kind))

    def _serve(self, client: socket.socket) -> None:
        rfile = client.makefile("rb")
        upstream: http.client.HTTPConnection | None = None
        try:
            while True:
                req = _read_request(rfile, client)
                if req is None:
                    return
                method, target, headers, body = req
                attempt = _attempt(headers)
                fault = self._decide(_area(target), attempt, method, target, _client(headers))
                if fault in ("500", "503"):
                    code, msg = (
                        ("InternalError", "We encountered an internal error. Please try again.")
                        if fault == "500"
                        else ("SlowDown", "Please reduce your request rate.")
                    )
                    status = "500 Internal Server Error" if fault == "500" else "503 Slow Down"
                    xml = _XML.format(code=code, msg=msg, res=target).encode()
                    payload = b"" if method == "HEAD" else xml
                    client.sendall(
                        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                        f"Content-Length: {len(xml)}\r\nConnection: close\r\n\r\n".encode()
                        + payload
                    )
                    return
                if fault == "reset":
                    _reset(client)
                    return
                if upstream is None:
                    upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
                response = _forward(upstream, method, target, headers, body)
                if fault == "timeout":
                    time.sleep(self.hold_s)  # longer than the client's read timeout
                    _reset(client)
                    return
                client.sendall(response)
        except (OSError, http.client.HTTPException):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                rfile.close()
                client.close()


def _serve_in_child(pipe: Any, args: dict[str, Any]) -> None:
    """A child process's proxy: sends its address, serves until told to stop, sends stats."""
    proxy = FaultProxy(**args).start()
    pipe.send(proxy._server.server_address[:2])  # type: ignore[union-attr]
    pipe.recv()
    proxy.stop()
    pipe.send(proxy.stats)


def _client(headers: list[tuple[str, str]]) -> str:
    """Which S3 client sent a request: delta-rs's (the Rust object_store crate) or boto3."""
    for name, value in headers:
        if name.lower() == "user-agent":
            return "object_store" if value.startswith("object_store") else "boto3"
    return "boto3"


def _attempt(headers: list[tuple[str, str]]) -> int:
    for name, value in headers:
        if name.lower() == "amz-sdk-request":
            for item in value.split(";"):
                key, _, val = item.strip().partition("=")
                if key == "attempt" and val.isdigit():
                    return int(val)
    return 1


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), like a dropped connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _read_request(rfile, client: socket.socket):
    line = rfile.readline(65537)
    if not line or not line.strip():
        return None
    method, target, _version = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    lower = {n.lower(): v for n, v in headers}
    if lower.get("expect", "").lower() == "100-continue":
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = b""
    if "content-length" in lower:
        body = rfile.read(int(lower["content-length"]))
    elif "chunked" in lower.get("transfer-encoding", "").lower():
        chunks = bytearray()
        while True:
            size_line = rfile.readline(65537)
            chunks += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    trailer = rfile.readline(65537)
                    chunks += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                break
            chunks += rfile.read(size + 2)
        body = bytes(chunks)
    return method, target, headers, body


def _forward(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> bytes:
    """Send the request upstream unchanged (minus Expect) and return the raw response bytes
    to relay, de-chunked with an exact Content-Length."""
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        if name.lower() != "expect":
            conn.putheader(name, value)
    conn.endheaders()
    if body:
        conn.send(body)
    resp = conn.getresponse()
    data = resp.read()
    out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n".encode("latin-1")]
    for name, value in resp.getheaders():
        low = name.lower()
        if low in ("transfer-encoding", "connection", "keep-alive"):
            continue
        if low == "content-length" and method != "HEAD":
            continue
        out.append(f"{name}: {value}\r\n".encode("latin-1"))
    if method != "HEAD" and resp.status not in (204, 304):
        out.append(f"Content-Length: {len(data)}\r\n".encode())
    out.append(b"\r\n")
    if resp.will_close:
        conn.close()
    return b"".join(out) + (data if method != "HEAD" else b"")
