"""``zoedepth-ros-weights``: fetch, list, locate and verify the official ZoeDepth checkpoints.

Expected failures (unknown name, network down, rejected download) print one ``error:`` line on stderr
and exit 1; usage errors exit 2 (argparse). See ``zoedepth_ros.weights`` for the behaviour itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from zoedepth_ros import download as D
from zoedepth_ros import weights as W

PROG = "zoedepth-ros-weights"


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _info(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


class _FetchReport:
    """The ``downloading ...`` line and retry notes of ``fetch`` on stderr.

    The line waits for the first answer so it can give the size the server announced (Content-Length or the
    Content-Range total); the release table's approximation is only used when no size comes (or no answer
    before the first retry note). With a progress bar the downloader writes the notes through the bar.
    """

    def __init__(self, args: argparse.Namespace, release: W.ReleaseCheckpoint, url: str, bar: bool) -> None:
        self.args, self.release, self.url, self.bar = args, release, url, bar
        self.announced = False
        self.answered = False

    def _announce(self, written: int, total: int | None) -> None:
        size = D.bytes_text(total) if total else f"~{self.release.approx_size / 1e9:.1f} GB"
        resume = f", resuming at {D.bytes_text(written)}" if written else ""
        _info(self.args, f"downloading {self.release.name} ({size}{resume}) from {self.url}")
        self.announced = True

    def progress(self, written: int, total: int | None) -> None:
        self.answered = True
        if not self.announced:
            self._announce(written, total)

    def note(self, message: str) -> None:
        if not self.announced:
            self._announce(0, None)
        if not (self.bar and self.answered):  # once a bar is drawn the downloader writes notes through it
            _info(self.args, message)


def _cmd_fetch(args: argparse.Namespace) -> int:
    release = W.resolve_name(args.name)
    dest = W.checkpoint_path(release)
    if dest.exists() and not args.force:
        path = W.fetch(release, sha256=args.sha256)
        _info(args, f"{release.name} is already cached (use --force to download it again)")
    else:
        url = release.url_for(args.base_url or os.environ.get(W.BASE_URL_ENV))
        progress = not args.quiet and sys.stderr.isatty()
        report = _FetchReport(args, release, url, bar=progress)
        path = W.fetch(
            release,
            sha256=args.sha256,
            base_url=args.base_url,
            force=args.force,
            progress=progress,
            timeout=args.timeout,
            retries=args.retries,
            stall_timeout=args.stall_timeout,
            deadline=args.deadline,
            on_progress=report.progress,
            on_note=report.note,
        )
        _info(args, f"verified {release.name}: variant '{release.variant}', sha256 {W.recorded_sha256(path)}")
    print(path)
    return 0


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _cmd_list(args: argparse.Namespace) -> int:
    rows = W.list_checkpoints()
    print(f"cache: {W.cache_dir()}")
    header = ("NAME", "VARIANT", "STATUS", "SIZE", "SHA256 (recorded)")
    table = [header]
    for row in rows:
        if row.present:
            status = "present"
        elif row.partial_size is not None:
            status = "partial"
        else:
            status = "missing"
        size = row.size if row.present else row.partial_size
        sha = row.recorded_sha256[:16] + "…" if row.recorded_sha256 else "-"
        table.append((row.release.name, row.release.variant, status, _human(size), sha))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if not all(row.present for row in rows):
        print(f"fetch a missing one with: {W.FETCH_COMMAND} NAME")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    print(W.checkpoint_path(args.name))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    result = W.verify(args.target, sha256=args.sha256)
    if result.sha256_source is None:
        hash_note = "no expected hash to compare with"
    else:
        hash_note = f"matches the {result.sha256_source} hash"
    if result.recorded:
        hash_note += "; recorded it for later checks"
    print(f"OK {result.path}: variant '{result.variant}', {_human(result.size)}, sha256 {result.sha256} ({hash_note})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fetch, list and verify the official ZoeDepth checkpoints. Cache: "
        f"${W.CACHE_ENV}, else $XDG_CACHE_HOME/zoedepth_ros, else ~/.cache/zoedepth_ros.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = ", ".join(r.name for r in W.RELEASES)

    p = sub.add_parser("fetch", help="download a checkpoint into the cache (resumes, then verifies)")
    p.add_argument("name", help=f"one of {names} (or N, K, NK)")
    p.add_argument("--sha256", metavar="HEX", help="reject the download unless it has this SHA-256")
    p.add_argument("--force", action="store_true", help="download again even when already cached")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages, only the path")
    p.add_argument(
        "--base-url", metavar="URL", help=f"download from URL/<name>.pt instead of GitHub (also ${W.BASE_URL_ENV})"
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=D.DEFAULT_TIMEOUT,
        help="seconds per connect / socket read; a silent connection is resumed on a new one "
        f"(default {D.DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=D.DEFAULT_RETRIES,
        help="consecutive failed attempts without progress before giving up",
    )
    p.add_argument(
        "--stall-timeout",
        type=_seconds,
        default=D.DEFAULT_STALL_TIMEOUT,
        metavar="S",
        help=f"give up when less than {D.STALL_MIN_BYTES // 1024} KiB arrived in S seconds, across "
        f"reconnects; the partial file is kept to resume (default {D.DEFAULT_STALL_TIMEOUT:g})",
    )
    p.add_argument(
        "--deadline",
        type=_seconds,
        default=None,
        metavar="S",
        help="give up when the download has not finished after S seconds; the partial file is kept "
        "to resume (default: no deadline)",
    )
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("list", help="show the official checkpoints and what is cached")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("path", help="print where a checkpoint is (or will be) cached")
    p.add_argument("name", help=f"one of {names}")
    p.set_defaults(func=_cmd_path)

    p = sub.add_parser("verify", help="check that a cached checkpoint or a file loads and matches its hash")
    p.add_argument("target", metavar="NAME|PATH", help="an official name (cached) or a checkpoint file")
    p.add_argument("--sha256", metavar="HEX", help="the SHA-256 the file must have")
    p.set_defaults(func=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status instead of raising SystemExit, so tests can call it."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse reports usage errors (2) and --help (0) this way
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except W.WeightsError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
