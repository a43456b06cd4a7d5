"""Downloads end in bounded time with a message that says what happened, against the local test server.

A server trickling a byte at a time never trips the per-read timeout, so ``stall_timeout`` (too little progress,
across reconnects) and ``deadline`` (the whole download) end it, keeping the partial file to resume; an HTML page
is called what it is (no advice to re-run); a server ignoring Range is announced once; the CLI's opening line
gives the size the server announced.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers_http import CheckpointServer, Drop, Page, Stall, Trickle

from zoedepth_ros import download as D
from zoedepth_ros import weights as W
from zoedepth_ros.tools.weights import main

NK = "ZoeD_M12_NK.pt"


@pytest.fixture
def nk(tiny_checkpoint: Callable[[str], Path]) -> bytes:
    return tiny_checkpoint("nk").read_bytes()


def fetch(srv: CheckpointServer, **kw) -> Path:
    kw = {"base_url": srv.url, "progress": False, "backoff": 0.0, "timeout": 5.0, **kw}
    return W.fetch("ZoeD_M12_NK", **kw)


def timed(fn: Callable[[], object]) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    with pytest.raises(W.WeightsError) as info:
        fn()
    return info.value, time.monotonic() - t0


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------- stall / deadline


def test_trickling_server_is_given_up_on_and_the_partial_resumes(cache: Path, server: CheckpointServer, nk) -> None:
    server.add(NK, nk, Trickle(after=100_000, interval=0.05))
    error, elapsed = timed(lambda: fetch(server, stall_timeout=1.0))
    part = cache / (NK + ".part")
    kept = part.stat().st_size
    assert 100_000 < kept < 100_000 + 64
    assert re.fullmatch(
        rf"only \d+ bytes in 1 s from {re.escape(server.url)}/{NK}; the download stalled "
        rf"\({re.escape(D.bytes_text(kept))} of {re.escape(D.bytes_text(len(nk)))} so far, kept in "
        rf"{re.escape(str(part))}; run the same command again to resume\)",
        str(error),
    ), str(error)
    assert 0.9 < elapsed < 3.0
    assert not (cache / NK).exists()
    path = fetch(server, stall_timeout=1.0)  # the same command again: resumes where the trickle stopped
    assert path.read_bytes() == nk and server.requests[-1].range == f"bytes={kept}-"


def test_silent_server_is_a_stall_once_the_read_timeout_is_longer(cache: Path, server: CheckpointServer, nk) -> None:
    """The per-read timeout (5 s) stays; the stall limit (1 s) shortens the read so it is not overrun."""
    server.add(NK, nk, Stall(after=100_000, seconds=5.0))
    error, elapsed = timed(lambda: fetch(server, stall_timeout=1.0, timeout=5.0))
    # on a loaded machine the first 100 kB can still be arriving when the 1 s window opens: "only N bytes in 1 s"
    stalled = rf"(no data for|only \d+ bytes in) 1 s from {re.escape(server.url)}/{NK}; the download stalled \("
    assert re.match(stalled, str(error))
    assert "kept in" in str(error) and 0.9 < elapsed < 2.5


def test_read_timeout_still_reconnects_before_the_stall_ends_it(cache: Path, server: CheckpointServer, nk) -> None:
    """As with the defaults (60 s per read, 120 s stall): a dead connection gets a new one, a dead server an end."""
    server.add(NK, nk, Stall(after=100_000, seconds=5.0), Stall(after=0, seconds=5.0), Stall(after=0, seconds=5.0))
    error, elapsed = timed(lambda: fetch(server, timeout=0.4, stall_timeout=1.0))
    assert [r.range for r in server.requests][:2] == [None, "bytes=100000-"]
    assert str(error).startswith("no data for 1 s from ") and 0.9 < elapsed < 2.5


def test_stall_counts_across_reconnects(cache: Path, server: CheckpointServer, nk) -> None:
    """A server that drops every connection after a few bytes makes 'progress' each time, yet gets nowhere."""
    server.add(NK, nk, Drop(after=70_000), *[Drop(after=10)] * 200)
    error, elapsed = timed(lambda: fetch(server, stall_timeout=1.0, retries=1000, backoff=0.05))
    assert re.match(r"only \d+ bytes in 1 s from ", str(error)) and elapsed < 3.0


def test_deadline_ends_a_trickle(cache: Path, server: CheckpointServer, nk) -> None:
    server.add(NK, nk, Trickle(after=1000, interval=0.05))
    error, elapsed = timed(lambda: fetch(server, deadline=1.0))
    part = cache / (NK + ".part")
    assert str(error) == (
        f"the download of {server.url}/{NK} did not finish within the 1 s deadline "
        f"({D.bytes_text(part.stat().st_size)} of {D.bytes_text(len(nk))} so far, kept in {part}; "
        "run the same command again to resume)"
    )
    assert 0.9 < elapsed < 2.5


def test_deadline_bounds_the_retry_waits_too(cache: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    error, elapsed = timed(lambda: W.fetch("nk", base_url=url, progress=False, retries=50, backoff=0.4, deadline=1.0))
    assert "did not finish within the 1 s deadline (nothing saved yet" in str(error)
    assert 0.9 < elapsed < 2.5


def test_ensure_checkpoint_and_cli_pass_the_limits_on(cache: Path, server: CheckpointServer, nk, capsys) -> None:
    server.add(NK, nk, Trickle(after=100_000, interval=0.05), Trickle(after=100_000, interval=0.05))
    error, elapsed = timed(
        lambda: W.ensure_checkpoint("nk", base_url=server.url, log=lambda _: None, stall_timeout=1.0)
    )
    assert "the download stalled" in str(error) and elapsed < 3.0

    t0 = time.monotonic()
    assert main(["fetch", "nk", "--base-url", server.url, "--stall-timeout", "5", "--deadline", "1"]) == 1
    err = capsys.readouterr().err
    assert "did not finish within the 1 s deadline" in err and err.count("error:") == 1
    assert time.monotonic() - t0 < 3.0
    for bad in ("0", "-1", "soon"):
        assert main(["fetch", "nk", "--deadline", bad]) == 2
        assert main(["fetch", "nk", "--stall-timeout", bad]) == 2
    assert "must be a positive number of seconds" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- HTML pages


@pytest.mark.parametrize(
    "page",
    [
        Page(body=b"<head><title>Proxy authentication required</title></head>"),
        Page(),
        Page(body=b"\n  <!doctype html><html>proxy error</html>", content_type="application/octet-stream"),
        Page(body=b"<HTML><BODY>Please log in</BODY></HTML>", content_type="binary/octet-stream"),
    ],
    ids=["content-type", "doctype", "doctype-after-space", "html-body"],
)
def test_html_page_says_the_url_serves_no_checkpoint(cache: Path, server: CheckpointServer, nk, page) -> None:
    server.add(NK, nk, page)
    with pytest.raises(W.WeightsError) as info:
        fetch(server)
    message = str(info.value)
    assert f"{NK} from {server.url}/{NK} is not a usable ZoeDepth checkpoint: the server sent an HTML page" in message
    assert "this URL serves no checkpoint: probably a login page, a proxy, or a wrong --base-url" in message
    assert "again" not in message and "fetch the official weights" not in message
    assert len(server.requests) == 1  # not retried: a page will not turn into a checkpoint
    assert list(cache.glob(NK + "*")) == []


def test_html_page_while_resuming_keeps_the_partial(cache: Path, server: CheckpointServer, nk) -> None:
    cache.mkdir()
    part = cache / (NK + ".part")
    part.write_bytes(nk[:5000])
    server.add(NK, nk, Page())
    with pytest.raises(W.WeightsError, match=rf"the partial download in {re.escape(str(part))} was kept$"):
        fetch(server)
    assert part.read_bytes() == nk[:5000]
    server.content_type = "text/html"  # a mirror that mislabels the file: the body decides
    assert fetch(server).read_bytes() == nk  # behind the proxy again: it resumes
    assert server.requests[-1].range == "bytes=5000-"
    assert fetch(server, force=True).read_bytes() == nk  # and from byte 0, where a zip archive starts with PK


# ----------------------------------------------------------------------------------- Range ignored


def test_server_ignoring_range_says_once_that_it_restarts(cache: Path, server: CheckpointServer, nk, capsys) -> None:
    cache.mkdir()
    (cache / (NK + ".part")).write_bytes(nk[:3000])
    server.honour_range = False
    server.add(NK, nk, Drop(after=20_000), Drop(after=20_000))
    notes: list[str] = []
    path = fetch(server, on_note=notes.append)
    assert path.read_bytes() == nk
    assert [r.status for r in server.requests] == [200, 200, 200]  # every request asked for a range
    restarts = [n for n in notes if "restarts from the beginning" in n]
    assert restarts == [
        f"{NK}: asked to resume at byte 3000, the server sent the whole file (the server ignores "
        "resume requests); the download restarts from the beginning"
    ]

    (cache / NK).unlink()  # the CLI, on a fresh interrupted download: its opening line (real size) comes first
    (cache / (NK + ".part")).write_bytes(nk[:3000])
    assert main(["fetch", "nk", "--base-url", server.url]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [f"downloading ZoeD_M12_NK ({D.bytes_text(len(nk))}) from {server.url}/{NK}", restarts[0]]


# ------------------------------------------------------------------------------------------ CLI size


def cli_opening_line(err: str) -> str:
    return next(ln for ln in err.splitlines() if ln.startswith("downloading "))


def test_cli_downloading_line_gives_the_announced_size(cache: Path, server: CheckpointServer, nk, capsys) -> None:
    server.add(NK, nk)
    assert main(["fetch", "nk", "--base-url", server.url]) == 0
    line = cli_opening_line(capsys.readouterr().err)
    assert line == f"downloading ZoeD_M12_NK ({D.bytes_text(len(nk))}) from {server.url}/{NK}"

    server.send_length = False  # no size announced: only then the release table's approximation
    assert main(["fetch", "nk", "--base-url", server.url, "--force"]) == 0
    err = capsys.readouterr().err
    assert cli_opening_line(err) == f"downloading ZoeD_M12_NK (~1.4 GB) from {server.url}/{NK}"
    assert err.count("downloading ") == 1 and "verified ZoeD_M12_NK" in err


def test_cli_downloading_line_when_resuming(cache: Path, server: CheckpointServer, nk, capsys) -> None:
    cache.mkdir()
    (cache / (NK + ".part")).write_bytes(nk[:1_000_000])
    server.add(NK, nk)
    assert main(["fetch", "nk", "--base-url", server.url]) == 0
    line = cli_opening_line(capsys.readouterr().err)
    assert line == (
        f"downloading ZoeD_M12_NK ({D.bytes_text(len(nk))}, resuming at 1.00 MB) "  # Content-Range total
        f"from {server.url}/{NK}"
    )
