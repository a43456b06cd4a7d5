"""zoedepth-ros-bench --sections cameras with a tiny model on the CPU, and its memory target on hand-made rows."""

from __future__ import annotations

import json

import pytest

from zoedepth_ros.benchmarks.cameras import CamerasConfig, memory_target, render
from zoedepth_ros.tools import bench

try:
    import rclpy
except ImportError:
    rclpy = None


def row(layout: str, cameras: int, rss: float, device: float | None = None) -> dict:
    per_camera = {f"cam{i}": {"p50_ms": 10.0 + i, "p99_ms": 20.0 + i, "rate_hz": 5.0} for i in range(cameras)}
    return {
        "layout": layout,
        "cameras": cameras,
        "nodes": 1 if layout == "shared" else cameras,
        "aggregate_rate_hz": 5.0 * cameras,
        "per_camera": per_camera,
        "rss_mb": rss,
        "rss_peak_mb": rss + 1,
        "device_reserved_mb": device,
        "batch_sizes_seen": "1 (3), 2 (4)" if layout == "shared" and cameras > 1 else None,
    }


def test_memory_target_compares_the_largest_shared_node_with_one_single_camera_node():
    rows = [row("shared", 1, 1000.0, 2000.0), row("shared", 4, 1200.0, 2600.0), row("separate", 4, 4000.0, 8000.0)]
    target = memory_target(rows)
    assert target["ratios"] == pytest.approx({"rss": 1.2, "device": 1.3})
    assert target["passed"] is False  # device memory fails it
    assert target["measured"] == "rss 1.20x, device 1.30x (peak rss 1.20x)"  # peaks 1201 / 1001 MB
    assert "one 4-camera node <= 1.25x" in target["target"]
    assert memory_target(rows[:1])["passed"] is None  # nothing to compare with
    worst = render({"rows": rows})[1]
    assert worst[:6] == ["shared", 4, 1, 20.0, 13.0, 23.0]  # the slowest camera's p50 and p99


def test_bad_configurations():
    with pytest.raises(ValueError, match=r"camera counts must be 1\.\.16"):
        CamerasConfig(counts=(0, 2))
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--cameras-counts", "1,x"])


@pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the cameras section")
@pytest.mark.timeout(300)
def test_cameras_section_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--random", "tiny-nk", "--device", "cpu", "--sections", "cameras", "--e2e-size", "64x48"]
    args += ["--cameras-counts", "1,2", "--cameras-rate", "5", "--cameras-duration", "2", "--json", str(out)]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())["cameras"]
    layouts = [(r["layout"], r["cameras"], r["nodes"]) for r in report["rows"]]
    assert layouts == [("shared", 1, 1), ("shared", 2, 1), ("separate", 2, 2)]
    for r in report["rows"]:
        assert set(r["per_camera"]) == {f"cam{i}" for i in range(r["cameras"])}
        assert all(c["n"] > 0 and c["p50_ms"] > 0 for c in r["per_camera"].values())
        assert 0 < r["aggregate_rate_hz"] <= 5.0 * r["cameras"] * 1.5 and r["rss_mb"] > 100
    separate, shared = report["rows"][2], report["rows"][1]
    assert separate["rss_mb"] > shared["rss_mb"]  # two models in two processes
    assert shared["batch_sizes_seen"]
    assert report["target"]["target"].startswith("one 2-camera node <= 1.25x")
    printed = capsys.readouterr().out
    assert "(f) 64x48 cameras at 5 Hz each" in printed and "one 2-camera node" in printed
