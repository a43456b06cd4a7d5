"""Resumable, bounded HTTP download of one checkpoint file, and its plain-log progress report.

The machinery behind :func:`zoedepth_ros.weights.fetch`: a :class:`Downloader` streams a URL into a ``.part``
file, resuming it with ``Range`` / ``If-Range`` across dropped connections and hashing as it goes, and ends in
bounded time (per-read timeout, stall limit, deadline); a web page where a checkpoint should be is refused at
once. :class:`ProgressLog` turns its callbacks into a few log lines for a node (no tty for a bar), and
:func:`download_lock` keeps two processes from downloading the same file at once. What to download, where it
goes and whether the result may be used is decided in ``weights``; this module knows nothing of releases.

Only the standard library is used (tqdm for the optional bar, imported when one is drawn).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from zoedepth_ros import __version__

from .errors import WeightsError

DEFAULT_TIMEOUT = 60.0  # seconds per connect / per socket read, not for the whole download
# No progress for this long, across reconnects, ends a download: twice the read timeout, so a dead connection is
# reconnected once before the stall gives up, while a server trickling a byte at a time cannot hold on forever.
DEFAULT_STALL_TIMEOUT = 120.0
STALL_MIN_BYTES = 64 * 1024  # what counts as progress within one stall_timeout (a trickle below it is a stall)
DEFAULT_RETRIES = 5  # consecutive failed attempts without new bytes before giving up
DEFAULT_BACKOFF = 1.0  # first retry delay in seconds; doubles per consecutive failure
MAX_BACKOFF = 30.0
CHUNK_SIZE = 1 << 20

PROGRESS_STEPS = 10  # a progress line every 1/PROGRESS_STEPS of the file (every 10 %)
PROGRESS_MIN_INTERVAL = 10.0  # seconds; a fast link must not flood the log with a line per 10 %
PROGRESS_MAX_SILENCE = 60.0  # seconds; a slow link still shows that it is alive

_log = logging.getLogger(__name__)
_USER_AGENT = f"zoedepth_ros/{__version__} (weights manager)"
# Errors that mean "the network let us down", worth a retry. Disk errors (plain OSError) are not here.
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)
_RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SNIFF_BYTES = 64  # enough for "<!DOCTYPE html" after a BOM and some white space


class _AttemptFailed(Exception):
    """One request ended early. ``restart`` means the partial file is useless and must be discarded.

    ``cause`` is the network exception behind it, if any, so a final failure can tell "no network" apart.
    """

    def __init__(self, reason: str, *, restart: bool = False, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.restart = restart
        self.cause = cause


class UnreachableError(WeightsError):
    """The download gave up because the server could not be reached (no network, DNS, refused, timeout).

    A subclass so that :func:`zoedepth_ros.weights.ensure_checkpoint` can add offline advice; the message is the
    usual one.
    """


def is_unreachable(error: BaseException | None) -> bool:
    """True for connection-level failures (DNS, refused, unreachable, timeout), not for HTTP/protocol ones."""
    if isinstance(error, urllib.error.HTTPError):
        return False
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, BaseException) else None
    return isinstance(error, OSError)  # socket.gaierror, ConnectionError, TimeoutError, socket.timeout


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000); a ``*`` total -> None."""
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


