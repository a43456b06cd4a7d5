"""Device-side pre- and post-processing with the official ZoeDepth/MiDaS numerics.

Input is RGB float in [0, 1], (B, 3, H, W). The network sees it resized (bilinear, align_corners=True) to a
multiple of 32 near ``net_size`` and normalised to [-1, 1]; ``infer`` optionally reflect-pads first and maps
the output back with bicubic (align_corners=False) resizing and a crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .torch_compat import reflect_pad

NET_MULTIPLE = 32
PAD_FACTOR = 3  # pad = int(sqrt(side / 2) * 3) pixels on each side


def net_input_size(height: int, width: int, net_size: tuple[int, int], keep_aspect: bool = True) -> tuple[int, int]:
    """The (h, w) the network runs at for an (height, width) input ("minimal" resize of MiDaS).

    With keep_aspect, both sides use the one scale (height's or width's) that is closer to 1, then each side is
    rounded (half to even) to a multiple of 32. Without it the size is ``net_size``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    net_h, net_w = net_size
    scale_h, scale_w = net_h / height, net_w / width
    if keep_aspect:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
    out_h = round(scale_h * height / NET_MULTIPLE) * NET_MULTIPLE
    out_w = round(scale_w * width / NET_MULTIPLE) * NET_MULTIPLE
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"a {height}x{width} image is too elongated for the network: it would run at {out_h}x{out_w}")
    return out_h, out_w


def prepare_input(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize to the network size and normalise with mean = std = 0.5 (the BEiT MiDaS convention)."""
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    return (x - 0.5) / 0.5


def reflect_padding(height: int, width: int) -> tuple[int, int]:
    """(pad_h, pad_w) that ``infer`` adds on each side: int(sqrt(side / 2) * 3)."""
    return int(math.sqrt(height / 2) * PAD_FACTOR), int(math.sqrt(width / 2) * PAD_FACTOR)


def pad_reflect(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    pad_h, pad_w = reflect_padding(x.shape[-2], x.shape[-1])
    if pad_h >= x.shape[-2] or pad_w >= x.shape[-1]:
        raise ValueError(f"image {x.shape[-2]}x{x.shape[-1]} is too small for reflect padding; use pad_input=False")
    return reflect_pad(x, (pad_w, pad_w, pad_h, pad_h)), (pad_h, pad_w)


def restore_size(depth: torch.Tensor, size: tuple[int, int], pads: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Bicubic (align_corners=False) resize of network-resolution depth to ``size``, then crop ``pads``."""
    if tuple(depth.shape[-2:]) != tuple(size):
        depth = F.interpolate(depth, size=size, mode="bicubic", align_corners=False)
    pad_h, pad_w = pads
    if pad_h > 0:
        depth = depth[..., pad_h:-pad_h, :]
    if pad_w > 0:
        depth = depth[..., pad_w:-pad_w]
    return depth
