"""A local HTTP file server for download tests: Range support and scripted faults, no network needed.

Each served path has a queue of faults; every GET pops the next one, so a test can say "the first
request drops the connection after 1000 body bytes, the second one succeeds" and then check which
requests the client made. Faults: Drop (close early), Stall (go silent), Trickle (a byte at a time),
Page (an HTML page instead of the file), Status (a bare HTTP error).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Drop:
    """Send the headers with the full Content-Length, then only ``after`` body bytes, then close.

    ``replace_with`` swaps the served file right after, as if it changed upstream mid-download.
    """

    after: int
    replace_with: bytes | None = None


@dataclass(frozen=True)
class Stall:
    """Send ``after`` body bytes, then go silent for ``seconds`` (to trip the client's timeout), then close."""

    after: int
    seconds: float


@dataclass(frozen=True)
class Trickle:
    """Send ``after`` body bytes at once, then one byte every ``interval`` seconds (a link that is slow to the
    point of uselessness, yet never silent long enough for a per-read timeout); stops when the client hangs up."""

    after: int
    interval: float


@dataclass(frozen=True)
class Page:
    """Answer 200 with ``body`` instead of the file, whatever the Range (a login page, a proxy's error page)."""

    body: bytes = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>\n"
    content_type: str = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Status:
    """Answer with a bare HTTP error status (e.g. 503) instead of the file."""

    code: int


Fault = Drop | Stall | Trickle | Page | Status


@dataclass(frozen=True)
class Served:
    """One request as the server saw it (recorded before the response goes out, so tests never race)."""

    path: str
    range: str | None
    status: int
    body_bytes: int  # body bytes actually written


class CheckpointServer:
    """Serves in-memory files at ``self.url + "/" + name`` from a thread on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.honour_range = True
        self.send_length = True  # False: no Content-Length (the body ends when the connection closes)
        self.content_type = "application/octet-stream"  # of the files (a misconfigured mirror may say text/html)
        self.redirects: dict[str, str] = {}  # name -> path to send a 302 to (like GitHub release assets)
        self.requests: list[Served] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, name: str, data: bytes, *faults: Fault) -> None:
        with self._lock:
            self.files[name] = data
            self.faults[name] = list(faults)

    def next_fault(self, name: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(name)
            return queue.pop(0) if queue else None

    def record(self, served: Served) -> None:
        with self._lock:
            self.requests.append(served)

    def __enter__(self) -> CheckpointServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def _bare(self, owner: CheckpointServer, name: str, code: int, headers: dict[str, str]) -> None:
        owner.record(Served(name, self.headers.get("Range"), code, 0))  # before the client can see it
        self.send_response(code)
        for key, value in {"Content-Length": "0", **headers}.items():
            self.send_header(key, value)
        self.end_headers()

    def do_GET(self) -> None:
        owner: CheckpointServer = self.server.owner  # type: ignore[attr-defined]
        name = self.path.lstrip("/")
        if name in owner.redirects:
            self._bare(owner, name, 302, {"Location": owner.url + "/" + owner.redirects[name]})
            return
        data = owner.files.get(name)
        if data is None:
            self._bare(owner, name, 404, {})
            return
        fault = owner.next_fault(name)
        if isinstance(fault, Status):
            self._bare(owner, name, fault.code, {})
            return
        if isinstance(fault, Page):
            owner.record(Served(name, self.headers.get("Range"), 200, len(fault.body)))
            self.send_response(200)
            self.send_header("Content-Type", fault.content_type)
            self.send_header("Content-Length", str(len(fault.body)))
            self.end_headers()
            self.wfile.write(fault.body)
            return

        start, end, status = 0, len(data) - 1, 200
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        requested = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if requested and owner.honour_range and if_range in (None, etag):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", requested.strip())
            if match:
                start = int(match.group(1))
                if match.group(2):
                    end = min(int(match.group(2)), len(data) - 1)
                if start >= len(data):
                    self._bare(owner, name, 416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                status = 206
        body = data[start : end + 1]

        self.send_response(status)
        self.send_header("Content-Type", owner.content_type)
        if owner.send_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()

        if isinstance(fault, Trickle):
            owner.record(Served(name, requested, status, fault.after))
            self.close_connection = True
            try:
                self.wfile.write(body[: fault.after])
                self.wfile.flush()
                for i in range(fault.after, len(body)):
                    if owner._stop.wait(fault.interval):
                        return
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
            except OSError:  # the client gave up and closed the connection: what the fault is there to provoke
                return
            return
        if isinstance(fault, Drop | Stall):
            sent = body[: fault.after]
            owner.record(Served(name, requested, status, len(sent)))
            if isinstance(fault, Drop) and fault.replace_with is not None:
                owner.add(name, fault.replace_with, *owner.faults[name])
            self.wfile.write(sent)
            self.wfile.flush()
            if isinstance(fault, Stall):
                owner._stop.wait(fault.seconds)
            self.close_connection = True  # the server closes the socket with the body incomplete
            return
        owner.record(Served(name, requested, status, len(body)))
        self.wfile.write(body)
