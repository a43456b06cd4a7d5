"""The node's precision / execution parameters: a reduced-precision model on the CPU, and modes it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import test_node_dds
import torch
from ros_graph import REPO, isolated_ros_env, start_node, stop_node, use_domain
from test_node_dds import DOMAIN_ID, Graph, diagnostics, rgb_image

from zoedepth_ros.model import load, set_precision

pytestmark = test_node_dds.pytestmark  # skipped, with the reason, where test_node_dds is

DOMAIN = DOMAIN_ID + 2  # its own domain: never sees the other modules' nodes


@contextmanager
def running_node(params: dict, domain: int, log, extra_env: dict | None = None, timeout: float = 90.0):
    """A node process with ``params`` on its own domain, and our Graph on it, until the block ends."""
    mp = pytest.MonkeyPatch()
    env = {**use_domain(mp, domain), **(extra_env or {})}
    proc = start_node(params, env, log)
    graph = Graph()
    try:
        graph.wait_for_node(proc, log, timeout=timeout)
        yield graph
    finally:
        graph.close()
        stop_node(proc)
        mp.undo()


@pytest.fixture(scope="module")
def bf16_node(tiny_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("node_bf16") / "node.log"
    params = {
        "checkpoint": tiny_checkpoint("nk"),
        "device": "cpu",
        "precision": "bf16",
        "execution": "eager",
        "routing": "indoor",
    }
    with running_node(params, DOMAIN, log) as graph:
        yield graph, log


def test_bf16_node_publishes_the_bf16_models_depth(bf16_node, tiny_checkpoint):
    graph, log = bf16_node
    pixels = rgb_image(7)
    msg = graph.request(pixels, 1_700_000_100_000_000_000)
    depth = np.frombuffer(msg.data, dtype="<f4").reshape(msg.height, msg.width)
    rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    fp32 = load(tiny_checkpoint("nk"))
    reference = fp32.predict(rgb, pad_input=True, flip_aug=False, head="nyu").depth[0, 0].numpy()
    bf16 = set_precision(load(tiny_checkpoint("nk")), "bf16")
    expected = bf16.predict(rgb, pad_input=True, flip_aug=False, head="nyu").depth[0, 0].numpy()
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(depth, reference, rtol=1e-6, atol=0)  # it really ran in bf16
    graph.wait(lambda: diagnostics(graph).get("precision") == "bf16", "diagnostics naming the precision")
    assert diagnostics(graph)["execution"] == "eager"
    assert "(bf16 eager)" in log.read_text()


def test_cuda_graphs_on_a_cpu_node_stop_it_with_a_reason(tiny_checkpoint):
    env = {**os.environ, **isolated_ros_env(DOMAIN + 1)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoedepth_ros.ros.node",
            "--ros-args",
            "-p",
            "device:=cpu",
            "-p",
            f"checkpoint:={tiny_checkpoint('nk')}",
            "-p",
            "execution:=cuda_graph",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "execution cuda_graph needs a CUDA device" in result.stderr


@pytest.fixture(scope="module")
def onnx_node(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="backend onnxruntime needs onnxruntime (the test extra installs it)")
    pytest.importorskip("onnxscript", reason="exporting needs onnxscript (the test extra installs it)")
    cache = tmp_path_factory.mktemp("onnx_cache")
    log = tmp_path_factory.mktemp("node_onnx") / "node.log"
    params = {
        "checkpoint": tiny_checkpoint("nk"),
        "device": "cpu",
        "precision": "fp32",
        "execution": "eager",
        "backend": "onnxruntime",
    }
    # two exports before it subscribes: the guard's probe size and the camera's
    with running_node(params, DOMAIN + 1, log, {"ZOEDEPTH_ROS_CACHE": str(cache)}, timeout=240) as graph:
        yield graph, log, cache


@pytest.mark.timeout(600)
def test_onnxruntime_node_publishes_the_torch_models_depth(onnx_node, tiny_checkpoint):
    graph, log, cache = onnx_node
    model = load(tiny_checkpoint("nk"))
    for seed, stamp in ((7, 1_700_000_200_000_000_000), (8, 1_700_000_201_000_000_000)):
        pixels = rgb_image(seed)
        msg = graph.request(pixels, stamp)
        depth = np.frombuffer(msg.data, dtype="<f4").reshape(msg.height, msg.width)
        rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        expected = model.predict(rgb, pad_input=True, flip_aug=False).depth[0, 0].numpy()
        np.testing.assert_allclose(depth, expected, rtol=0, atol=1e-4)
    graph.wait(
        lambda: diagnostics(graph).get("backend", "").startswith("onnxruntime"), "diagnostics naming the backend"
    )
    diag = diagnostics(graph)
    assert diag["backend"] == "onnxruntime (CPUExecutionProvider)" and diag["execution"] == "ort_cpu"
    assert diag["fallbacks"] == "0"
    height, width = rgb_image(7).shape[:2]
    files = sorted(p.name for p in (cache / "onnx").glob("*.onnx"))
    assert any(name.startswith(f"nk_{width}x{height}_b1_pad_noflip_auto_fp32_") for name in files), files
    assert "accuracy guard fp32 ort_cpu: passed" in log.read_text()