class Downloader:
    """Streams one URL into a ``.part`` file, resuming and retrying, hashing as it goes.

    Invariant: ``self.digest`` and ``self.written`` describe exactly the bytes in the partial file, so
    the finished file never needs a second pass to hash (an existing partial file is hashed once, up
    front, which is far cheaper than downloading it again).

    Two limits keep a bad link from holding a caller forever (the socket timeout alone is per read, so a
    server trickling a byte every few seconds would never trip it): ``stall_timeout`` ends the download when
    fewer than ``STALL_MIN_BYTES`` arrived in that many seconds, across reconnects (the clock starts with the
    first answer, so an unreachable server is still reported as such), and ``deadline`` bounds the whole run.

    ``wrong_url_hint`` names the setting that picked the URL, for the message when a web page comes back; retry
    notes go to ``on_note``, else to this module's logger.
    """

    def __init__(
        self,
        url: str,
        part: Path,
        *,
        desc: str,
        progress: bool,
        timeout: float,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        deadline: float | None = None,
        on_progress: Callable[[int, int | None], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        wrong_url_hint: str = "a wrong URL",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.part, self.desc, self.progress, self.timeout = url, part, desc, progress, timeout
        self.wrong_url_hint = wrong_url_hint
        for name, value in (("stall_timeout", stall_timeout), ("deadline", deadline)):
            if value is not None and not value > 0:
                raise WeightsError(f"{name} must be a positive number of seconds, got {value!r}")
        self.stall_timeout, self.deadline, self.clock = stall_timeout, deadline, clock
        # Hooks for callers that log instead of drawing a bar: (bytes so far, total or None) once when a
        # response starts and after every chunk; on_note gets each retry message.
        self.on_progress, self.on_note = on_progress, on_note
        self.digest = hashlib.sha256()
        self.written = 0
        self.total: int | None = None  # file size the server announced first; a change means a new file
        self.validator: str | None = None  # ETag / Last-Modified of what we are resuming, for If-Range
        self.bar = None
        self.received = 0  # body bytes received in this run, restarts included: what the stall watch counts
        self.answered = False  # a 200/206 came back at least once: from then on a silence is a stall
        self.stall_since = 0.0  # clock of the last real progress (STALL_MIN_BYTES) and self.received then
        self.stall_received = 0
        self.deadline_at: float | None = None
        self.restart_noted = False
        self.had_validator = False  # the last request carried If-Range
        if part.exists():
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    self.digest.update(chunk)
                    self.written += len(chunk)

    def discard(self) -> None:
        self.digest, self.written = hashlib.sha256(), 0
        self.part.unlink(missing_ok=True)

    def run(self, *, retries: int, backoff: float, sleep: Callable[[float], None] = time.sleep) -> tuple[str, int]:
        """Download until complete; returns (sha256 hex, size).

        Gives up after ``retries`` consecutive attempts that brought no new bytes (a connection that
        keeps dropping but makes progress is followed to the end), on a stall or past the deadline. The
        partial file is kept on failure so the next run resumes it.
        """
        failures = 0
        best = self.written
        self.deadline_at = None if self.deadline is None else self.clock() + self.deadline
        cause: BaseException | None = None
        try:
            while True:
                try:
                    self._attempt()
                    return self.digest.hexdigest(), self.written
                except _AttemptFailed as e:
                    if e.restart:
                        self.discard()
                    reason, cause = e.reason, e.cause
                self._check_limits(cause)
                if self.written > best:
                    best, failures = self.written, 0
                else:
                    failures += 1
                if failures > retries:
                    kept = f"; {self.written} bytes kept in {self.part} to resume" if self.written else ""
                    error = UnreachableError if is_unreachable(cause) else WeightsError
                    raise error(f"download of {self.url} failed after {retries} retries: {reason}{kept}")
                delay = min(backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF)
                left = self._time_left()
                if left is not None and delay >= left:  # no retry could start in time: wait out the limit, end
                    sleep(max(left, 0.0))
                    self._check_limits(cause, force=True)
                self._note(f"{self.desc}: {reason}; retrying from byte {self.written} in {delay:.0f} s")
                sleep(delay)
        finally:
            if self.bar is not None:
                self.bar.close()

    # ------------------------------------------------------------------------------------ limits

    def _time_left(self) -> float | None:
        """Seconds until the deadline or the stall limit, whichever is nearer; None when neither applies."""
        now = self.clock()
        left = []
        if self.deadline_at is not None:
            left.append(self.deadline_at - now)
        if self.answered and self.stall_timeout is not None:
            left.append(self.stall_since + self.stall_timeout - now)
        return min(left) if left else None

    def _io_timeout(self) -> float:
        """The socket timeout for the next connect or read: ``timeout``, shortened so no limit is overrun."""
        left = self._time_left()
        return self.timeout if left is None else max(min(self.timeout, left), 0.01)

    def _so_far(self) -> str:
        if not self.written:
            return "nothing saved yet; run the same command again to retry"
        size = f"{bytes_text(self.written)} of {bytes_text(self.total)}" if self.total else bytes_text(self.written)
        return f"{size} so far, kept in {self.part}; run the same command again to resume"

    def _check_limits(self, cause: BaseException | None = None, *, force: bool = False) -> None:
        """Raise the stall or deadline error once a limit has passed (``force``: the nearer one, now)."""
        now = self.clock()
        deadline_left = None if self.deadline_at is None else self.deadline_at - now
        stall_left = None
        if self.answered and self.stall_timeout is not None:
            stall_left = self.stall_since + self.stall_timeout - now
        if force:  # called when waiting would overrun: the nearer limit is the one that ends the download
            if deadline_left is not None and (stall_left is None or deadline_left <= stall_left):
                deadline_left = 0.0
            elif stall_left is not None:
                stall_left = 0.0
        if deadline_left is not None and deadline_left <= 0:
            error = WeightsError if self.answered or not is_unreachable(cause) else UnreachableError
            raise error(
                f"the download of {self.url} did not finish within the {self.deadline:g} s deadline ({self._so_far()})"
            )
        if stall_left is not None and stall_left <= 0:
            trickle = self.received - self.stall_received
            what = (
                f"only {trickle} bytes in {self.stall_timeout:g} s"
                if trickle
                else f"no data for {self.stall_timeout:g} s"
            )
            raise WeightsError(f"{what} from {self.url}; the download stalled ({self._so_far()})")

    def _count(self, n: int) -> None:
        """Book ``n`` received bytes: enough of them since the last mark is progress and restarts the stall clock."""
        self.received += n
        if self.received - self.stall_received >= STALL_MIN_BYTES:
            self.stall_since, self.stall_received = self.clock(), self.received

    # ----------------------------------------------------------------------------------- network

    def _note(self, message: str) -> None:
        """Tell a watching user why the bar stalls; stay silent when progress output is off."""
        if self.on_note is not None:  # the caller logs it (with its own logger): no duplicate line here
            self.on_note(message)
        else:
            _log.info(message)
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)

    def _open(self) -> http.client.HTTPResponse | None:
        """Send the (ranged) request. None means the partial file is already the whole file."""
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        self.had_validator = False
        if self.written:
            headers["Range"] = f"bytes={self.written}-"
            if self.validator:  # the server answers 200 (whole new file) instead of 206 if it changed
                headers["If-Range"] = self.validator
                self.had_validator = True
        request = urllib.request.Request(self.url, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self._io_timeout())
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and self.written:
                _, total = _parse_content_range(e.headers.get("Content-Range"))
                if total == self.written:
                    return None  # complete already; verification decides whether it is any good
                raise _AttemptFailed(
                    f"server refused to resume at byte {self.written} (HTTP 416)", restart=True
                ) from None
            if e.code in _RETRYABLE_HTTP:
                raise _AttemptFailed(f"HTTP {e.code} {e.reason}") from None
            raise WeightsError(f"HTTP {e.code} {e.reason} for {self.url}") from None
        except ValueError as e:  # malformed URL
            raise WeightsError(f"cannot download {self.url!r}: {e}") from None
        except _NETWORK_ERRORS as e:
            raise _AttemptFailed(f"{type(e).__name__}: {e}", cause=e) from None

    def _refuse_html(self, response: http.client.HTTPResponse, head: bytes, *, at_start: bool) -> None:
        """Stop at once when the server answers with a web page: waiting for it to verify would end in advice
        to download again, which cannot help when the URL itself serves no checkpoint.

        Markup at the start of the body is conclusive whatever the Content-Type. An HTML Content-Type counts only
        for a body from byte 0 that does not start like a torch file (zip or pickle), so a mirror that mislabels
        the real file still works.
        """
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if body.lower().startswith((b"<!doctype", b"<html")):
            evidence = f"the body starts with {body[:9].decode('latin-1')!r}"
        elif content_type in _HTML_TYPES and at_start and not head.startswith((b"PK", b"\x80")):
            evidence = f"Content-Type {content_type}"
        else:
            return
        kept = f"; the partial download in {self.part} was kept" if self.written else "; nothing was saved"
        raise WeightsError(
            f"{self.desc} from {self.url} is not a usable ZoeDepth checkpoint: the server sent an HTML page "
            f"({evidence}), so this URL serves no checkpoint: probably a login page, a proxy, or "
            f"{self.wrong_url_hint}; open the URL in a browser to see what it serves{kept}"
        )

    def _attempt(self) -> None:
        """One request; returns when the file is complete, raises _AttemptFailed otherwise."""
        response = self._open()
        if response is None:
            return
        with response:
            if not self.answered:  # the stall clock starts with the first answer
                self.answered = True
                self.stall_since, self.stall_received = self.clock(), self.received
            length_header = response.headers.get("Content-Length", "")
            length = int(length_header) if length_header.strip().isdigit() else None
            restarted_from = 0
            if response.status == 206 and self.written:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != self.written:
                    raise _AttemptFailed(f"server resumed at byte {start}, not {self.written}", restart=True)
                if total is None and length is not None:
                    total = self.written + length
                head = self._read_head(response)
                self._refuse_html(response, head, at_start=False)
            elif response.status == 200:
                head = self._read_head(response)
                self._refuse_html(response, head, at_start=True)  # before discarding a partial: keep it
                if self.written:  # the server ignored Range (or the file changed): start over from its response
                    restarted_from = self.written
                    self.discard()
                total = length
            else:
                raise WeightsError(f"unexpected HTTP {response.status} {response.reason} for {self.url}")
            if total is not None:
                if self.total is not None and total != self.total:
                    self.total = total
                    raise _AttemptFailed(f"the file on the server changed size to {total} bytes", restart=True)
                self.total = total
            etag = response.headers.get("ETag")
            weak = etag is not None and etag.startswith("W/")  # weak ETags are not allowed in If-Range
            self.validator = (etag if etag and not weak else None) or response.headers.get("Last-Modified")
            if self.on_progress is not None:  # before the bar and notes, so a caller's opening line comes first
                self.on_progress(self.written, self.total)
            self._update_bar(total)
            if restarted_from:
                self._note_restart(restarted_from)
            received = self._stream(response, head)
        # http.client reports a connection closed early as a normal end of stream: count the bytes.
        if length is not None and received < length:
            raise _AttemptFailed(f"connection closed after {received} of {length} bytes")
        if total is not None and self.written != total:
            raise _AttemptFailed(f"have {self.written} bytes but the server announced {total}", restart=True)

    def _note_restart(self, offset: int) -> None:
        """Say once that the partial file was thrown away, so a bar falling back to 0 is explained."""
        if self.restart_noted:
            return
        self.restart_noted = True
        why = (
            "the file changed on the server or it ignores resume requests"
            if self.had_validator
            else "the server ignores resume requests"
        )
        self._note(
            f"{self.desc}: asked to resume at byte {offset}, the server sent the whole file ({why}); "
            "the download restarts from the beginning"
        )

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        """One socket read (read1: a timeout loses nothing already received), bounded by the limits."""
        _set_read_timeout(response, self._io_timeout())
        try:
            chunk = response.read1(CHUNK_SIZE)
        except _NETWORK_ERRORS as e:
            raise _AttemptFailed(f"{type(e).__name__}: {e}", cause=e) from None
        self._count(len(chunk))
        return chunk

    def _read_head(self, response: http.client.HTTPResponse) -> bytes:
        """The first few bytes of a response, to tell an HTML page from a checkpoint before anything is written."""
        head = b""
        while len(head) < _SNIFF_BYTES and (chunk := self._read(response)):
            head += chunk
            self._check_limits()
        return head

    def _stream(self, response: http.client.HTTPResponse, head: bytes = b"") -> int:
        received = 0
        with open(self.part, "ab") as f:
            f.truncate(self.written)  # keep the file exactly in step with the hash
            chunk = head
            while True:
                if not chunk:
                    chunk = self._read(response)
                    if not chunk:
                        return received
                f.write(chunk)
                self.digest.update(chunk)
                self.written += len(chunk)
                received += len(chunk)
                if self.bar is not None:
                    self.bar.update(len(chunk))
                if self.on_progress is not None:
                    self.on_progress(self.written, self.total)
                self._check_limits()  # after the write: what arrived is kept for the next run
                chunk = b""

    def _update_bar(self, total: int | None) -> None:
        if not self.progress:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=self.written,
                desc=self.desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                dynamic_ncols=True,
            )
        else:  # same bar across attempts: jump to where this attempt starts (0 after a restart)
            self.bar.total = total
            self.bar.n = self.bar.last_print_n = self.written
            self.bar.refresh()


