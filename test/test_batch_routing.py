"""Batches of independent frames: per-image routing, and each frame's outputs equal to a batch of one.

The references are the single-image paths (the official one for the model; ``Engine.run`` for frames); the
routers of the tiny random model are balanced so that a batch really mixes the indoor and the outdoor head.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from model_fixtures import randomize_

from zoedepth_ros.engine import Engine
from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.ladder import Rung
from zoedepth_ros.engine.pipeline import FrameError, FrameInput, Settings, batch_key
from zoedepth_ros.engine.runtime import DepthRunner
from zoedepth_ros.model import ZoeDepth, tiny_config

CPU = torch.device("cpu")
H, W = 48, 64
TOL = 1e-5  # metres


def scene(seed: int, height: int = H, width: int = W) -> torch.Tensor:
    """(1, 3, H, W) RGB in [0, 1] with per-seed structure (smooth, so the depth is not noise)."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    a, b, c = (torch.rand(3, generator=gen) * 6).tolist()
    planes = [0.5 + 0.5 * torch.sin(a * xs + b * ys + k * c) for k in range(3)]
    return torch.stack(planes)[None] * (0.3 + 0.7 * torch.rand(1, generator=gen))


@pytest.fixture(scope="module")
def balanced():
    """An NK model whose router splits a set of scenes between the heads, and the scenes of each head."""
    torch.manual_seed(5)  # a small network size keeps the many forwards here quick; batching does not depend on it
    model = randomize_(ZoeDepth(replace(tiny_config("nk"), net_size=(96, 128))), seed=5).eval()
    scenes = [scene(s) for s in range(24)]
    with torch.no_grad():
        margins = torch.cat([model(x).head_logits for x in scenes])
        margin = margins[:, 0] - margins[:, 1]
        model.mlp_classifier[-1].bias[1] += float(margin.median())  # half the scenes to each head
    by_head: dict[str, list[torch.Tensor]] = {"nyu": [], "kitti": []}
    for x in scenes:
        by_head[model.predict(x, flip_aug=False).heads[0]].append(x)
    assert len(by_head["nyu"]) >= 2 and len(by_head["kitti"]) >= 2, {k: len(v) for k, v in by_head.items()}
    return model, by_head


def mixed(by_head) -> tuple[torch.Tensor, list[str]]:
    """A batch of four: indoor, outdoor, outdoor, indoor."""
    images = [by_head["nyu"][0], by_head["kitti"][0], by_head["kitti"][1], by_head["nyu"][1]]
    return torch.cat(images), ["nyu", "kitti", "kitti", "nyu"]


@pytest.mark.parametrize("route_on_device", [False, True], ids=["host-routed (eager)", "device-routed (graphs)"])
@pytest.mark.parametrize("flip_aug", [False, True], ids=["no-flip", "flip"])
def test_each_image_of_a_batch_gets_its_own_head_and_its_single_image_depth(balanced, route_on_device, flip_aug):
    model, by_head = balanced
    batch, heads = mixed(by_head)
    out = model.predict(batch, pad_input=True, flip_aug=flip_aug, route_on_device=route_on_device, per_image=True)
    passes = 2 if flip_aug else 1
    assert out.head_indices.shape == (passes, 4)
    for i, expected_head in enumerate(heads):
        alone = model.predict(batch[i : i + 1], pad_input=True, flip_aug=flip_aug)  # the official path
        assert out.image_heads(i) == alone.heads
        assert alone.heads[0] == expected_head
        torch.testing.assert_close(out.depth[i : i + 1], alone.depth, rtol=0, atol=TOL)
        torch.testing.assert_close(out.head_logits[0][i : i + 1], alone.head_logits[0], rtol=0, atol=1e-5)


def test_without_per_image_routing_the_batch_shares_one_head_as_upstream(balanced):
    model, by_head = balanced
    batch, heads = mixed(by_head)
    out = model.predict(batch, flip_aug=False)
    assert len(set(out.head_indices[0].tolist())) == 1  # one decision for the batch
    shared = out.heads[0]
    for i in range(len(heads)):
        forced = model.predict(batch[i : i + 1], flip_aug=False, head=shared)
        torch.testing.assert_close(out.depth[i : i + 1], forced.depth, rtol=0, atol=TOL)
    assert {own for own in heads} == {"nyu", "kitti"}  # so per-image routing changes some images' head


