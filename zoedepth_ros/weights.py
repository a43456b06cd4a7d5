"""Fetch, cache and verify the official ZoeDepth release checkpoints.

The checkpoints are ~1.4 GB each, so a download must survive dropped connections (it resumes with an
HTTP ``Range`` request from ``<name>.pt.part``) and must never leave a bad file where the node will look
for weights: a download is only renamed into place after it has been loaded as a checkpoint of the
expected variant and its SHA-256 matched any pinned or previously recorded hash. Upstream publishes no
hashes, so the first verified download records one in ``<name>.pt.sha256`` (trust on first use) and
later ``verify``/``fetch --force`` runs check against it.

The HTTP side (resume, retries, stall and deadline, progress lines, the cross-process lock) is in
``zoedepth_ros.download``; this module decides what is fetched, where it goes and whether it may stay. torch
(through ``zoedepth_ros.model``) is imported lazily, when a file is actually verified, so listing and resolving
paths stay cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .download import (
    CHUNK_SIZE,
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_TIMEOUT,
    Downloader,
    ProgressLog,
    UnreachableError,
    download_lock,
)
from .errors import WeightsError

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

_log = logging.getLogger(__name__)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


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
    ``stall_timeout`` (None: off) gives up once fewer than ``download.STALL_MIN_BYTES`` arrived in that many
    seconds, so a trickling server cannot hold the caller forever; ``deadline`` (seconds, None: none) bounds the
    whole download.
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
    downloader = Downloader(
        url,
        part,
        desc=release.filename,
        progress=progress,
        timeout=timeout,
        stall_timeout=stall_timeout,
        deadline=deadline,
        on_progress=on_progress,
        on_note=on_note if on_note is not None else _log.info,  # retry notes keep this module's logger
        wrong_url_hint=f"a wrong --base-url / ${BASE_URL_ENV}",
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


def _offline_advice(release: ReleaseCheckpoint, dest: Path) -> str:
    return (
        f"To install it without network here, run `{FETCH_COMMAND} {release.name}` on a machine with network "
        f"access and copy the file (~{release.approx_size / 1e9:.1f} GB) to exactly {dest} (on this machine "
        f"`zoedepth-ros-weights path {release.name}` prints that path), or set the `checkpoint` parameter to the "
        "path of a .pt file."
    )


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
    with download_lock(dest, report):
        if dest.is_file():  # another process finished it while this one waited for the lock
            report(f"{release.name} was downloaded by another process: {dest}")
            return dest
        reporter = ProgressLog(release.name, release.approx_size, url, dest, report)
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
        except UnreachableError as e:
            raise WeightsError(
                f"checkpoint {release.name} is not cached and its server cannot be reached (no network?): {e}. "
                f"{_offline_advice(release, dest)} A reachable mirror can be set with ${BASE_URL_ENV}."
            ) from e
    report(f"verified {release.name}: variant '{release.variant}', sha256 {recorded_sha256(path)}; saved to {path}")
    return path
