"""ZoeDepth.forward / infer / predict semantics: sizes, routing, forcing, and the official infer() recipe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import tiny_model


@pytest.fixture(scope="module")
def nk():
    return tiny_model("nk")


def steer(model, logits_bias):
    with torch.no_grad():
        model.mlp_classifier[2].bias.copy_(torch.tensor(logits_bias))


def test_forward_outputs(nk, rgb):
    out = nk(rgb)
    assert out.metric_depth.shape == (2, 1, 384, 512)  # 48x64 -> the "minimal" keep-aspect net size
    assert out.head_logits.shape == (2, 2)
    assert out.head in ("nyu", "kitti")
    assert torch.isfinite(out.metric_depth).all() and (out.metric_depth > 0).all()


def test_network_size_follows_aspect_ratio(nk):
    assert nk(torch.rand(1, 3, 720, 1280)).metric_depth.shape[-2:] == (384, 672)  # height scale closer to 1
    assert nk(torch.rand(1, 3, 36, 64)).metric_depth.shape[-2:] == (288, 512)  # width scale closer to 1


def test_one_routing_decision_per_batch(rgb):
    model = tiny_model("nk", seed=4)
    logits = model(rgb).head_logits
    expected = ("nyu", "kitti")[int(torch.softmax(logits.sum(0), -1).argmax())]
    out = model(rgb)
    assert out.head == expected
    # each sample in the batch got the batch's head, whatever it would pick alone
    for i in range(2):
        alone = model(rgb[i : i + 1], head=expected).metric_depth
        torch.testing.assert_close(out.metric_depth[i : i + 1], alone, rtol=1e-5, atol=1e-5)


def test_forced_domain_and_aliases(rgb):
    model = tiny_model("nk", seed=5)
    steer(model, [30.0, -30.0])
    auto = model(rgb)
    assert auto.head == "nyu"
    forced = model(rgb, head="outdoor")
    assert forced.head == "kitti"
    torch.testing.assert_close(forced.head_logits, auto.head_logits)  # logits still reported
    assert not torch.allclose(forced.metric_depth, auto.metric_depth)
    torch.testing.assert_close(model(rgb, head="kitti").metric_depth, forced.metric_depth)
    torch.testing.assert_close(model(rgb, head="indoor").metric_depth, auto.metric_depth)
    with pytest.raises(ValueError, match="unknown head"):
        model(rgb, head="underwater")


def test_single_head_models_refuse_the_other_head(rgb):
    n = tiny_model("n")
    assert n(rgb[:1]).head == "nyu" and n(rgb[:1]).head_logits is None
    assert n(rgb[:1], head="indoor").head == "nyu"
    with pytest.raises(ValueError, match="only the"):
        n(rgb[:1], head="kitti")


@pytest.mark.parametrize(
    "bad",
    [
        torch.rand(3, 48, 64),
        torch.rand(1, 1, 48, 64),
        torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
        torch.rand(0, 3, 48, 64),
    ],
)
def test_bad_input_raises_value_error(nk, bad):
    with pytest.raises(ValueError):
        nk(bad)


def official_infer(model, x, pad_input, flip):
    """upstream infer() written out with plain torch ops: reflect pad int(sqrt(side/2)*3), bicubic back, crop."""

    def once(img):
        h, w = img.shape[-2:]
        ph, pw = (int(math.sqrt(h / 2) * 3), int(math.sqrt(w / 2) * 3)) if pad_input else (0, 0)
        padded = F.pad(img, [pw, pw, ph, ph], mode="reflect") if pad_input else img
        out = model(padded).metric_depth
        out = F.interpolate(out, size=padded.shape[-2:], mode="bicubic", align_corners=False)
        return out[:, :, ph : ph + h, pw : pw + w]

    out = once(x)
    if flip:
        out = (out + torch.flip(once(torch.flip(x, [3])), [3])) / 2
    return out


@pytest.mark.parametrize(("pad_input", "flip"), [(True, True), (False, False), (True, False), (False, True)])
def test_infer_matches_the_official_recipe(nk, rgb, pad_input, flip):
    got = nk.infer(rgb, pad_input=pad_input, flip_aug=flip)
    assert got.shape == (2, 1, 48, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, official_infer(nk, rgb, pad_input, flip), rtol=1e-5, atol=1e-5)


def test_flip_passes_route_independently(rgb):
    model = tiny_model("nk", seed=6)
    result = model.predict(rgb[:1], pad_input=False, flip_aug=True)
    assert len(result.heads) == 2 and len(result.head_logits) == 2 and not result.forced
    flipped = model(torch.flip(rgb[:1], [3]))
    torch.testing.assert_close(result.head_logits[1], flipped.head_logits)
    assert result.heads[1] == flipped.head
    forced = model.predict(rgb[:1], head="nyu")
    assert forced.forced and forced.heads == ("nyu", "nyu")


def test_bfloat16_model_runs_and_returns_float32(rgb):
    model = tiny_model("nk").to(torch.bfloat16)
    depth = model.infer(rgb[:1], flip_aug=False)
    assert depth.dtype == torch.float32 and torch.isfinite(depth).all()
