"""``zoedepth-ros-demo``: demo camera + node + a monitor that shows depth and a cloud flowing."""

from __future__ import annotations

import os
import subprocess

import pytest

try:
    import rclpy
except ImportError:  # a venv without ROS: the tests below skip
    rclpy = None

pytestmark = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the demo")


def run_demo(args: list[str]) -> subprocess.CompletedProcess:
    from ros_graph import run_module

    return run_module("zoedepth_ros.tools.demo", args, 30 + os.getpid() % 10)


def test_demo_shows_depth_and_a_cloud_flowing(tiny_checkpoint):
    result = run_demo(
        [
            "--checkpoint",
            str(tiny_checkpoint("nk")),
            "--device",
            "cpu",
            "--size",
            "160x120",
            "--rate",
            "5",
            "--seconds",
            "10",
            "--",
            "-p",
            "point_cloud.decimation:=2",
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = [line for line in result.stdout.splitlines() if "so far;" in line][-1]
    assert "depth/image" in last and "160x120" in last and " m)" in last
    assert "points" in last and "4800 points, frame camera_optical_frame" in last  # 80x60: decimated by 2


def test_demo_fails_when_the_node_cannot_start(tmp_path):
    result = run_demo(["--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu", "--seconds", "30"])
    assert result.returncode == 1
    assert "checkpoint file not found" in result.stderr and "the zoedepth node exited" in result.stderr
