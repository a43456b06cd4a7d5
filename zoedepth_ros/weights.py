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
DEFAULT_RETRIES = 5  # consecutive failed attempts without new bytes before giving up
DEFAULT_BACKOFF = 1.0  # first retry delay in seconds; doubles per consecutive failure
MAX_BACKOFF = 30.0
CHUNK_SIZE = 1 << 20

_log = logging.getLogger(__name__)
_USER_AGENT = f"zoedepth_ros/{__version__} (weights manager)"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# Errors that mean "the network let us down", worth a retry. Disk errors (plain OSError) are not here.
_NETWORK_ERRORS = (
    urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout,
)
_RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


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
    """

    def __init__(
        self,
        url: str,
        part: Path,
        *,
        desc: str,
        progress: bool,
        timeout: float,
        on_progress: Callable[[int, int | None], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.url, self.part, self.desc, self.progress, self.timeout = url, part, desc, progress, timeout
        # Hooks for callers that log instead of drawing a bar: (bytes so far, total or None) once when a
        # response starts and after every chunk; on_note gets each retry message.
        self.on_progress, self.on_note = on_progress, on_note
        self.digest = hashlib.sha256()
        self.written = 0
        self.total: int | None = None  # file size the server announced first; a change means a new file
        self.validator: str | None = None  # ETag / Last-Modified of what we are resuming, for If-Range
        self.bar = None
        if part.exists():
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    self.digest.update(chunk)
                    self.written += len(chunk)

    def discard(self) -> None:
        self.digest, self.written = hashlib.sha256(), 0
        self.part.unlink(missing_ok=True)

    def run(
        self, *, retries: int, backoff: float, sleep: Callable[[float], None] = time.sleep
    ) -> tuple[str, int]:
        """Download until complete; returns (sha256 hex, size).

        Gives up after ``retries`` consecutive attempts that brought no new bytes (a connection that
        keeps dropping but makes progress is followed to the end). The partial file is kept on failure
        so the next run resumes it.
        """
        failures = 0
        best = self.written
        try:
            while True:
                try:
                    self._attempt()
                    return self.digest.hexdigest(), self.written
                except _AttemptFailed as e:
                    if e.restart:
                        self.discard()
                    reason, cause = e.reason, e.cause
                if self.written > best:
                    best, failures = self.written, 0
                else:
                    failures += 1
                if failures > retries:
                    kept = f"; {self.written} bytes kept in {self.part} to resume" if self.written else ""
                    error = _UnreachableError if _is_unreachable(cause) else WeightsError
                    raise error(f"download of {self.url} failed after {retries} retries: {reason}{kept}")
                delay = min(backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF)
                self._note(f"{self.desc}: {reason}; retrying from byte {self.written} in {delay:.0f} s")
                sleep(delay)
        finally:
            if self.bar is not None:
                self.bar.close()

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
        if self.written:
            headers["Range"] = f"bytes={self.written}-"
            if self.validator:  # the server answers 200 (whole new file) instead of 206 if it changed
                headers["If-Range"] = self.validator
        request = urllib.request.Request(self.url, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and self.written:
                _, total = _parse_content_range(e.headers.get("Content-Range"))
                if total == self.written:
                    return None  # complete already; verification decides whether it is any good
                raise _AttemptFailed(f"server refused to resume at byte {self.written} (HTTP 416)",
                                     restart=True) from None
            if e.code in _RETRYABLE_HTTP:
                raise _AttemptFailed(f"HTTP {e.code} {e.reason}") from None
            raise WeightsError(f"HTTP {e.code} {e.reason} for {self.url}") from None
        except ValueError as e:  # malformed URL
            raise WeightsError(f"cannot download {self.url!r}: {e}") from None
        except _NETWORK_ERRORS as e:
            raise _AttemptFailed(f"{type(e).__name__}: {e}", cause=e) from None

    def _attempt(self) -> None:
        """One request; returns when the file is complete, raises _AttemptFailed otherwise."""
        response = self._open()
        if response is None:
            return
        with response:
            length_header = response.headers.get("Content-Length", "")
            length = int(length_header) if length_header.strip().isdigit() else None
            if response.status == 206 and self.written:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != self.written:
                    raise _AttemptFailed(f"server resumed at byte {start}, not {self.written}", restart=True)
                if total is None and length is not None:
                    total = self.written + length
            elif response.status == 200:
                if self.written:  # the server ignored Range: start over from its full response
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
            self._update_bar(total)
            if self.on_progress is not None:
                self.on_progress(self.written, self.total)
            received = self._stream(response)
        # http.client reports a connection closed early as a normal end of stream: count the bytes.
        if length is not None and received < length:
            raise _AttemptFailed(f"connection closed after {received} of {length} bytes")
        if total is not None and self.written != total:
            raise _AttemptFailed(f"have {self.written} bytes but the server announced {total}", restart=True)

    def _stream(self, response: http.client.HTTPResponse) -> int:
        received = 0
        with open(self.part, "ab") as f:
            f.truncate(self.written)  # keep the file exactly in step with the hash
            while True:
                try:  # read1: one socket read, so a timeout loses nothing already received
                    chunk = response.read1(CHUNK_SIZE)
                except _NETWORK_ERRORS as e:
                    raise _AttemptFailed(f"{type(e).__name__}: {e}", cause=e) from None
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

    def _update_bar(self, total: int | None) -> None:
        if not self.progress:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=self.written, desc=self.desc, unit="B", unit_scale=True,
                            unit_divisor=1024, dynamic_ncols=True)
        else:  # same bar across attempts: jump to where this attempt starts (0 after a restart)
            self.bar.total = total
            self.bar.n = self.bar.last_print_n = self.written
            self.bar.refresh()


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


def _expected_sha(
    release: ReleaseCheckpoint | None, pinned: str | None, path: Path
) -> tuple[str | None, str | None]:
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
    """
    release = resolve_name(name)
    pin = _normalise_sha(sha256) if sha256 else None
    dest = checkpoint_path(release)
    if dest.exists() and not force:
        if pin:
            actual = sha256_file(dest)
            if actual != pin:
                raise WeightsError(_sha_mismatch(f"cached {dest}", actual, pin, "pinned")
                                   + f"; re-download with: {FETCH_COMMAND} {release.name} --force")
        return dest

    expected, source = _expected_sha(release, pin, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    if force:
        part.unlink(missing_ok=True)
    url = release.url_for(base_url or os.environ.get(BASE_URL_ENV))
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise WeightsError(f"download URL {url!r} must start with http:// or https:// (check --base-url / "
                           f"${BASE_URL_ENV})")
    downloader = _Downloader(
        url, part, desc=release.filename, progress=progress, timeout=timeout, on_progress=on_progress, on_note=on_note
    )
    digest, _ = downloader.run(retries=retries, backoff=backoff)

    try:
        if expected and digest != expected:
            raise WeightsError(_sha_mismatch(f"download of {release.name}", digest, expected, source)
                               + "; the download was deleted")
        variant = _checkpoint_variant(part)
        if variant != release.variant:
            raise WeightsError(f"download of {release.name} is a '{variant}' checkpoint, expected "
                               f"'{release.variant}' (wrong file at {url}?); the download was deleted")
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    _write_sidecar(dest, digest)
    return dest


def verify(
    name_or_path: str | os.PathLike[str] | ReleaseCheckpoint, *, sha256: str | None = None
) -> VerifyResult:
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
        if _looks_like_path(str(name_or_path)):
            raise WeightsError(f"no such file: {candidate}")
    release = resolve_name(name_or_path)  # type: ignore[arg-type]
    path = checkpoint_path(release)
    if not path.is_file():
        raise WeightsError(_missing_message(release, path))
    return path, release


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith("~") or spec.startswith(".")


def _missing_message(release: ReleaseCheckpoint, path: Path) -> str:
    size_gb = release.approx_size / 1e9
    return (f"checkpoint {release.name} is not downloaded yet; fetch it (~{size_gb:.1f} GB) with "
            f"`{FETCH_COMMAND} {release.name}`, it will be saved to {path}")


def list_checkpoints() -> list[CheckpointStatus]:
    """The official checkpoints with their cache state (present, size, recorded hash, partial bytes)."""
    rows = []
    for release in RELEASES:
        path = checkpoint_path(release)
        present = path.is_file()
        part = _part_path(path)
        rows.append(CheckpointStatus(
            release=release,
            path=path,
            present=present,
            size=path.stat().st_size if present else None,
            recorded_sha256=_read_sidecar(path),
            partial_size=part.stat().st_size if part.is_file() else None,
        ))
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
    try:
        release = resolve_name(text)
    except WeightsError:
        if _looks_like_path(text) or text.lower().endswith((".pt", ".pth", ".safetensors")):
            raise WeightsError(f"checkpoint file not found: {candidate}") from None
        raise WeightsError(f"checkpoint {text!r} is neither an existing path nor an official name "
                           f"({_known_names()})") from None
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
) -> Path:
    """:func:`resolve_checkpoint`, except that an official name not cached yet is fetched on first use.

    So that a first run needs no separate ``fetch`` step: the download is the verified :func:`fetch`
    (hash recorded, resumable; ``base_url`` else ``$ZOEDEPTH_ROS_BASE_URL``), reported through ``log``
    (default: this module's logger) as a few plain lines. With ``download=False``, or when the server cannot
    be reached, the WeightsError says how to install the file offline and the exact cache path it needs.
    """
    report = log if log is not None else _log.info
    text = os.fspath(spec).strip()
    release = None
    if text and not Path(text).expanduser().exists():
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
