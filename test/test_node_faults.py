"""Device failures in the running node over DDS: frames dropped and counted, then one rung down the ladder."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

try:
    import rclpy
    from test_node_dds import DOMAIN_ID, Graph, diagnostics, rgb_image
except ImportError:  # a venv without ROS: the tests below skip
    rclpy = None

from zoedepth_ros.benchmarks.isolation import ros_args
from zoedepth_ros.model import load

pytestmark = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the node tests")

DOMAIN = (DOMAIN_ID + 9) if rclpy is not None else 0


def test_out_of_memory_frames_are_dropped_then_the_node_steps_down(tiny_checkpoint, tmp_path, monkeypatch):
    import subprocess

    from ros_graph import REPO, stop_node, use_domain

    use_domain(monkeypatch, DOMAIN)
    monkeypatch.setenv("ZOEDEPTH_TEST_OOM_FRAMES", "3")  # read by fault_node.py in the node's process
    log = tmp_path / "node.log"
    params = {
        "checkpoint": tiny_checkpoint("nk"),
        "device": "cpu",
        "precision": "bf16",
        "execution": "eager",
        "warmup": False,
        "routing": "indoor",
    }
    with open(log, "wb") as out:
        node = subprocess.Popen(
            [sys.executable, str(REPO / "test" / "fault_node.py"), *ros_args(params)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    graph = Graph()
    try:
        graph.wait_for_node(node, log)
        pixels = rgb_image(3)
        msg = graph.request(pixels, 1_700_004_000_000_000_000)  # re-sent until one comes through
        graph.wait(
            lambda: diagnostics(graph).get("execution rung", "").startswith("fp32 eager"),
            "diagnostics naming the new rung",
            10,
        )
        d = diagnostics(graph)
        assert int(d["dropped (out_of_memory)"]) == 3 and int(d["device failures (out_of_memory)"]) == 3
        assert "out of memory" in d["execution rung reason"].lower() and d["precision"] == "fp32"
        rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        expected = load(tiny_checkpoint("nk")).predict(rgb, pad_input=True, flip_aug=False, head="nyu").depth
        depth = np.frombuffer(msg.data, dtype="<f4").reshape(msg.height, msg.width)
        np.testing.assert_allclose(depth, expected[0, 0].numpy(), rtol=1e-5, atol=1e-6)  # fp32 now
        text = log.read_text()
        assert text.count("falling back to fp32 eager") == 1 and "Traceback" not in text
        assert node.poll() is None
    finally:
        graph.close()
        stop_node(node)
