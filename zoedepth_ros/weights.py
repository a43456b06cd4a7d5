"""Fetch, cache and verify the official ZoeDepth release checkpoints.

The checkpoints are ~1.4 GB each, so a download must survive dropped connections (it resumes with an
HTTP ``Range`` request from ``<name>.pt.part``) and must never leave a bad file where the node will look
for weights: a download is only renamed into place after it has been loaded as a checkpoint of the
expected variant and its SHA-256 matched any pinned or previously recorded hash. Upstream publishes no
hashes, so the first verified download records one in ``<name>.pt.sha256`` (trust on first use) and
later ``verify``/``fetch --force`` runs check against it.

Only the standard library is used for the network; torch (through ``zoedepth_ros.model``) is imported
lazily, when a file is actually verified, so listing and resolving paths stay cheap.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zoedepth_ros import __version__

__all__ = [
    "BASE_URL_ENV",
    "CACHE_ENV",
    "FETCH_COMMAND",
    "OFFICIAL_BASE_URL",
    "RELEASES",
    "CheckpointStatus",
    "ReleaseCheckpoint",
    "VerifyResult",
    "WeightsError",
    "cache_dir",
    "checkpoint_path",
    "ensure_checkpoint",
    "fetch",
    "list_checkpoints",
    "recorded_sha256",
    "resolve_checkpoint",
    "resolve_name",
    "sha256_file",
    "verify",
]

CACHE_ENV = "ZOEDEPTH_ROS_CACHE"
BASE_URL_ENV = "ZOEDEPTH_ROS_BASE_URL"
OFFICIAL_BASE_URL = "https://github.com/isl-org/ZoeDepth/releases/download/v1.0"
FETCH_COMMAND = "zoedepth-ros-weights fetch"

PART_SUFFIX = ".part"
SHA_SUFFIX = ".sha256"

DEFAULT_TIMEOUT = 60.0  # seconds per connect / per socket read, not for the whole download
# No progress for this long, across reconnects, ends a download: twice the read timeout, so a dead connection is
# reconnected once before the stall gives up, while a server trickling a byte at a time cannot hold on forever.
DEFAULT_STALL_TIMEOUT = 120.0
STALL_MIN_BYTES = 64 * 1024  # what counts as progress within one stall_timeout (a trickle below it is a stall)
DEFAULT_RETRIES = 5  # consecutive failed attempts without new bytes before giving up
DEFAULT_BACKOFF = 1.0  # first retry delay in seconds; doubles per consecutive failure
MAX_BACKOFF = 30.0
CHUNK_SIZE = 1 << 20

_log = logging.getLogger(__name__)
_USER_AGENT = f"zoedepth_ros/{__version__} (weights manager)"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
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


class WeightsError(RuntimeError):
    """A checkpoint could not be found, downloaded or verified; the message says what to do next."""


@dataclass(frozen=True)
class ReleaseCheckpoint:
    """One official ZoeDepth release file.

    ``sha256`` is None because upstream publishes no hashes; see the module docstring for how hashes
    are recorded instead.
    """

    name: str
    url: str
    variant: str
    approx_size: int  # bytes, for messages and sanity only
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def url_for(self, base_url: str | None = None) -> str:
        """The download URL, with the directory part replaced by ``base_url`` when one is given."""
        if not base_url:
            return self.url
        return f"{base_url.rstrip('/')}/{self.filename}"


def _release(name: str, variant: str) -> ReleaseCheckpoint:
    return ReleaseCheckpoint(name, f"{OFFICIAL_BASE_URL}/{name}.pt", variant, approx_size=1_440_000_000)


RELEASES: tuple[ReleaseCheckpoint, ...] = (
    _release("ZoeD_M12_N", "n"),
    _release("ZoeD_M12_K", "k"),
    _release("ZoeD_M12_NK", "nk"),
)


@dataclass(frozen=True)
class CheckpointStatus:
    """One row of :func:`list_checkpoints`."""

    release: ReleaseCheckpoint
    path: Path
    present: bool
    size: int | None  # bytes of the cached file, None when absent
    recorded_sha256: str | None  # from the sidecar file, None when never recorded
    partial_size: int | None = None  # bytes of an interrupted download waiting to be resumed


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` established about a checkpoint file."""

    path: Path
    variant: str
    size: int
    sha256: str
    expected_sha256: str | None  # the hash it was checked against, None when there was none
    sha256_source: str | None  # "pinned", "release table" or "recorded"; None when nothing to check
    recorded: bool  # True when this run wrote the sidecar (first verification of a cached file)


