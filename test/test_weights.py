"""The weights manager end to end against a local HTTP server serving tiny real checkpoints.

Covers resume after dropped/stalled connections, servers that ignore or refuse ranges, rejection of
corrupt, wrong-variant and wrongly hashed downloads (nothing may be left in the cache), the recorded
hash, ``resolve_checkpoint`` for the node and the ``zoedepth-ros-weights`` command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path

import pytest
import torch
from helpers_http import CheckpointServer, Drop, Stall, Status

from zoedepth_ros import download as D
from zoedepth_ros import weights as W
from zoedepth_ros.model import ZoeDepth, official_state_dict, tiny_config
from zoedepth_ros.tools.weights import main
from zoedepth_ros.weights import WeightsError

NK = "ZoeD_M12_NK.pt"


def _make_checkpoint(variant: str, seed: int, folder: Path) -> bytes:
    torch.manual_seed(seed)
    model = ZoeDepth(tiny_config(variant))
    folder.mkdir()
    path = folder / "ckpt.pt"  # one file name for all: torch.save embeds it in the archive
    torch.save({"model": official_state_dict(model), "optimizer": None, "epoch": 0}, path)
    return path.read_bytes()


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Serialized tiny checkpoints: one per variant, plus a second 'nk' one of the same size."""
    folder = tmp_path_factory.mktemp("checkpoints")
    made = {v: _make_checkpoint(v, i, folder / v) for i, v in enumerate(("n", "k", "nk"))}
    made["nk2"] = _make_checkpoint("nk", 99, folder / "nk2")
    assert made["nk"] != made["nk2"]
    return made


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(srv: CheckpointServer, name: str = "ZoeD_M12_NK", **kw) -> Path:
    kw = {"base_url": srv.url, "progress": False, "backoff": 0.0, "timeout": 5.0, **kw}
    return W.fetch(name, **kw)


def assert_nothing_left(cache: Path, filename: str = NK) -> None:
    """A rejected download leaves neither the file, nor its partial, nor a recorded hash."""
    leftovers = sorted(p.name for p in cache.glob(f"{filename}*")) if cache.exists() else []
    assert leftovers == []


# ------------------------------------------------------------------------------------------- names


def test_release_table_matches_upstream() -> None:
    by_name = {r.name: r for r in W.RELEASES}
    base = "https://github.com/isl-org/ZoeDepth/releases/download/v1.0"
    assert {n: (r.url, r.variant, r.sha256) for n, r in by_name.items()} == {
        "ZoeD_M12_N": (f"{base}/ZoeD_M12_N.pt", "n", None),
        "ZoeD_M12_K": (f"{base}/ZoeD_M12_K.pt", "k", None),
        "ZoeD_M12_NK": (f"{base}/ZoeD_M12_NK.pt", "nk", None),
    }
    assert all(1.3e9 < r.approx_size < 1.6e9 for r in W.RELEASES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        W.RELEASES[0].url = "http://elsewhere"  # type: ignore[misc]
    assert by_name["ZoeD_M12_K"].url_for("http://mirror/x/") == "http://mirror/x/ZoeD_M12_K.pt"


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("ZoeD_M12_NK", "ZoeD_M12_NK"),
        ("zoed_m12_nk", "ZoeD_M12_NK"),
        ("ZOED_M12_N.PT", "ZoeD_M12_N"),
        ("NK", "ZoeD_M12_NK"),
        ("k", "ZoeD_M12_K"),
        ("n.pt", "ZoeD_M12_N"),
        (" ZoeD_M12_K.pt ", "ZoeD_M12_K"),
    ],
)
def test_resolve_name_accepts_spellings(spelling: str, expected: str) -> None:
    assert W.resolve_name(spelling).name == expected