def _set_read_timeout(response: http.client.HTTPResponse, seconds: float) -> None:
    """Shorten the socket timeout of a response being read, so a silent read cannot overrun a limit.

    urllib fixes the timeout at connect time and offers no public way to change it; when the CPython internals
    are not as expected this does nothing, and a limit can then be overrun by at most one ``timeout``.
    """
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    if sock is not None and hasattr(sock, "settimeout"):
        try:
            if sock.gettimeout() != seconds:
                sock.settimeout(seconds)
        except OSError:  # already closed: the read reports it
            pass


def bytes_text(n: int) -> str:
    """Decimal units, like the ``~1.4 GB`` in the other messages."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


class ProgressLog:
    """Turns the downloader's per-chunk callbacks into a few plain log lines (a node log has no tty for tqdm).

    The opening line waits for the first response so it can give the size the server announced; when the
    server cannot be reached at all it is written, with ``approx_size`` (bytes), before the first retry note.
    """

    def __init__(
        self,
        name: str,
        approx_size: int,
        url: str,
        dest: Path,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.approx_size = name, approx_size
        self.url, self.dest, self.log, self.clock = url, dest, log, clock
        self.announced = False
        self.finished = False
        self.t0 = self.last_t = 0.0
        self.first_bytes = 0
        self.last_step = 0

    def _announce(self, written: int, total: int | None) -> None:
        size = bytes_text(total) if total else f"~{bytes_text(self.approx_size)}"
        resume = f", resuming at {bytes_text(written)}" if written else ""
        self.log(f"downloading {self.name} ({size}{resume}) from {self.url} to {self.dest}")
        self.announced = True
        self.t0 = self.last_t = self.clock()
        self.first_bytes = written

    def _step(self, written: int, total: int | None) -> int:
        return written * PROGRESS_STEPS // total if total else 0  # integers: 0.3 / 0.1 is 2.9999...

    def progress(self, written: int, total: int | None) -> None:
        now = self.clock()
        if not self.announced:
            self._announce(written, total)
            self.last_step = self._step(written, total)
            return
        step = self._step(written, total)
        if step < self.last_step:  # the partial file was discarded and the download restarted
            self.last_step = step
        elapsed = max(now - self.t0, 1e-9)
        rate = max(written - self.first_bytes, 0) / elapsed
        if total and written >= total:
            if not self.finished:
                self.finished = True
                self.log(
                    f"downloaded {self.name}: {bytes_text(written)} in {elapsed:.0f} s "
                    f"({bytes_text(int(rate))}/s); verifying it"
                )
            return
        due_step = step > self.last_step and now - self.last_t >= PROGRESS_MIN_INTERVAL
        if not due_step and now - self.last_t < PROGRESS_MAX_SILENCE:
            return
        self.last_t, self.last_step = now, step
        if total:
            self.log(
                f"{self.name}: {100 * written / total:.0f} % ({bytes_text(written)} of "
                f"{bytes_text(total)}, {bytes_text(int(rate))}/s)"
            )
        else:
            self.log(f"{self.name}: {bytes_text(written)} so far ({bytes_text(int(rate))}/s)")

    def note(self, message: str) -> None:
        if not self.announced:
            self._announce(0, None)
        self.log(message)


@contextmanager
def download_lock(dest: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Serialise first-use downloads of one file across processes (two nodes started together share a cache)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as with the CLI
        yield
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(f".{dest.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is downloading {dest.name}; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