# --------------------------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """``$ZOEDEPTH_ROS_CACHE``, else ``$XDG_CACHE_HOME/zoedepth_ros``, else ``~/.cache/zoedepth_ros``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "zoedepth_ros"


def _known_names() -> str:
    return ", ".join(r.name for r in RELEASES)


def resolve_name(name: str | ReleaseCheckpoint) -> ReleaseCheckpoint:
    """Map ``ZoeD_M12_NK``, ``zoed_m12_nk.pt``, ``NK`` etc. to the release entry (case-insensitive)."""
    if isinstance(name, ReleaseCheckpoint):
        return name
    key = name.strip()
    if key.lower().endswith(".pt"):
        key = key[:-3]
    key = key.lower()
    for release in RELEASES:
        if key in (release.name.lower(), release.variant):
            return release
    raise WeightsError(f"unknown checkpoint name {name!r}; official names are {_known_names()} (or N, K, NK)")


def checkpoint_path(name: str | ReleaseCheckpoint) -> Path:
    """Where the named checkpoint lives in the cache, whether or not it has been fetched."""
    return cache_dir() / resolve_name(name).filename


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SHA_SUFFIX)


# ------------------------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so 1.4 GB files need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_sha(value: str) -> str:
    sha = value.strip().lower()
    if not _SHA_RE.match(sha):
        raise WeightsError(f"invalid SHA-256 {value!r}: expected 64 hexadecimal characters")
    return sha


def recorded_sha256(path: str | os.PathLike[str]) -> str | None:
    """The hash recorded for ``path`` by its first verified download, or None when never recorded."""
    return _read_sidecar(Path(path))


def _read_sidecar(path: Path) -> str | None:
    """The recorded hash for ``path`` (``sha256sum`` format), or None when absent or unreadable."""
    try:
        text = _sidecar_path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    fields = text.split()
    if fields and _SHA_RE.match(fields[0].lower()):
        return fields[0].lower()
    return None


def _write_sidecar(path: Path, sha: str) -> None:
    """Record ``sha`` next to ``path`` atomically, in ``sha256sum -c`` compatible form."""
    sidecar = _sidecar_path(path)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{sha}  {path.name}\n", encoding="utf-8")
    os.replace(tmp, sidecar)


# ------------------------------------------------------------------------------------------ download


