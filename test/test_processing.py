"""Pre/post-processing numerics against the official MiDaS/ZoeDepth Resize and padding, worked by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoedepth_ros.model.processing import (
    net_input_size,
    pad_reflect,
    prepare_input,
    reflect_padding,
    restore_size,
)

NET = (384, 512)

# (height, width) -> network size with keep_aspect ("minimal": the scale closer to 1, sides rounded to /32)
WORKED = [
    ((480, 640), (384, 512)),  # scale 0.8 both ways
    ((572, 746), (384, 512)),  # width scale 0.686 is closer: h = 572 * 512 / 746 = 392.6 -> 12.27 * 32 -> 384
    ((720, 1280), (384, 672)),  # height scale 0.533: w = 682.7 -> 21.33 -> 21 * 32
    ((1080, 1920), (384, 672)),  # height scale 0.356: w = 682.7 -> 672
    ((376, 1241), (384, 1280)),  # height scale 1.021: w = 1267.4 -> 39.6 -> 40 * 32
    ((352, 1216), (384, 1312)),  # height scale 1.091: w = 1326.5 -> 41.45 -> 41 * 32
]


@pytest.mark.parametrize(("size", "expected"), WORKED)
def test_net_input_size_worked_examples(size, expected):
    assert net_input_size(*size, net_size=NET) == expected
    assert net_input_size(*size, net_size=NET, keep_aspect=True) == expected


@pytest.mark.parametrize(("size", "expected"), WORKED)
def test_net_input_size_without_aspect_is_net_size(size, expected):
    assert net_input_size(*size, net_size=NET, keep_aspect=False) == (384, 512)


def test_net_input_size_rounds_half_to_even():
    # height scale 1 beats 512 / 528: width 528 / 32 = 16.5 -> 16 (even) -> 512; 560 / 32 = 17.5 -> 18 -> 576
    assert net_input_size(384, 528, net_size=NET) == (384, 512)
    assert net_input_size(384, 560, net_size=NET) == (384, 576)
    # width scale 1 beats 384 / 400: height 400 / 32 = 12.5 -> 12 -> 384; 432 / 32 = 13.5 -> 14 -> 448
    assert net_input_size(400, 512, net_size=NET) == (384, 512)
    assert net_input_size(432, 512, net_size=NET) == (448, 512)


def test_net_input_size_other_net_size_and_ties():
    # net (384, 384), 300x600: scales 1.28 / 0.64, |1-1.28| = 0.28 < 0.36 -> 1.28: 384 x 768
    assert net_input_size(300, 600, net_size=(384, 384)) == (384, 768)
    # equal distance from 1 (scales 1.25 and 0.75): not strictly closer, so the height scale wins -> 320 x 1280
    assert net_input_size(256, 1024, net_size=(320, 768)) == (320, 1280)


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (-5, 10), (10, -1), (4000, 1), (1, 4000)])
def test_net_input_size_rejects_bad_sizes(size):
    with pytest.raises(ValueError):
        net_input_size(*size, net_size=NET)


def test_reflect_padding_values():
    assert reflect_padding(480, 640) == (46, 53)  # int(15.49 * 3), int(17.89 * 3)
    assert reflect_padding(48, 64) == (14, 16)  # int(4.899 * 3) = int(14.70), int(5.657 * 3) = int(16.97)
    assert reflect_padding(2, 8) == (3, 6)  # int(1 * 3), int(2 * 3)


def test_pad_reflect_matches_torch_reflect_and_hand_corner():
    x = torch.arange(48 * 64, dtype=torch.float32).view(1, 1, 48, 64)
    padded, pads = pad_reflect(x)
    assert pads == (14, 16)
    assert padded.shape == (1, 1, 48 + 28, 64 + 32)
    assert torch.equal(padded, F.pad(x, (16, 16, 14, 14), mode="reflect"))
    # padded (0, 0) reflects to source row 14, column 16: 14 * 64 + 16; (-1, -1) -> row 33, column 47
    assert padded[0, 0, 0, 0].item() == 912
    assert padded[0, 0, -1, -1].item() == (47 - 14) * 64 + (63 - 16)
    assert torch.equal(padded[..., 14:-14, 16:-16], x)


def test_pad_reflect_too_small():
    with pytest.raises(ValueError, match="pad_input"):
        pad_reflect(torch.zeros(1, 3, 2, 2))


def test_prepare_input_same_size_is_plain_normalisation():
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.125]).view(1, 1, 2, 3)
    out = prepare_input(x, (2, 3))
    assert torch.equal(out, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, -0.75]).view(1, 1, 2, 3))


def test_prepare_input_resizes_bilinear_align_corners():
    x = torch.tensor([[0.0, 0.2], [0.6, 1.0]], dtype=torch.float64).view(1, 1, 2, 2)
    out = prepare_input(x, (3, 3))
    # resized: corners kept, edge midpoints, centre = (0 + 0.2 + 0.6 + 1) / 4 = 0.45; then 2x - 1
    resized = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.45, 0.6], [0.6, 0.8, 1.0]], dtype=torch.float64)
    expected = torch.tensor([[-1.0, -0.8, -0.6], [-0.4, -0.1, 0.2], [0.2, 0.6, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(2 * resized - 1, expected)
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-12)
    y = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(
        prepare_input(y, (8, 4)), 2 * F.interpolate(y, size=(8, 4), mode="bilinear", align_corners=True) - 1
    )


def test_restore_size_crops_middle_when_already_padded_size():
    depth = torch.arange(2 * 8 * 10, dtype=torch.float32).view(2, 1, 8, 10)
    out = restore_size(depth, (8, 10), (1, 2))
    assert out.shape == (2, 1, 6, 6)
    assert torch.equal(out, depth[..., 1:-1, 2:-2])
    assert out[0, 0, 0, 0].item() == 1 * 10 + 2


def test_restore_size_zero_pad_on_one_side():
    depth = torch.rand(1, 1, 8, 10)
    assert torch.equal(restore_size(depth, (8, 10)), depth)
    assert torch.equal(restore_size(depth, (8, 10), (2, 0)), depth[..., 2:-2, :])
    assert torch.equal(restore_size(depth, (8, 10), (0, 3)), depth[..., :, 3:-3])


def test_restore_size_bicubic_then_crop():
    depth = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    out = restore_size(depth, (10, 12), (2, 3))
    up = F.interpolate(depth, size=(10, 12), mode="bicubic", align_corners=False)
    assert out.shape == (1, 1, 6, 6)
    torch.testing.assert_close(out, up[..., 2:-2, 3:-3], rtol=0, atol=1e-12)
    # bicubic weights sum to 1: a constant map stays constant
    const = restore_size(torch.full((1, 1, 3, 3), 2.5, dtype=torch.float64), (7, 9), (1, 1))
    torch.testing.assert_close(const, torch.full((1, 1, 5, 7), 2.5, dtype=torch.float64))
    # bicubic (A = -0.75), [0, 1] -> 4 samples at source x = -0.25, 0.25, 0.75, 1.25 (taps clamped at the border).
    # Cubic weights for t = 0.75: [-0.03515625, 0.26171875, 0.87890625, -0.10546875] (taps floor(x) - 1 .. + 2);
    # x = -0.25: taps (-2, -1, 0, 1) -> values (0, 0, 0, 1) -> -0.10546875
    # x = 0.25 (t = 0.25, weights reversed): taps (-1, 0, 1, 2) -> (0, 0, 1, 1) -> 0.26171875 - 0.03515625
    ramp = restore_size(torch.tensor([[0.0, 1.0]], dtype=torch.float64).view(1, 1, 1, 2), (1, 4))
    expected = torch.tensor([-0.10546875, 0.2265625, 0.7734375, 1.10546875], dtype=torch.float64)
    torch.testing.assert_close(ramp.flatten(), expected, rtol=0, atol=1e-12)