def test_a_forced_head_applies_to_every_image(balanced):
    model, by_head = balanced
    batch, _ = mixed(by_head)
    out = model.predict(batch, flip_aug=False, head="outdoor", per_image=True)
    assert out.forced and all(out.image_heads(i) == ("kitti",) for i in range(4))
    for i in range(4):
        alone = model.predict(batch[i : i + 1], flip_aug=False, head="kitti")
        torch.testing.assert_close(out.depth[i : i + 1], alone.depth, rtol=0, atol=TOL)


def as_raw(x: torch.Tensor, encoding: str) -> np.ndarray:
    """The camera buffer an encoding would carry for the RGB image ``x`` (quantised to 8 bits)."""
    rgb = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "mono8":
        return np.ascontiguousarray(rgb[..., :1])
    raise AssertionError(encoding)


def intrinsics(k: int, height: int = H, width: int = W) -> Intrinsics:
    return Intrinsics(
        fx=40.0 + 5 * k, fy=41.0 + 5 * k, cx=width / 2 - 0.5 + k, cy=height / 2 - 0.5, width=width, height=height
    )


@pytest.fixture(scope="module")
def engine(balanced):
    model, _ = balanced
    return Engine.build(model, CPU, "fp32", "eager")


def batch_frames(by_head) -> list[FrameInput]:
    """Four cameras of one size: mixed heads, encodings, intrinsics and output settings."""
    batch, _ = mixed(by_head)
    outputs = [
        Settings(color=True),
        Settings(points=False, colormap=True, max_depth=3.0),
        Settings(decimation=2, output_scale=0.5),
        Settings(colormap=True, min_depth=0.5),
    ]
    encodings = ["rgb8", "bgr8", "mono8", "rgb8"]
    return [
        FrameInput(as_raw(batch[i : i + 1], enc), enc, intrinsics(i), s)
        for i, (enc, s) in enumerate(zip(encodings, outputs, strict=True))
    ]


def depth_of(frame) -> np.ndarray:
    return np.frombuffer(frame.depth, dtype="<f4").reshape(frame.height, frame.width)


def test_a_batch_of_cameras_equals_each_camera_alone(engine, balanced):
    _, by_head = balanced
    frames = batch_frames(by_head)
    assert len({batch_key(f) for f in frames}) == 1
    together = engine.run_batch(frames)
    assert {f.head for f in together} == {"nyu", "kitti"}  # a batch that mixes the heads
    for frame, got in zip(frames, together, strict=True):
        alone = engine.run(frame.raw, frame.encoding, frame.intrinsics, frame.settings)
        assert (got.height, got.width, got.intrinsics) == (alone.height, alone.width, alone.intrinsics)
        np.testing.assert_allclose(depth_of(got), depth_of(alone), rtol=0, atol=TOL, equal_nan=True)
        assert np.array_equal(np.isnan(depth_of(got)), np.isnan(depth_of(alone)))
        assert (got.head, got.domain, got.forced) == (alone.head, alone.domain, alone.forced)
        np.testing.assert_allclose(got.logits, alone.logits, rtol=0, atol=1e-5)
        assert got.probability == pytest.approx(alone.probability, abs=1e-6)
        assert (got.cloud is None) == (alone.cloud is None) and (got.colormap is None) == (alone.colormap is None)
        if got.cloud is not None:
            assert (got.cloud_height, got.cloud_width) == (alone.cloud_height, alone.cloud_width)
            a, b = (np.frombuffer(c.cloud, dtype="<f4") for c in (got, alone))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=TOL, equal_nan=True)
        if got.colormap is not None:
            a, b = (np.frombuffer(c.colormap, dtype=np.uint8).astype(int) for c in (got, alone))
            assert np.abs(a - b).max() <= 1  # a 1e-5 m difference may round one colour step
    assert engine.status()["batch_sizes"][4] >= 1
    assert "4 (" in engine.diagnostics()["batch sizes seen"]


