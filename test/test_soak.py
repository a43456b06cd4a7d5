"""The soak benchmark: its arithmetic by hand, and a short real run that reports every figure."""

from __future__ import annotations

import json
import math

import pytest

from zoedepth_ros.benchmarks.soak import ProcSample, floor_slope_per_min, latency_windows, proc_sample, slope_per_min

try:
    import rclpy
except ImportError:  # a venv without ROS: the run below skips
    rclpy = None


def test_slope_is_least_squares_in_mb_per_minute():
    samples = [
        ProcSample(t, 100 + 0.01 * t + (0.5 if i % 2 else -0.5), 10, 5) for i, t in enumerate(range(0, 600, 10))
    ]  # 0.6 MB/min plus alternating noise
    assert slope_per_min(samples) == pytest.approx(0.6, abs=0.02)
    assert math.isnan(slope_per_min(samples[:1]))


def test_floor_slope_ignores_allocator_churn_but_not_a_leak():
    churn = [ProcSample(t, 500 + (150 if (t // 10) % 3 == 1 else 0), 10, 5) for t in range(0, 1800, 10)]
    churn[-3] = ProcSample(churn[-3].t, 650, 10, 5)  # a peak late in the run moves least squares, not the floor
    assert abs(floor_slope_per_min(churn)) < 1e-9
    leak = [ProcSample(s.t, s.rss_mb + 1.0 * s.t / 60, 10, 5) for s in churn]  # + 1 MB/min
    assert floor_slope_per_min(leak) == pytest.approx(1.0, abs=0.05)


def test_latency_windows_take_the_first_and_last_window():
    arrivals = [(float(t), float(t)) for t in range(100)]
    windows = latency_windows(arrivals, start=10, end=100, window=10)
    assert windows["first"]["n"] == 10 and windows["first"]["p50_ms"] == 14.0
    assert windows["last"]["n"] == 10 and windows["last"]["p99_ms"] == 99.0


def test_proc_sample_reads_this_process():
    import os

    s = proc_sample(os.getpid(), 1.0)
    assert s.rss_mb > 10 and s.fds >= 3 and s.threads >= 1


@pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the soak run")
def test_short_soak_reports_every_figure(tmp_path, capsys):
    from zoedepth_ros.tools.soak import main

    out = tmp_path / "soak.json"
    assert (
        main(
            [
                "--random",
                "tiny-nk",
                "--minutes",
                "0.3",
                "--warmup-minutes",
                "0.1",
                "--window-minutes",
                "0.05",
                "--rate",
                "2",
                "--size",
                "160x120",
                "--sample-seconds",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    rows = (
        "RSS slope after warm-up",
        "RSS floor slope",
        "second half",
        "open fds / threads",
        "latency p50/p99, last window",
        "drops by reason",
    )
    for row in rows:
        assert row in text
    report = json.loads(out.read_text())
    assert report["depth_images"] > 5 and report["frames_processed"] > 5
    assert math.isfinite(report["rss_slope_mb_per_min"]) and report["fds"]["end"] > 0
    assert len(report["samples"]) >= 10
    assert report["latency_ms"]["first"]["n"] > 0 and report["unexplained_drops"] == 0
