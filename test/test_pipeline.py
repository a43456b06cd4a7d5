"""DepthPipeline without ROS: what one raw frame turns into, and frames in flight not clobbering each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model

from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.pipeline import DepthPipeline, Settings
from zoedepth_ros.engine.runtime import DepthRunner

H, W = 48, 64
INTR = Intrinsics(fx=50.0, fy=52.0, cx=31.5, cy=23.5, width=W, height=H)
CPU = torch.device("cpu")


def frame(seed: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    img = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + seed)], axis=-1)
    return (255 * img).astype(np.uint8)


def expected_depth(model, raw: np.ndarray, settings: Settings) -> np.ndarray:
    rgb = torch.from_numpy(raw).permute(2, 0, 1)[None].float() / 255
    depth = model.predict(rgb, pad_input=settings.pad_input, flip_aug=settings.flip_aug).depth[0, 0].numpy()
    return np.where((depth < settings.min_depth) | (depth > settings.max_depth), np.nan, depth)


@pytest.fixture(scope="module")
def model():
    return tiny_model("nk", seed=3)


def test_run_gives_masked_depth_cloud_and_routing(model):
    pipeline = DepthPipeline(DepthRunner(model, CPU), CPU)
    raw = frame(0)
    reference = expected_depth(model, raw, Settings())
    max_depth = float(np.nanmedian(reference))  # mask out about half of the pixels
    settings = Settings(max_depth=max_depth, color=True)
    out = pipeline.run(raw, "rgb8", INTR, settings)
    depth = np.frombuffer(out.depth, dtype="<f4").reshape(H, W)
    expected = expected_depth(model, raw, settings)
    np.testing.assert_allclose(depth, expected, rtol=1e-6, equal_nan=True)
    assert 0.3 < np.isnan(depth).mean() < 0.7
    cloud = np.frombuffer(out.cloud, dtype="<f4").reshape(H, W, 8)
    np.testing.assert_array_equal(cloud[..., 2], depth)
    v, u = 10, 40
    assert cloud[v, u, 0] == pytest.approx((u - INTR.cx) * depth[v, u] / INTR.fx, rel=1e-6) or np.isnan(depth[v, u])
    rgb_bytes = np.frombuffer(out.cloud, dtype=np.uint8).reshape(H, W, 32)[..., 16:19]
    np.testing.assert_array_equal(rgb_bytes[..., ::-1], raw)  # packed b, g, r
    routed = model.predict(torch.from_numpy(raw).permute(2, 0, 1)[None].float() / 255, flip_aug=False)
    assert out.head == routed.heads[0] and len(out.logits) == 2 and 0.5 <= out.probability <= 1


def test_frames_in_flight_keep_their_own_bytes(model):
    pipeline = DepthPipeline(DepthRunner(model, CPU), CPU)
    settings = Settings()
    first = pipeline.submit(frame(1), "rgb8", INTR, settings)
    second = pipeline.submit(frame(2), "rgb8", INTR, settings)  # reuses the CPU cloud buffer
    for inflight, seed in ((first, 1), (second, 2)):
        out = inflight.result()
        depth = np.frombuffer(out.depth, dtype="<f4").reshape(H, W)
        np.testing.assert_allclose(depth, expected_depth(model, frame(seed), settings), rtol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(np.frombuffer(out.cloud, dtype="<f4").reshape(H, W, 4)[..., 2], depth)
    assert not np.array_equal(np.frombuffer(first.result().depth, "<f4"), np.frombuffer(second.result().depth, "<f4"))


def test_forced_head_and_output_scale(model):
    pipeline = DepthPipeline(model, CPU)  # a bare model runs eagerly
    out = pipeline.run(frame(0), "bgr8", INTR, Settings(routing="outdoor", output_scale=0.5, points=False))
    assert (out.head, out.domain, out.forced) == ("kitti", "outdoor", True)
    assert (out.height, out.width) == (24, 32) and len(out.depth) == 4 * 24 * 32 and out.cloud is None
    assert out.intrinsics.width == 32 and out.intrinsics.fx == pytest.approx(25.0)
