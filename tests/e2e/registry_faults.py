"""A fault injector on loopback between composecache / BuildKit and a real registry.

Not a mock registry: in `blobs500` mode it forwards every request to the real
registry (scripts/registrylib.py) except layer downloads, which fail; the other
modes stand for a broken registry: `500` answers every request with HTTP 500,
`garbage` answers with bytes that are not HTTP, `hang` accepts and never answers.
"""

from __future__ import annotations

import http.client
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("500", "garbage", "hang", "blobs500")
LAYER_MIN = 16 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # dockerd tries HTTPS first even for a loopback registry, and falls back to plain HTTP only when
    # the answer starts with "HTTP/": the stdlib's default (HTTP/0.9) answers a TLS hello with a bare
    # body, which made BuildKit give up on the registry instead.
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _any(self) -> None:
        mode = self.server.mode
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if mode == "500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in {"connection", "content-length"}}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            if mode == "blobs500" and self.command == "GET" and "/blobs/sha256:" in self.path and len(data) > LAYER_MIN:
                self.send_response(500)  # a layer (a cache config is a few kB): the registry fails mid-build
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in {"connection", "content-length", "transfer-encoding"}:
                    self.send_header(key, value)
            # A HEAD answer names the size of what a GET would send (BuildKit sizes its read by it).
            size = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", size or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mode = "500"
    upstream = ""


class _RawHandler(socketserver.BaseRequestHandler):
    server: _RawServer

    def handle(self) -> None:
        self.request.settimeout(60)
        try:
            self.request.recv(65536)
            if self.server.mode == "garbage":
                self.request.sendall(os.urandom(4096))
            else:  # hang: never answer; the client's timeout must end it
                self.server.stopping.wait(120)
        except OSError:
            pass


class _RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    mode = "garbage"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.stopping = threading.Event()


@contextmanager
def fault_proxy(mode: str, upstream: str = "") -> Iterator[str]:
    """Serve `mode` on a free 127.0.0.1 port; yields `127.0.0.1:PORT`; stopped afterwards."""
    assert mode in MODES, mode
    server: socketserver.TCPServer
    if mode in {"garbage", "hang"}:
        raw = _RawServer()
        raw.mode = mode
        server = raw
    else:
        http_server = _Server(("127.0.0.1", 0), _Handler)
        http_server.mode = mode
        http_server.upstream = upstream
        server = http_server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"127.0.0.1:{port}"
    finally:
        if isinstance(server, _RawServer):
            server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
