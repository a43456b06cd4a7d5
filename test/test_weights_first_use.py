"""``ensure_checkpoint``: the node's start-up path that fetches an official checkpoint on first use.

Against the local HTTP server of ``helpers_http`` (no network): the first use downloads through the verified
``fetch`` and logs plain progress lines, later uses never touch the server, and every way of not getting the
file (download off, server unreachable) says how to install it offline and where it must go.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers_http import CheckpointServer, Stall

from zoedepth_ros import download as D
from zoedepth_ros import weights as W
from zoedepth_ros.weights import WeightsError

NK = "ZoeD_M12_NK.pt"
FETCH_ADVICE = "`zoedepth-ros-weights fetch ZoeD_M12_NK` on a machine with network access"


@pytest.fixture
def nk_bytes(tiny_checkpoint: Callable[[str], Path]) -> bytes:
    """A small but real 'nk' checkpoint, so fetch's load-and-check verification passes."""
    return tiny_checkpoint("nk").read_bytes()


def closed_port() -> int:
    """A localhost port with nothing listening (bound, then released), so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_offline_advice(message: str, cache: Path) -> None:
    assert FETCH_ADVICE in message
    assert f"to exactly {cache / NK}" in message
    assert "`checkpoint` parameter to the path of a .pt file" in message
    assert "\n" not in message  # one paragraph, as the node logs it


# ------------------------------------------------------------------------------------------ first use


def test_first_use_downloads_verifies_and_logs_progress(
    cache: Path, server: CheckpointServer, nk_bytes: bytes, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(D, "PROGRESS_MIN_INTERVAL", 0.0)  # a local download takes milliseconds, not minutes
    monkeypatch.setattr(D, "CHUNK_SIZE", 64 * 1024)  # many chunks, so every 10 % step is seen
    server.add(NK, nk_bytes)
    lines: list[str] = []

    path = W.ensure_checkpoint("ZoeD_M12_NK", log=lines.append, base_url=server.url)

    assert path == cache / NK and path.read_bytes() == nk_bytes
    digest = W.sha256_file(path)
    assert (cache / (NK + ".sha256")).read_text() == f"{digest}  {NK}\n"  # exactly as `fetch` records it
    assert not (cache / (NK + ".part")).exists()
    assert [(r.range, r.status) for r in server.requests] == [(None, 200)]

    size = D.bytes_text(len(nk_bytes))
    assert lines[0] == f"downloading ZoeD_M12_NK ({size}) from {server.url}/{NK} to {cache / NK}"
    percents = [int(m.group(1)) for ln in lines if (m := re.match(r"ZoeD_M12_NK: (\d+) % \(", ln))]
    assert len(percents) >= 5 and percents == sorted(set(percents)) and all(0 < p < 100 for p in percents)
    assert lines[-2].startswith(f"downloaded ZoeD_M12_NK: {size} in ")
    assert lines[-1] == f"verified ZoeD_M12_NK: variant 'nk', sha256 {digest}; saved to {path}"
    assert len(lines) <= 14  # a handful of lines, not one per chunk
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")  # no tqdm bar: the log is the only output


def test_second_use_does_not_download(
    cache: Path, server: CheckpointServer, nk_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add(NK, nk_bytes)
    monkeypatch.setenv(W.BASE_URL_ENV, server.url)  # honoured like the CLI does
    first = W.ensure_checkpoint("nk", log=lambda _: None)
    assert len(server.requests) == 1
    lines: list[str] = []
    second = W.ensure_checkpoint("ZoeD_M12_NK", log=lines.append)
    offline = W.ensure_checkpoint("NK", download=False, log=lines.append)
    assert first == second == offline == cache / NK
    assert len(server.requests) == 1 and lines == []  # neither the server nor the log hears of it


def test_download_off_raises_with_offline_advice(cache: Path, server: CheckpointServer) -> None:
    server.add(NK, b"never served")
    with pytest.raises(WeightsError) as info:
        W.ensure_checkpoint("ZoeD_M12_NK", download=False, base_url=server.url, log=pytest.fail)
    message = str(info.value)
    assert "is not cached" in message and "downloading is off (`download: false`)" in message
    assert_offline_advice(message, cache)
    assert server.requests == [] and not cache.exists()


def test_unreachable_server_raises_with_offline_advice(cache: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    lines: list[str] = []
    with pytest.raises(WeightsError) as info:
        W.ensure_checkpoint("nk", base_url=url, log=lines.append, retries=1, backoff=0.0, timeout=5.0)
    message = str(info.value)
    assert "cannot be reached (no network?)" in message and "refused" in message.lower()
    assert_offline_advice(message, cache)
    assert not (cache / NK).exists() and not (cache / (NK + ".part")).exists()
    # Nothing answered, so the opening line gives the approximate size; the retry is logged, not swallowed.
    assert lines[0] == f"downloading ZoeD_M12_NK (~{D.bytes_text(1_440_000_000)}) from {url}/{NK} to {cache / NK}"
    assert any("retrying from byte 0" in ln for ln in lines[1:])


def test_stalled_server_counts_as_unreachable(cache: Path, server: CheckpointServer, nk_bytes: bytes) -> None:
    server.add(NK, nk_bytes, Stall(after=0, seconds=3.0))
    with pytest.raises(WeightsError) as info:
        W.ensure_checkpoint("nk", base_url=server.url, log=lambda _: None, retries=0, timeout=0.3)
    assert "cannot be reached" in str(info.value) and "timed out" in str(info.value)
    assert_offline_advice(str(info.value), cache)


def test_other_failures_keep_their_own_message(cache: Path, server: CheckpointServer) -> None:
    """A 404 or a bad file is not a network problem: no offline advice, the message `fetch` gives."""
    with pytest.raises(WeightsError, match="HTTP 404") as info:
        W.ensure_checkpoint("nk", base_url=server.url, log=lambda _: None)
    assert FETCH_ADVICE not in str(info.value)
    server.add(NK, b"<html>rate limited</html>")
    with pytest.raises(WeightsError, match="not a usable ZoeDepth checkpoint"):
        W.ensure_checkpoint("nk", base_url=server.url, log=lambda _: None)
    assert not (cache / NK).exists()


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), True),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), True),
        (urllib.error.URLError(OSError(101, "Network is unreachable")), True),
        (TimeoutError("timed out"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (urllib.error.URLError("unknown url type: ftp"), False),
        (http.client.IncompleteRead(b"", 10), False),
        (None, False),
    ],
    ids=["dns", "refused", "net-unreachable", "timeout", "reset", "url-type", "incomplete-read", "none"],
)
def test_unreachable_classification(error: BaseException | None, unreachable: bool) -> None:
    assert D.is_unreachable(error) is unreachable


def test_path_specs_behave_like_resolve_checkpoint(cache: Path, server: CheckpointServer, tmp_path: Path) -> None:
    own = tmp_path / "weights.pt"
    own.write_bytes(b"not loaded at start-up")
    for spec in (own, str(own), tmp_path):  # a .pt file, or a Hugging Face model folder
        assert W.ensure_checkpoint(spec, log=pytest.fail) == W.resolve_checkpoint(spec) == Path(spec).resolve()
    cache.mkdir()
    (cache / NK).write_bytes(b"placeholder")  # cached names resolve without loading or hashing
    assert W.ensure_checkpoint("NK", base_url=server.url, log=pytest.fail) == cache / NK
    with pytest.raises(WeightsError, match="checkpoint file not found"):
        W.ensure_checkpoint(tmp_path / "absent.pt", base_url=server.url)
    with pytest.raises(WeightsError, match="neither an existing path nor an official name"):
        W.ensure_checkpoint("ZoeD_M12_X", base_url=server.url)
    with pytest.raises(WeightsError, match="no checkpoint given"):
        W.ensure_checkpoint(" ")
    assert server.requests == []


def test_concurrent_first_uses_download_once(cache: Path, server: CheckpointServer, nk_bytes: bytes) -> None:
    """Two nodes started together on a fresh machine: one downloads, the other waits for it."""
    server.add(NK, nk_bytes)
    start = threading.Barrier(2, timeout=30)
    results: dict[int, Path | BaseException] = {}

    def use(i: int) -> None:
        try:
            start.wait()
            results[i] = W.ensure_checkpoint("nk", base_url=server.url, log=lambda _: None, timeout=10.0)
        except BaseException as e:  # reported by the assertion below
            results[i] = e

    threads = [threading.Thread(target=use, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "ensure_checkpoint hung"
    assert results == {0: cache / NK, 1: cache / NK}
    assert [r.status for r in server.requests] == [200]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_are_rate_limited() -> None:
    """Every 10 %, but never more often than every PROGRESS_MIN_INTERVAL s; at least every PROGRESS_MAX_SILENCE s."""
    release = W.resolve_name("nk")
    lines: list[str] = []
    clock = FakeClock()
    log = D.ProgressLog(
        release.name, release.approx_size, "http://x/ZoeD_M12_NK.pt", Path("/c/ZoeD_M12_NK.pt"), lines.append, clock
    )
    total = 1_000_000_000
    log.progress(0, total)
    for second in range(1, 101):  # 1 % per second: a 10 % step every 10 s, so one line per step
        clock.now = float(second)
        log.progress(second * total // 100, total)
    percents = [ln.split(": ")[1].split(" %")[0] for ln in lines if " % (" in ln]
    assert percents == [str(p) for p in range(10, 100, 10)]
    assert lines[-1].startswith("downloaded ZoeD_M12_NK: 1.00 GB in 100 s (10.00 MB/s)")

    lines.clear()
    fast = D.ProgressLog(release.name, release.approx_size, "u", Path("p"), lines.append, clock)
    clock.now = 0.0
    fast.progress(0, total)
    for tenth in range(1, 100):  # 10 % per 0.1 s: rate-limited to nothing before the end
        clock.now = tenth / 100
        fast.progress(tenth * total // 100, total)
    assert len(lines) == 1

    lines.clear()
    unknown = D.ProgressLog(release.name, release.approx_size, "u", Path("p"), lines.append, clock)
    clock.now = 0.0
    unknown.progress(0, None)
    for second in range(1, 181):  # no Content-Length: a line per PROGRESS_MAX_SILENCE only
        clock.now = float(second)
        unknown.progress(second * 1_000_000, None)
    assert "~1.44 GB" in lines[0] and [ln.split(": ")[1] for ln in lines[1:]] == [
        "60.00 MB so far (1.00 MB/s)",
        "120.00 MB so far (1.00 MB/s)",
        "180.00 MB so far (1.00 MB/s)",
    ]