@pytest.mark.parametrize("bad", ["ZoeD_M12", "nyu", "ZoeD_M12_NK.pth", ""])
def test_resolve_name_rejects_unknown(bad: str) -> None:
    with pytest.raises(WeightsError, match="ZoeD_M12_N, ZoeD_M12_K, ZoeD_M12_NK"):
        W.resolve_name(bad)


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(W.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert W.cache_dir() == tmp_path / "home" / ".cache" / "zoedepth_ros"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "zoedepth_ros"
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "explicit"))
    assert W.cache_dir() == tmp_path / "explicit"
    assert W.checkpoint_path("nk") == tmp_path / "explicit" / NK


# ---------------------------------------------------------------------------------------- download


def test_fetch_downloads_verifies_and_records_hash(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"])
    path = fetch(server)
    assert path == cache / NK
    assert path.read_bytes() == ckpt["nk"]
    assert (cache / (NK + ".sha256")).read_text() == f"{sha(ckpt['nk'])}  {NK}\n"
    assert not (cache / (NK + ".part")).exists()
    assert [(r.range, r.status) for r in server.requests] == [(None, 200)]
    row = {r.release.name: r for r in W.list_checkpoints()}["ZoeD_M12_NK"]
    assert (row.present, row.size, row.recorded_sha256) == (True, len(ckpt["nk"]), sha(ckpt["nk"]))


def test_cached_checkpoint_is_not_downloaded_again(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"])
    first = fetch(server)
    second = fetch(server)
    assert first == second and second.read_bytes() == ckpt["nk"]
    assert len(server.requests) == 1
    with pytest.raises(WeightsError, match="--force"):  # a pin is checked against the cached file
        fetch(server, sha256="ab" * 32)
    assert len(server.requests) == 1


@pytest.mark.parametrize("drops", [1, 3])
def test_dropped_connection_is_resumed_with_range(cache: Path, server: CheckpointServer, ckpt, drops: int) -> None:
    data = ckpt["nk"]
    step = len(data) // (drops + 2)
    server.add(NK, data, *[Drop(after=step)] * drops)
    path = fetch(server)
    assert path.read_bytes() == data
    assert W.recorded_sha256(path) == sha(data)
    reqs = server.requests
    assert len(reqs) == drops + 1
    assert (reqs[0].range, reqs[0].status, reqs[0].body_bytes) == (None, 200, step)
    for i, r in enumerate(reqs[1:], start=1):
        assert (r.range, r.status) == (f"bytes={i * step}-", 206)


def test_resume_through_redirect(cache: Path, server: CheckpointServer, ckpt, capsys) -> None:
    """GitHub answers release downloads with a 302 to a CDN: the Range header must survive it."""
    data = ckpt["nk"]
    server.redirects[NK] = "cdn/blob"
    server.add("cdn/blob", data, Drop(after=len(data) // 3))
    path = fetch(server, progress=True)
    assert path.read_bytes() == data
    assert [(r.path, r.range, r.status) for r in server.requests] == [
        (NK, None, 302),
        ("cdn/blob", None, 200),
        (NK, f"bytes={len(data) // 3}-", 302),
        ("cdn/blob", f"bytes={len(data) // 3}-", 206),
    ]
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(ln.startswith(f"{NK}: 100%") for ln in bar)  # one progress bar, carried across the resume


def test_file_changed_upstream_mid_download_restarts(cache: Path, server: CheckpointServer, ckpt) -> None:
    """Same size, different bytes: splicing old and new would still load, so If-Range must catch it."""
    old, new = ckpt["nk"], ckpt["nk2"]
    assert len(old) == len(new)
    server.add(NK, old, Drop(after=len(old) // 2, replace_with=new))
    path = fetch(server)
    assert path.read_bytes() == new
    assert W.recorded_sha256(path) == sha(new)
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), (f"bytes={len(old) // 2}-", 200)]


def test_existing_partial_file_is_resumed_and_hashed(cache: Path, server: CheckpointServer, ckpt) -> None:
    data = ckpt["nk"]
    cache.mkdir()
    (cache / (NK + ".part")).write_bytes(data[: len(data) // 2])
    server.add(NK, data)
    path = fetch(server)
    assert path.read_bytes() == data
    assert W.recorded_sha256(path) == sha(data)  # the hash covers the bytes that were already on disk
    assert [(r.range, r.status, r.body_bytes) for r in server.requests] == [
        (f"bytes={len(data) // 2}-", 206, len(data) - len(data) // 2)
    ]


def test_server_ignoring_range_restarts_from_scratch(cache: Path, server: CheckpointServer, ckpt) -> None:
    cache.mkdir()
    (cache / (NK + ".part")).write_bytes(b"stale bytes from some other file" * 100)
    server.honour_range = False
    server.add(NK, ckpt["nk"])
    path = fetch(server)
    assert path.read_bytes() == ckpt["nk"]
    assert W.recorded_sha256(path) == sha(ckpt["nk"])
    assert [(r.range, r.status) for r in server.requests] == [("bytes=3200-", 200)]


def test_416_with_complete_partial_is_verified_and_kept(cache: Path, server: CheckpointServer, ckpt) -> None:
    cache.mkdir()
    (cache / (NK + ".part")).write_bytes(ckpt["nk"])
    server.add(NK, ckpt["nk"])
    path = fetch(server)
    assert path.read_bytes() == ckpt["nk"]
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(ckpt['nk'])}-", 416)]


def test_416_with_oversized_partial_restarts(cache: Path, server: CheckpointServer, ckpt) -> None:
    cache.mkdir()
    (cache / (NK + ".part")).write_bytes(ckpt["nk"] + b"trailing junk")
    server.add(NK, ckpt["nk"])
    path = fetch(server)
    assert path.read_bytes() == ckpt["nk"]
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(ckpt['nk']) + 13}-", 416), (None, 200)]


def test_stalled_connection_times_out_and_resumes(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"], Stall(after=100_000, seconds=3.0))
    path = fetch(server, timeout=0.3)
    assert path.read_bytes() == ckpt["nk"]
    assert "bytes=100000-" in [r.range for r in server.requests]  # nothing received was thrown away


def test_transient_http_error_is_retried(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"], Status(503), Status(502))
    sleeps: list[float] = []
    cache.mkdir()
    downloader = D.Downloader(f"{server.url}/{NK}", cache / "x.part", desc="x", progress=False, timeout=5)
    digest, size = downloader.run(retries=3, backoff=0.5, sleep=sleeps.append)
    assert (digest, size) == (sha(ckpt["nk"]), len(ckpt["nk"]))
    assert sleeps == [0.5, 1.0]  # exponential backoff between attempts that made no progress
    assert [r.status for r in server.requests] == [503, 502, 200]


def test_gives_up_after_retries_and_keeps_partial_for_later(cache: Path, server: CheckpointServer, ckpt) -> None:
    data = ckpt["nk"]
    server.add(NK, data, Drop(after=5000), Drop(after=0), Drop(after=0), Drop(after=0))
    with pytest.raises(WeightsError, match="failed after 2 retries"):
        fetch(server, retries=2)
    assert not (cache / NK).exists()
    assert (cache / (NK + ".part")).read_bytes() == data[:5000]
    assert len(server.requests) == 4  # 1 with progress + 1 attempt + 2 retries without
    path = fetch(server)  # the server has recovered: a new run resumes where the last one stopped
    assert path.read_bytes() == data
    assert server.requests[-1].range == "bytes=5000-"


def test_bad_base_url_fails_at_once(cache: Path) -> None:
    with pytest.raises(WeightsError, match="must start with http"):
        W.fetch("nk", base_url="ftp://mirror.example/zoe", progress=False)
    assert_nothing_left(cache)


def test_http_404_fails_at_once(cache: Path, server: CheckpointServer) -> None:
    with pytest.raises(WeightsError, match="HTTP 404"):
        fetch(server)
    assert len(server.requests) == 1
    assert_nothing_left(cache)


def test_base_url_from_environment(cache: Path, server: CheckpointServer, ckpt, monkeypatch) -> None:
    server.add("ZoeD_M12_N.pt", ckpt["n"])
    monkeypatch.setenv(W.BASE_URL_ENV, server.url)
    path = W.fetch("n", progress=False)
    assert path == cache / "ZoeD_M12_N.pt" and path.read_bytes() == ckpt["n"]


# ------------------------------------------------------------------------------------------ rejection


def _garble_head(data: bytes) -> bytes:
    rng = random.Random(0)
    return bytes(rng.randrange(256) for _ in range(65536)) + data[65536:]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d[: len(d) // 2],  # truncated, served as a complete response
        _garble_head,  # right length, garbage where the archive's records start
        lambda d: b"<html><body>rate limited</body></html>",  # an error page with status 200
    ],
    ids=["truncated", "garbled", "html"],
)
def test_corrupt_download_is_rejected_and_deleted(cache: Path, server: CheckpointServer, ckpt, corrupt) -> None:
    server.add(NK, corrupt(ckpt["nk"]))
    with pytest.raises(WeightsError, match="not a usable ZoeDepth checkpoint"):
        fetch(server)
    assert_nothing_left(cache)


def test_wrong_variant_is_rejected_and_deleted(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["k"])
    with pytest.raises(WeightsError, match="is a 'k' checkpoint, expected 'nk'"):
        fetch(server)
    assert_nothing_left(cache)


def test_sha256_pin(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"])
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        fetch(server, sha256="0" * 64)
    assert_nothing_left(cache)
    with pytest.raises(WeightsError, match="invalid SHA-256"):
        fetch(server, sha256="not-a-hash")
    assert len(server.requests) == 1  # a malformed pin is refused before any download
    path = fetch(server, sha256=sha(ckpt["nk"]).upper())
    assert path.read_bytes() == ckpt["nk"]


def test_forced_refetch_checks_recorded_hash(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"])
    fetch(server)
    server.add(NK, ckpt["nk2"])  # upstream (or a mirror) now serves a different, still loadable file
    with pytest.raises(WeightsError, match="recorded"):
        fetch(server, force=True)
    assert (cache / NK).read_bytes() == ckpt["nk"]  # the good file was never replaced
    assert not (cache / (NK + ".part")).exists()
    fetch(server, force=True, sha256=sha(ckpt["nk2"]))  # an explicit pin overrides the record
    assert (cache / NK).read_bytes() == ckpt["nk2"]
    assert W.recorded_sha256(cache / NK) == sha(ckpt["nk2"])


# --------------------------------------------------------------------------------------------- verify


def test_verify_cached_and_tampered(cache: Path, server: CheckpointServer, ckpt) -> None:
    server.add(NK, ckpt["nk"])
    fetch(server)
    result = W.verify("NK")
    assert (result.variant, result.size, result.sha256, result.sha256_source, result.recorded) == (
        "nk",
        len(ckpt["nk"]),
        sha(ckpt["nk"]),
        "recorded",
        False,
    )
    (cache / NK).write_bytes(ckpt["nk2"])
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        W.verify("ZoeD_M12_NK")


def test_verify_records_hash_of_copied_in_file(cache: Path, ckpt) -> None:
    cache.mkdir()
    (cache / "ZoeD_M12_K.pt").write_bytes(ckpt["k"])
    result = W.verify("k")
    assert (result.variant, result.sha256_source, result.recorded) == ("k", None, True)
    assert W.recorded_sha256(cache / "ZoeD_M12_K.pt") == sha(ckpt["k"])
    assert W.verify("k").sha256_source == "recorded"


def test_verify_plain_path(cache: Path, tmp_path: Path, ckpt) -> None:
    own = tmp_path / "mine.pt"
    own.write_bytes(ckpt["n"])
    result = W.verify(own)
    assert (result.variant, result.sha256_source, result.recorded) == ("n", None, False)
    assert not Path(str(own) + ".sha256").exists()  # files outside the cache are never written next to
    assert W.verify(own, sha256=sha(ckpt["n"])).sha256_source == "pinned"
    misnamed = tmp_path / "ZoeD_M12_K.pt"
    misnamed.write_bytes(ckpt["n"])
    with pytest.raises(WeightsError, match="is a 'n' checkpoint, but ZoeD_M12_K is 'k'"):
        W.verify(misnamed)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(ckpt["n"][:1000])
    with pytest.raises(WeightsError, match="not a usable"):
        W.verify(broken)
    with pytest.raises(WeightsError, match="no such file"):
        W.verify(tmp_path / "absent.pt")


# -------------------------------------------------------------------------------- resolve_checkpoint


def test_resolve_checkpoint_missing_name_says_how_to_fetch(cache: Path) -> None:
    with pytest.raises(WeightsError) as info:
        W.resolve_checkpoint("ZoeD_M12_NK")
    message = str(info.value)
    assert "`zoedepth-ros-weights fetch ZoeD_M12_NK`" in message
    assert str(cache / NK) in message
    with pytest.raises(WeightsError, match="zoedepth-ros-weights fetch ZoeD_M12_K`"):
        W.resolve_checkpoint("k")


def test_resolve_checkpoint_paths_and_cached_names(cache: Path, tmp_path: Path, monkeypatch) -> None:
    cache.mkdir()
    (cache / NK).write_bytes(b"placeholder")  # resolving never loads: node startup stays fast
    assert W.resolve_checkpoint("nk") == cache / NK
    assert W.resolve_checkpoint("ZoeD_M12_NK.pt") == cache / NK
    own = tmp_path / "weights.pt"
    own.write_bytes(b"x")
    assert W.resolve_checkpoint(str(own)) == own.resolve()
    assert W.resolve_checkpoint(tmp_path) == tmp_path.resolve()  # e.g. a Hugging Face model folder
    monkeypatch.chdir(tmp_path)
    assert W.resolve_checkpoint("weights.pt") == own.resolve()
    with pytest.raises(WeightsError, match="file not found"):
        W.resolve_checkpoint(str(tmp_path / "nope.pt"))
    with pytest.raises(WeightsError, match="neither an existing path nor an official name"):
        W.resolve_checkpoint("ZoeD_M12_X")
    with pytest.raises(WeightsError, match="no checkpoint given"):
        W.resolve_checkpoint("  ")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_fetch_list_path_verify(cache: Path, server: CheckpointServer, ckpt, capsys) -> None:
    server.add(NK, ckpt["nk"])
    assert main(["path", "nk"]) == 0
    assert capsys.readouterr().out == f"{cache / NK}\n"

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out
    rows = {ln.split()[0]: ln.split()[1:3] for ln in out.splitlines() if ln.startswith("ZoeD_")}
    assert rows == {"ZoeD_M12_N": ["n", "missing"], "ZoeD_M12_K": ["k", "missing"], "ZoeD_M12_NK": ["nk", "missing"]}
    assert "zoedepth-ros-weights fetch NAME" in out

    assert main(["fetch", "ZoeD_M12_NK", "--base-url", server.url, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (f"{cache / NK}\n", "")
    assert (cache / NK).read_bytes() == ckpt["nk"]

    assert main(["list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ZoeD_M12_NK"))
    assert line.split()[:3] == ["ZoeD_M12_NK", "nk", "present"]
    assert sha(ckpt["nk"])[:16] in line

    assert main(["verify", "NK"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {cache / NK}: variant 'nk'") and "matches the recorded hash" in out


def test_cli_errors_are_one_line(cache: Path, server: CheckpointServer, ckpt, tmp_path: Path, capsys) -> None:
    server.add(NK, ckpt["nk"])
    assert main(["fetch", "nk", "--base-url", server.url, "-q", "--sha256", "1" * 64]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zoedepth-ros-weights: error:") and "SHA-256 mismatch" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert_nothing_left(cache)

    assert main(["verify", "ZoeD_M12_K"]) == 1
    err = capsys.readouterr().err
    assert "zoedepth-ros-weights fetch ZoeD_M12_K" in err and err.count("\n") == 1

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["verify", str(bad)]) == 1
    assert "not a usable ZoeDepth checkpoint" in capsys.readouterr().err

    assert main(["path", "ZoeD_M13"]) == 1
    assert "unknown checkpoint name" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2  # argparse usage error
    assert main(["fetch", "nk", "--retries", "many"]) == 2
    assert os.listdir(cache) == []
