"""The accuracy guard: a fast mode must route like fp32 and stay within 1 % mean relative depth difference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from model_fixtures import tiny_model

from zoedepth_ros.engine.accuracy import (
    MAX_MEAN_REL_DIFF,
    guard,
    mean_relative_difference,
    probe_images,
    reference_results,
)
from zoedepth_ros.model import set_precision

CPU = torch.device("cpu")


def test_mean_relative_difference_by_hand():
    ref = torch.tensor([1.0, 2.0, 4.0, float("nan"), 0.0])
    cand = torch.tensor([1.1, 2.0, 3.0, 5.0, 7.0])  # the NaN and zero reference pixels are not compared
    assert mean_relative_difference(ref, cand) == pytest.approx((0.1 + 0.0 + 0.25) / 3)
    assert mean_relative_difference(ref, torch.tensor([1.0, float("inf"), 4.0, 1.0, 1.0])) == math.inf


def test_probe_images_are_deterministic_structured_rgb():
    a, b = probe_images(48, 64), probe_images(48, 64)
    assert len(a) == 3 and all(x.shape == (1, 3, 48, 64) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.05 for x in a)


@pytest.fixture(scope="module")
def nk():
    return tiny_model("nk", seed=0)


@pytest.fixture(scope="module")
def images():
    return probe_images(48, 64)


def test_identical_model_passes(nk, images):
    ref = reference_results(nk, images)
    report = guard(ref, lambda x: nk.predict(x, flip_aug=False), images, "same")
    assert report.passed and report.routing_identical and report.mean_rel_diff == 0.0 and report.reason == ""


def test_depth_off_by_more_than_one_percent_fails(nk, images):
    ref = reference_results(nk, images)
    scale = 1 + 2 * MAX_MEAN_REL_DIFF

    def scaled(x):
        r = nk.predict(x, flip_aug=False)
        return type(r)(r.depth * scale, r.head_indices, r.head_logits, r.forced, r.head_names)

    report = guard(ref, scaled, images, "scaled")
    assert not report.passed and report.routing_identical
    assert report.mean_rel_diff == pytest.approx(2 * MAX_MEAN_REL_DIFF, rel=1e-4)
    assert "mean relative depth difference" in report.reason


def test_a_routing_flip_fails_even_with_close_depth(nk, images):
    ref = reference_results(nk, images)
    other = "kitti" if ref[0].heads[0] == "nyu" else "nyu"
    report = guard(
        ref, lambda x: nk.predict(x, flip_aug=False, head=other if x is images[0] else None), images, "flipped"
    )
    assert not report.passed and not report.routing_identical and "routing differs" in report.reason


def test_guard_catches_fp16_overflow_without_islands(images):
    model = tiny_model("n", seed=7)
    ref = reference_results(model, images)
    half = copy.deepcopy(model)
    with torch.no_grad():
        for m in (model, half):  # same fp32 maths, an fp16-overflowing activation in the decoder
            m.core.core.scratch.output_conv[0].weight.mul_(1e6)
            m.core.core.scratch.output_conv[0].bias.mul_(1e6)
            m.core.core.scratch.output_conv[2].weight.div_(1e6)
    ref = reference_results(model, images)
    half.half()
    naive = guard(ref, lambda x: half.predict(x.half(), flip_aug=False), images, "fp16 everywhere")
    islands = set_precision(copy.deepcopy(model), "fp16")
    kept = guard(ref, lambda x: islands.predict(x, flip_aug=False), images, "fp16 islands")
    assert not naive.passed and naive.mean_rel_diff == math.inf
    assert kept.passed
