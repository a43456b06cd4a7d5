"""A turbo-coloured view of a depth image (``depth/colormap``), computed on the depth's device."""

from __future__ import annotations

import math

import torch

from .cloud import check_depth

# Turbo colormap, polynomial approximation by Anton Mikhailov and Ruofei Du (Google, Apache-2.0): per channel,
# the coefficients of 1, t, ..., t^5. The fit's very ends bend back (hue is not monotone within ~0.02 of 0 and
# 1), so depth is mapped to t in [_T_FAR, _T_NEAR] where hue changes monotonically from blue to red.
_TURBO = (
    (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
    (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
    (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
)
_T_NEAR = 0.95
_T_FAR = 0.05


def colorize_depth(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """(H, W, 3) uint8 turbo-coloured depth for viewing: near (min_depth) red, far (max_depth) blue.

    Depths outside [min_depth, max_depth] take the end colours; non-finite depth (invalid) is black, which
    turbo itself never produces. Runs on depth's device.
    """
    if not (math.isfinite(min_depth) and math.isfinite(max_depth) and max_depth > min_depth):
        raise ValueError(f"need finite min_depth < max_depth, got {min_depth}, {max_depth}")
    depth = check_depth(depth)
    near = (max_depth - depth).div_(max_depth - min_depth).clamp_(0.0, 1.0)  # 1 at min_depth, 0 at max_depth
    t = near.mul_(_T_NEAR - _T_FAR).add_(_T_FAR)
    rgb = torch.empty((*depth.shape, 3), dtype=torch.uint8, device=depth.device)
    valid = torch.isfinite(depth)
    for i, coeffs in enumerate(_TURBO):
        acc = torch.full_like(t, coeffs[-1])
        for c in reversed(coeffs[:-1]):  # Horner's rule
            acc.mul_(t).add_(c)
        # NaN depth made acc NaN, whose uint8 cast is undefined; the multiply by the mask makes it black.
        rgb[..., i] = acc.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).mul_(valid)
    return rgb