def test_a_bad_frame_is_named_by_its_index_and_mixed_sizes_are_refused(engine, balanced):
    _, by_head = balanced
    frames = batch_frames(by_head)
    wrong_intrinsics = FrameInput(frames[1].raw, "rgb8", intrinsics(1, height=H + 2), Settings())
    with pytest.raises(FrameError, match="CameraInfo is for 64x50") as e:
        engine.submit_batch([frames[0], wrong_intrinsics, frames[2]])
    assert e.value.index == 1
    bad_encoding = FrameInput(frames[1].raw, "rgb16x", frames[1].intrinsics, Settings())
    with pytest.raises(FrameError, match="unsupported encoding") as e:
        engine.submit_batch([frames[0], frames[2], bad_encoding])
    assert e.value.index == 2
    wrong_channels = FrameInput(frames[1].raw, "mono8", frames[1].intrinsics, Settings())
    with pytest.raises(FrameError, match="1 channel"):
        engine.submit_batch([wrong_channels])
    other_size = FrameInput(as_raw(scene(1, H, W + 16), "rgb8"), "rgb8", intrinsics(0, width=W + 16), Settings())
    with pytest.raises(ValueError, match="share image size"):
        engine.submit_batch([frames[0], other_size])
    engine.run_batch(frames[:2])  # the engine is unharmed


def test_warm_up_plans_each_batch_size_once(balanced):
    model, _ = balanced
    calls = []

    class Counting(DepthRunner):
        def warmup(self, height, width, **kw):
            calls.append((kw["batch"], height, width))
            super().warmup(height, width, **kw)

    engine = Engine.build(model, CPU, "fp32", "eager", runner_factory=Counting)
    engine.expect(H, W, Settings(), batch_sizes=(1, 2))
    engine.expect(H, W, Settings(), batch_sizes=(2,))  # already planned
    assert engine.warm_up_next()
    assert not engine.warm_up_next()  # nothing left: eager on the CPU warms batches of one only
    assert calls == [(1, H, W)]
    assert engine.warmup(H, W, Settings(), batch=2)  # counts as ready: nothing runs
    assert engine.warmup(H, W, Settings(), batch=3)  # an unplanned size does run, once
    assert engine.warmup(H, W, Settings(), batch=3)
    assert calls == [(1, H, W), (3, H, W)]

    from test_engine import Harness  # a graph mode (fake graphs on the CPU) warms every planned batch size

    graphs = Harness(model, [Rung("fp32", "cuda_graph"), Rung("fp32", "eager")]).engine
    graphs.expect(H, W, Settings(), batch_sizes=(1, 2))
    assert graphs.warm_up_next() and graphs.warm_up_next() and not graphs.warm_up_next()
    assert sorted(k.shape[0] for k in graphs.runner._graphs) == [1, 2]


def test_graph_mode_captures_per_batch_size_and_keeps_each_frames_outputs(balanced):
    """The cuda_graph mode's capture / replay code on the CPU (test_engine's fake graphs): one graph per batch
    size and image size, and a replayed batch equal to each frame alone."""
    from test_engine import Harness  # the fake-graph runner harness

    model, by_head = balanced
    harness = Harness(model, [Rung("fp32", "cuda_graph"), Rung("fp32", "eager")])
    engine = harness.engine
    frames = batch_frames(by_head)
    first = engine.run_batch(frames)
    again = engine.run_batch(frames)  # a replay of the batch-of-four graph
    singles = [engine.run(f.raw, f.encoding, f.intrinsics, f.settings) for f in frames]  # the batch-of-one graph
    runner = harness.built[-1]
    assert engine.rung == Rung("fp32", "cuda_graph") and runner.captures == 2
    assert sorted(k.shape[0] for k in runner._graphs) == [1, 4]
    for a, b, alone in zip(first, again, singles, strict=True):
        assert a.head == b.head == alone.head
        np.testing.assert_array_equal(depth_of(a), depth_of(b))
        np.testing.assert_allclose(depth_of(a), depth_of(alone), rtol=0, atol=TOL, equal_nan=True)
    assert {f.head for f in first} == {"nyu", "kitti"}
