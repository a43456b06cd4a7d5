"""CUDA-only checks of the GPU paths: CUDA graphs, torch.compile, pinned uploads, the copy stream, bf16 islands.

Skipped without a GPU (CI has none). On a GPU machine: ``python -m pytest -q test/test_cuda.py`` (no ROS needed).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model

from zoedepth_ros.engine.accuracy import guard, probe_images, reference_results, settled
from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.pipeline import DepthPipeline, Settings
from zoedepth_ros.engine.runtime import DepthRunner
from zoedepth_ros.engine.transfer import IN_FLIGHT
from zoedepth_ros.model import set_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
H, W = 48, 64
INTR = Intrinsics(fx=50.0, fy=52.0, cx=31.5, cy=23.5, width=W, height=H)


def frame(seed: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    return (255 * np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + seed)], axis=-1)).astype(np.uint8)


@pytest.fixture
def model():
    return tiny_model("nk", seed=3).to(CUDA)


@pytest.mark.parametrize("mode", ["cuda_graph", "compile"])
def test_graph_modes_equal_eager_on_every_replay(model, mode):
    eager = DepthRunner(model, CUDA)
    images = probe_images(H, W, device=CUDA)
    expected = [settled(eager(x, pad_input=True, flip_aug=True)) for x in images]
    fast = DepthRunner(tiny_model("nk", seed=3).to(CUDA), CUDA, mode=mode, channels_last=True)
    for _ in range(2):  # replays with changing inputs: the static input buffer is refilled each time
        for x, ref in zip(images, expected, strict=True):
            out = fast(x, pad_input=True, flip_aug=True)
            assert out.heads == ref.heads
            torch.testing.assert_close(out.depth, ref.depth, rtol=1e-4, atol=1e-5)
    assert len(fast._graphs) == 1


def test_warmup_captures_before_the_first_frame(model):
    runner = DepthRunner(model, CUDA, mode="cuda_graph")
    runner.warmup(H, W, pad_input=True, flip_aug=False)
    assert len(runner._graphs) == 1
    runner(probe_images(H, W, device=CUDA)[0], pad_input=True, flip_aug=False)
    assert len(runner._graphs) == 1
    runner(probe_images(H, W, device=CUDA)[0], pad_input=True, flip_aug=False, head="kitti")
    assert len(runner._graphs) == 2  # a forced head is its own graph


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_graphs_pass_the_guard(model, precision):
    images = probe_images(H, W, device=CUDA)
    reference = reference_results(model, images)
    fast = DepthRunner(set_precision(tiny_model("nk", seed=3).to(CUDA), precision), CUDA, mode="cuda_graph")
    report = guard(reference, lambda x: settled(fast(x)), images, fast.describe())
    assert report.routing_identical and report.mean_rel_diff < 0.01, report


def test_cuda_pipeline_equals_cpu_pipeline_with_frames_in_flight(model):
    cpu = DepthPipeline(DepthRunner(tiny_model("nk", seed=3), CPU), CPU)
    gpu = DepthPipeline(DepthRunner(model, CUDA, mode="cuda_graph"), CUDA)
    settings = Settings(color=True)
    inflight = [gpu.submit(frame(i), "rgb8", INTR, settings) for i in range(IN_FLIGHT)]
    for i, f in enumerate(inflight):
        got = f.result()
        want = cpu.run(frame(i), "rgb8", INTR, settings)
        np.testing.assert_allclose(
            np.frombuffer(got.depth, "<f4"), np.frombuffer(want.depth, "<f4"), rtol=1e-4, atol=1e-5, equal_nan=True
        )
        assert got.head == want.head and len(got.cloud) == len(want.cloud)
        got_rgb = np.frombuffer(got.cloud, np.uint8).reshape(H, W, 32)[..., 16:19]
        np.testing.assert_array_equal(got_rgb, np.frombuffer(want.cloud, np.uint8).reshape(H, W, 32)[..., 16:19])


def test_submit_waits_when_every_slot_is_in_flight(model):
    gpu = DepthPipeline(DepthRunner(model, CUDA), CUDA)
    held = [gpu.submit(frame(i), "rgb8", INTR, Settings()) for i in range(IN_FLIGHT)]
    done = threading.Event()
    extra = []

    def submit_one_more():
        extra.append(gpu.submit(frame(9), "rgb8", INTR, Settings()))
        done.set()

    t = threading.Thread(target=submit_one_more)
    t.start()
    assert not done.wait(1.0)  # blocked: both pinned slots are still owned by unread frames
    held[0].result()
    assert done.wait(30.0)
    t.join()
    assert extra[0].result().height == H and held[1].result().height == H


@pytest.mark.parametrize("mode", ["eager", "cuda_graph"])
def test_a_batch_of_frames_on_the_gpu_equals_each_frame_alone(model, mode):
    """Per-image routing in one forward (and one captured graph per batch size) on the device."""
    from zoedepth_ros.engine import Engine
    from zoedepth_ros.engine.pipeline import FrameInput

    engine = Engine.build(model, CUDA, "fp32", mode)
    frames = [FrameInput(frame(i), "rgb8", INTR, Settings(colormap=i % 2 == 0)) for i in range(4)]
    for _ in range(2):  # the second round replays both graphs
        together = engine.run_batch(frames)
        alone = [engine.run(f.raw, f.encoding, f.intrinsics, f.settings) for f in frames]
        for a, b in zip(together, alone, strict=True):
            assert a.head == b.head
            depth_a, depth_b = (np.frombuffer(x.depth, dtype="<f4") for x in (a, b))
            np.testing.assert_allclose(depth_a, depth_b, rtol=0, atol=1e-5, equal_nan=True)
    if mode == "cuda_graph":
        assert sorted(k.shape[0] for k in engine.runner._graphs) == [1, 4]


def _ort_modes() -> list[str]:
    try:
        from zoedepth_ros.engine.onnx.session import available_modes

        return [m for m in available_modes() if m != "ort_cpu"]
    except Exception:
        return []


@pytest.mark.parametrize("mode", ["ort_cuda", "ort_tensorrt"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_gpu_providers_equal_torch_with_device_tensors(model, mode, precision, tmp_path):
    """I/O binding on the GPU: the frame and the outputs stay torch CUDA tensors; depth within the guard."""
    if mode not in _ort_modes():
        pytest.skip(f"this onnxruntime has no {mode} (onnxruntime-gpu, and TensorRT's libraries for TensorRT)")
    from zoedepth_ros.engine.onnx.runner import OrtRunner
    from zoedepth_ros.engine.onnx.session import SessionSettings

    runner = OrtRunner(
        model,
        CUDA,
        mode=mode,
        precision=precision,
        weights_id=lambda: "test",
        settings=SessionSettings(cache_root=tmp_path),
    )
    images = probe_images(H, W, device=CUDA)
    reference = reference_results(model, images, pad_input=True, flip_aug=True)
    for x, ref in zip(images, reference, strict=True):
        out = runner(x, pad_input=True, flip_aug=True)
        assert out.depth.device.type == "cuda" and out.head_indices.device.type == "cuda"
        assert out.heads == ref.heads
        if precision == "fp32":
            torch.testing.assert_close(out.depth, ref.depth, rtol=0, atol=1e-4)
    report = guard(reference, lambda x: settled(runner(x, pad_input=True, flip_aug=True)), images, runner.describe())
    assert report.passed, report
    if mode == "ort_tensorrt":
        assert any((tmp_path / "tensorrt").rglob("*")), "no TensorRT engine cache written"
