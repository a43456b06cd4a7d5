"""zoedepth-ros-bench end to end on the CPU with a tiny model, and the target verdicts on hand-made reports."""

from __future__ import annotations

import json

import pytest

from zoedepth_ros.benchmarks import targets
from zoedepth_ros.tools import bench


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    sections = "model,paths,host" + (",e2e" if _has_rclpy() else "")
    code = bench.main(
        [
            "--random",
            "tiny-nk",
            "--device",
            "cpu",
            "--sizes",
            "640x480",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--host-iters",
            "5",
            "--sections",
            sections,
            "--e2e-size",
            "64x48",
            "--e2e-rate",
            "10",
            "--e2e-duration",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    return json.loads(out.read_text())


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _has_rclpy() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def test_model_rows_time_and_guard_every_mode(report):
    rows = report["model"]["rows"]
    assert {(r["precision"], r["mode"]) for r in rows} == {("fp32", "eager"), ("bf16", "eager")}
    for r in rows:
        lat = r["latency"]
        assert lat["n"] == 2 and 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["max_ms"]
        assert r["throughput_fps"] == pytest.approx(1e3 / lat["mean_ms"])
        assert len(r["guard"]["per_image"]) == 3
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    assert fp32["guard"]["passed"] and fp32["guard"]["mean_rel_diff"] == 0.0  # fp32 eager is the reference


def test_paths_report_speedups_against_both_references(report):
    (entry,) = report["paths"]["sizes"]
    assert (entry["width"], entry["height"]) == (640, 480)
    references = ["official_defaults_fp32"]
    if _has_transformers():  # an optional extra (.[test]); without it the section says why it has no such row
        references.append("transformers_default")
    else:
        assert "transformers" in entry["transformers_default"]["skipped"]
    for name in references:
        assert entry["speedup"][name] == pytest.approx(entry[name]["p50_ms"] / entry["ours"]["p50_ms"])
    # two forward passes (flip) against one: the official defaults cannot be faster than ours in the same mode
    if entry["ours_mode"] == "fp32 eager":
        assert entry["speedup"]["official_defaults_fp32"] > 1.2


def test_host_and_targets(report):
    host = report["host"]["sizes"]["640x480"]
    assert host["cloud"]["threads"] == 1
    verdicts = {t["target"]: t for t in report["targets"]}
    assert len(verdicts) == 8
    gpu = [t for t in report["targets"] if "H100" in t["note"]]
    assert gpu and all(t["passed"] is None for t in gpu)  # a CPU run with a tiny model is not judged
    pack = verdicts["cloud packing 640x480 xyzrgb, one CPU core"]
    assert pack["measured"] == host["cloud"]["xyzrgb"]["pack"]["p50_ms"]
    assert pack["passed"] == (pack["measured"] <= targets.CLOUD_PACK_MS)
    assert report["environment"]["device"] == "cpu" and report["environment"]["tiny"]


def test_end_to_end_section(report):
    if not _has_rclpy():
        pytest.skip("ROS 2 (rclpy) is needed for the end-to-end section")
    e2e = report["end_to_end"]
    assert "error" not in e2e, e2e
    assert 0 < e2e["depth"]["received"] <= e2e["published_measured"]
    assert e2e["depth"]["p50_ms"] > 0


def _h100_report(latency, official, p50, p99, rate, other_drops):
    row = {
        "height": 384,
        "width": 512,
        "scope": "network",
        "precision": "bf16",
        "mode": "cuda_graph",
        "latency": {"p50_ms": latency},
        "guard": {"passed": True},
    }
    return {
        "environment": {"device_name": "NVIDIA H100 80GB HBM3", "variant": "nk", "tiny": False},
        "model": {"rows": [row]},
        "paths": {"sizes": [{"height": 480, "width": 640, "speedup": {"official_defaults_fp32": official}}]},
        "end_to_end": {
            "width": 640,
            "rate_hz": 60.0,
            "depth": {"p50_ms": p50, "p99_ms": p99, "rate_hz": rate},
            "dropped": {"latest_frame_rule": 3, "other": {"dropped (error)": other_drops}},
        },
        "host": {
            "sizes": {
                "640x480": {
                    "total_ms": {"xyz": 2.5, "xyz_gpu_cloud": 1.0},
                    "cloud": {"xyzrgb": {"pack": {"p50_ms": 1.4}}},
                }
            }
        },
    }


def test_targets_pass_and_fail_on_an_h100_report():
    good = {t["target"]: t["passed"] for t in targets.check(_h100_report(4.0, 12.0, 10.0, 18.0, 59.9, 0))}
    assert all(good.values()), good
    bad = targets.check(_h100_report(7.0, 5.0, 13.0, 25.0, 40.0, 2))
    failed = {t["target"] for t in bad if t["passed"] is False}
    assert len(failed) == 5 and all(
        "model latency" in t or "end to end" in t or "speed-up" in t or "60 Hz" in t for t in failed
    )