class _AttemptFailed(Exception):
    """One request ended early. ``restart`` means the partial file is useless and must be discarded.

    ``cause`` is the network exception behind it, if any, so a final failure can tell "no network" apart.
    """

    def __init__(self, reason: str, *, restart: bool = False, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.restart = restart
        self.cause = cause


class _UnreachableError(WeightsError):
    """The download gave up because the server could not be reached (no network, DNS, refused, timeout).

    A subclass so that :func:`ensure_checkpoint` can add offline advice; the message is the usual one.
    """


def _is_unreachable(error: BaseException | None) -> bool:
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


class _Downloader:
    """Streams one URL into a ``.part`` file, resuming and retrying, hashing as it goes.

    Invariant: ``self.digest`` and ``self.written`` describe exactly the bytes in the partial file, so
    the finished file never needs a second pass to hash (an existing partial file is hashed once, up
    front, which is far cheaper than downloading it again).

    Two limits keep a bad link from holding a caller forever (the socket timeout alone is per read, so a
    server trickling a byte every few seconds would never trip it): ``stall_timeout`` ends the download when
    fewer than ``STALL_MIN_BYTES`` arrived in that many seconds, across reconnects (the clock starts with the
    first answer, so an unreachable server is still reported as such), and ``deadline`` bounds the whole run.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.part, self.desc, self.progress, self.timeout = url, part, desc, progress, timeout
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
                    error = _UnreachableError if _is_unreachable(cause) else WeightsError
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
        size = f"{_bytes_text(self.written)} of {_bytes_text(self.total)}" if self.total else _bytes_text(self.written)
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
            error = WeightsError if self.answered or not _is_unreachable(cause) else _UnreachableError
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
            f"({evidence}), so this URL serves no checkpoint: probably a login page, a proxy, or a wrong --base-url "
            f"/ ${BASE_URL_ENV}; open the URL in a browser to see what it serves{kept}"
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


# -------------------------------------------------------------------------------------- verification


def _checkpoint_variant(path: Path) -> str:
    """Load ``path`` with the model package and return its variant; WeightsError when it will not load."""
    try:
        from zoedepth_ros.model import CheckpointError, load
    except ImportError as e:  # pragma: no cover - only when the install is broken
        raise WeightsError(f"cannot verify checkpoints, zoedepth_ros.model does not import: {e}") from e
    try:
        model = load(path, variant=None, device="cpu")
    except CheckpointError as e:
        raise WeightsError(f"{path.name} is not a usable ZoeDepth checkpoint: {e}") from e
    except Exception as e:  # any other failure to load still means the file must not be used
        raise WeightsError(f"{path.name} is not a usable ZoeDepth checkpoint: {type(e).__name__}: {e}") from e
    variant = str(model.config.variant)
    del model
    return variant


def _release_for_file(path: Path) -> ReleaseCheckpoint | None:
    """The release a file is named after (``.../ZoeD_M12_K.pt`` -> ZoeD_M12_K), else None."""
    for release in RELEASES:
        if path.name.lower() == release.filename.lower():
            return release
    return None


def _expected_sha(release: ReleaseCheckpoint | None, pinned: str | None, path: Path) -> tuple[str | None, str | None]:
    """The hash a file must have and where that requirement comes from (pin > table > recorded)."""
    if pinned:
        return _normalise_sha(pinned), "pinned"
    if release is not None and release.sha256:
        return release.sha256, "release table"
    recorded = _read_sidecar(path)
    if recorded:
        return recorded, "recorded"
    return None, None


def _sha_mismatch(what: str, actual: str, expected: str, source: str | None) -> str:
    hint = {
        "recorded": f" (recorded in {SHA_SUFFIX} sidecar on first download; delete it or pass --sha256 if "
        "upstream really changed the file)",
        "pinned": " (the --sha256 you gave)",
    }.get(source or "", "")
    return f"{what}: SHA-256 mismatch: got {actual}, expected {expected}{hint}"


# ----------------------------------------------------------------------------------------------- API


def fetch(
    name: str | ReleaseCheckpoint,
    *,
    sha256: str | None = None,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    deadline: float | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Download an official checkpoint into the cache (resuming a partial one) and return its path.

    The file only appears at :func:`checkpoint_path` after it loaded as the right variant and matched
    ``sha256`` (or the hash recorded by an earlier download); a rejected download is deleted. An
    already cached file is returned without a download unless ``force``; with ``sha256`` it is hashed
    and must match. ``base_url`` (else ``$ZOEDEPTH_ROS_BASE_URL``) replaces the GitHub release URL,
    for mirrors and tests. ``on_progress(bytes_so_far, total_or_None)`` and ``on_note(retry_message)`` let a
    caller report progress as log lines instead of (or besides) the tqdm bar.

    ``timeout`` bounds each connect and socket read (a silent connection is dropped and resumed on a new one);
    ``stall_timeout`` (None: off) gives up once fewer than ``STALL_MIN_BYTES`` arrived in that many seconds, so a
    trickling server cannot hold the caller forever; ``deadline`` (seconds, None: none) bounds the whole download.
    Either way the partial file is kept for the next run to resume.
    """
    release = resolve_name(name)
    pin = _normalise_sha(sha256) if sha256 else None
    dest = checkpoint_path(release)
    if dest.exists() and not force:
        if pin:
            actual = sha256_file(dest)
            if actual != pin:
                raise WeightsError(
                    _sha_mismatch(f"cached {dest}", actual, pin, "pinned")
                    + f"; re-download with: {FETCH_COMMAND} {release.name} --force"
                )
        return dest

    expected, source = _expected_sha(release, pin, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    if force:
        part.unlink(missing_ok=True)
    url = release.url_for(base_url or os.environ.get(BASE_URL_ENV))
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise WeightsError(
            f"download URL {url!r} must start with http:// or https:// (check --base-url / ${BASE_URL_ENV})"
        )
    downloader = _Downloader(
        url,
        part,
        desc=release.filename,
        progress=progress,
        timeout=timeout,
        stall_timeout=stall_timeout,
        deadline=deadline,
        on_progress=on_progress,
        on_note=on_note,
    )
    digest, _ = downloader.run(retries=retries, backoff=backoff)

    try:
        if expected and digest != expected:
            raise WeightsError(
                _sha_mismatch(f"download of {release.name}", digest, expected, source) + "; the download was deleted"
            )
        variant = _checkpoint_variant(part)
        if variant != release.variant:
            raise WeightsError(
                f"download of {release.name} is a '{variant}' checkpoint, expected "
                f"'{release.variant}' (wrong file at {url}?); the download was deleted"
            )
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    _write_sidecar(dest, digest)
    return dest


def verify(name_or_path: str | os.PathLike[str] | ReleaseCheckpoint, *, sha256: str | None = None) -> VerifyResult:
    """Check that a cached checkpoint (by official name) or any file loads, and matches its hash.

    The expected variant comes from the name (or from the file name when it is an official one); the
    expected hash from ``sha256``, else the release table, else the recorded sidecar. A cached file that
    passes and has no record yet gets one, so later tampering or bit rot is caught. Raises WeightsError.
    """
    path, release = _locate(name_or_path)
    size = path.stat().st_size
    expected, source = _expected_sha(release, sha256, path)
    actual = sha256_file(path)
    if expected and actual != expected:
        raise WeightsError(_sha_mismatch(str(path), actual, expected, source))
    variant = _checkpoint_variant(path)
    if release is not None and variant != release.variant:
        raise WeightsError(f"{path} is a '{variant}' checkpoint, but {release.name} is '{release.variant}'")
    recorded = False
    in_cache = release is not None and path.resolve() == checkpoint_path(release).resolve()
    if in_cache and _read_sidecar(path) is None:
        _write_sidecar(path, actual)
        recorded = True
    return VerifyResult(path, variant, size, actual, expected, source, recorded)


def _locate(
    name_or_path: str | os.PathLike[str] | ReleaseCheckpoint,
) -> tuple[Path, ReleaseCheckpoint | None]:
    """An existing file wins over an official name; an official name must be in the cache."""
    if not isinstance(name_or_path, ReleaseCheckpoint):
        candidate = Path(name_or_path).expanduser()
        if candidate.is_file():
            return candidate, _release_for_file(candidate)
        if candidate.exists():
            raise WeightsError(f"{candidate} is not a file")
        _refuse_link_loop(candidate)
        if _looks_like_path(str(name_or_path)):
            raise WeightsError(f"no such file: {candidate}")
    release = resolve_name(name_or_path)  # type: ignore[arg-type]
    path = checkpoint_path(release)
    if not path.is_file():
        raise WeightsError(_missing_message(release, path))
    return path, release


def _is_link_loop(path: Path) -> bool:
    from zoedepth_ros.model.loading import is_link_loop  # lazily: the weights CLI starts without torch

    return is_link_loop(path)


def _refuse_link_loop(path: Path) -> None:
    if _is_link_loop(path):
        raise WeightsError(f"checkpoint {path} is a symbolic link loop; make the link point to the real checkpoint")


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith("~") or spec.startswith(".")


def _missing_message(release: ReleaseCheckpoint, path: Path) -> str:
    size_gb = release.approx_size / 1e9
    return (
        f"checkpoint {release.name} is not downloaded yet; fetch it (~{size_gb:.1f} GB) with "
        f"`{FETCH_COMMAND} {release.name}`, it will be saved to {path}"
    )


def list_checkpoints() -> list[CheckpointStatus]:
    """The official checkpoints with their cache state (present, size, recorded hash, partial bytes)."""
    rows = []
    for release in RELEASES:
        path = checkpoint_path(release)
        present = path.is_file()
        part = _part_path(path)
        rows.append(
            CheckpointStatus(
                release=release,
                path=path,
                present=present,
                size=path.stat().st_size if present else None,
                recorded_sha256=_read_sidecar(path),
                partial_size=part.stat().st_size if part.is_file() else None,
            )
        )
    return rows


def resolve_checkpoint(spec: str | os.PathLike[str]) -> Path:
    """Turn the node's ``checkpoint`` parameter into a path, without ever downloading.

    ``spec`` is an existing file or directory, or an official name (``ZoeD_M12_NK``, ``NK``) that must
    already be in the cache. Startup must not block on a 1.4 GB download, so a missing name raises a
    WeightsError that says which command fetches it and where it will go.
    """
    text = os.fspath(spec).strip()
    if not text:
        raise WeightsError(f"no checkpoint given: pass a file path or one of {_known_names()}")
    candidate = Path(text).expanduser()
    if candidate.exists():
        return candidate.resolve()
    _refuse_link_loop(candidate)
    try:
        release = resolve_name(text)
    except WeightsError:
        if _looks_like_path(text) or text.lower().endswith((".pt", ".pth", ".safetensors")):
            raise WeightsError(f"checkpoint file not found: {candidate}") from None
        raise WeightsError(
            f"checkpoint {text!r} is neither an existing path nor an official name ({_known_names()})"
        ) from None
    path = checkpoint_path(release)
    if not path.is_file():
        raise WeightsError(_missing_message(release, path))
    return path


# ------------------------------------------------------------------------------------- first use

PROGRESS_STEPS = 10  # a progress line every 1/PROGRESS_STEPS of the file (every 10 %)
PROGRESS_MIN_INTERVAL = 10.0  # seconds; a fast link must not flood the log with a line per 10 %
PROGRESS_MAX_SILENCE = 60.0  # seconds; a slow link still shows that it is alive


def _bytes_text(n: int) -> str:
    """Decimal units, like the ``~1.4 GB`` in the other messages."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


class _ProgressLog:
    """Turns the downloader's per-chunk callbacks into a few plain log lines (a node log has no tty for tqdm).

    The opening line waits for the first response so it can give the size the server announced; when the
    server cannot be reached at all it is written, with the approximate size, before the first retry note.
    """

    def __init__(
        self,
        release: ReleaseCheckpoint,
        url: str,
        dest: Path,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.release, self.url, self.dest, self.log, self.clock = release, url, dest, log, clock
        self.announced = False
        self.finished = False
        self.t0 = self.last_t = 0.0
        self.first_bytes = 0
        self.last_step = 0

    def _announce(self, written: int, total: int | None) -> None:
        size = _bytes_text(total) if total else f"~{_bytes_text(self.release.approx_size)}"
        resume = f", resuming at {_bytes_text(written)}" if written else ""
        self.log(f"downloading {self.release.name} ({size}{resume}) from {self.url} to {self.dest}")
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
                    f"downloaded {self.release.name}: {_bytes_text(written)} in {elapsed:.0f} s "
                    f"({_bytes_text(int(rate))}/s); verifying it"
                )
            return
        due_step = step > self.last_step and now - self.last_t >= PROGRESS_MIN_INTERVAL
        if not due_step and now - self.last_t < PROGRESS_MAX_SILENCE:
            return
        self.last_t, self.last_step = now, step
        if total:
            self.log(
                f"{self.release.name}: {100 * written / total:.0f} % ({_bytes_text(written)} of "
                f"{_bytes_text(total)}, {_bytes_text(int(rate))}/s)"
            )
        else:
            self.log(f"{self.release.name}: {_bytes_text(written)} so far ({_bytes_text(int(rate))}/s)")

    def note(self, message: str) -> None:
        if not self.announced:
            self._announce(0, None)
        self.log(message)


def _offline_advice(release: ReleaseCheckpoint, dest: Path) -> str:
    return (
        f"To install it without network here, run `{FETCH_COMMAND} {release.name}` on a machine with network "
        f"access and copy the file (~{release.approx_size / 1e9:.1f} GB) to exactly {dest} (on this machine "
        f"`zoedepth-ros-weights path {release.name}` prints that path), or set the `checkpoint` parameter to the "
        "path of a .pt file."
    )


@contextmanager
def _download_lock(dest: Path, log: Callable[[str], None]) -> Iterator[None]:
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


def ensure_checkpoint(
    spec: str | os.PathLike[str],
    *,
    download: bool = True,
    log: Callable[[str], None] | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    deadline: float | None = None,
) -> Path:
    """:func:`resolve_checkpoint`, except that an official name not cached yet is fetched on first use.

    So that a first run needs no separate ``fetch`` step: the download is the verified :func:`fetch`
    (hash recorded, resumable; ``base_url`` else ``$ZOEDEPTH_ROS_BASE_URL``), reported through ``log``
    (default: this module's logger) as a few plain lines, bounded like :func:`fetch` by ``stall_timeout`` and
    ``deadline``. With ``download=False``, or when the server cannot be reached, the WeightsError says how to
    install the file offline and the exact cache path it needs.
    """
    report = log if log is not None else _log.info
    text = os.fspath(spec).strip()
    release = None
    candidate = Path(text).expanduser()
    if text and not candidate.exists() and not _is_link_loop(candidate):
        try:
            release = resolve_name(text)
        except WeightsError:
            release = None  # not an official name: resolve_checkpoint explains what is wrong with it
    if release is None or checkpoint_path(release).is_file():
        return resolve_checkpoint(spec)

    dest = checkpoint_path(release)
    if not download:
        raise WeightsError(
            f"checkpoint {release.name} is not cached (looked for {dest}) and downloading is off "
            f"(`download: false`). {_offline_advice(release, dest)} Or set `download: true` to fetch it on first use."
        )
    url = release.url_for(base_url or os.environ.get(BASE_URL_ENV))
    with _download_lock(dest, report):
        if dest.is_file():  # another process finished it while this one waited for the lock
            report(f"{release.name} was downloaded by another process: {dest}")
            return dest
        reporter = _ProgressLog(release, url, dest, report)
        try:
            path = fetch(
                release,
                base_url=base_url,
                progress=False,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                stall_timeout=stall_timeout,
                deadline=deadline,
                on_progress=reporter.progress,
                on_note=reporter.note,
            )
        except _UnreachableError as e:
            raise WeightsError(
                f"checkpoint {release.name} is not cached and its server cannot be reached (no network?): {e}. "
                f"{_offline_advice(release, dest)} A reachable mirror can be set with ${BASE_URL_ENV}."
            ) from e
    report(f"verified {release.name}: variant '{release.variant}', sha256 {recorded_sha256(path)}; saved to {path}")
    return path
