"""The files an image's depth becomes (``zoedepth-ros-predict``'s outputs), in one place for predict and the fleet.

``<base>_depth.png|.npy|.tiff``, ``<base>_depth_preview.png`` and ``<base>_points.ply``, where ``base`` is the output
path of the image without its suffix. Every file is written aside and renamed (``depth_files``), so a file that
exists is complete; :meth:`OutputSpec.is_complete` says whether all of an image's files are there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.encodings import array_to_tensor, to_rgb8
from ..engine.intrinsics import Intrinsics
from .depth_files import SUFFIXES, write_depth, write_ply, write_preview

DEPTH_TAG = "_depth"
PREVIEW_TAIL = "_depth_preview.png"
PLY_TAIL = "_points.ply"
OUTPUT_TAILS = (*(DEPTH_TAG + s for s in SUFFIXES.values()), PREVIEW_TAIL, PLY_TAIL)


def tagged(base: Path, tail: str) -> Path:
    return base.with_name(base.name + tail)


def looks_like_output(name: str) -> bool:
    """A file named like one of these outputs (never taken as an input image)."""
    return name.lower().endswith(OUTPUT_TAILS)


@dataclass(frozen=True)
class FixedIntrinsics:
    """--fx --fy --cx --cy: the same pinhole for every image, in that image's own pixels."""

    fx: float
    fy: float
    cx: float
    cy: float

    def for_image(self, width: int, height: int) -> tuple[Intrinsics, str | None]:
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, width, height), None


def nominal_intrinsics(width: int, height: int) -> Intrinsics:
    """Stand-in intrinsics when no file needs them (the engine's frames carry some; depth does not use them)."""
    return Intrinsics(float(width), float(width), (width - 1) / 2, (height - 1) / 2, width, height)


def colours(raw: np.ndarray, encoding: str, height: int, width: int) -> np.ndarray:
    """The image's rgb8 at the depth's size (nearest, as the node colours its cloud)."""
    rgb = to_rgb8(array_to_tensor(raw), encoding)
    if rgb.shape[:2] != (height, width):
        planes = F.interpolate(rgb.permute(2, 0, 1)[None].float(), size=(height, width), mode="nearest")[0]
        rgb = planes.permute(1, 2, 0).to(torch.uint8)
    return rgb.numpy()


@dataclass(frozen=True)
class OutputSpec:
    """Which files each image gets and how they are written (picklable: the fleet ships it to its workers)."""

    format: str = "png16"
    preview: bool = False
    ply: bool = False
    color: bool = False
    decimation: int = 1
    min_depth: float = 0.0  # the preview's colour range
    max_depth: float = 80.0

    def tails(self) -> list[str]:
        """The ends of the names written: ``_depth.png`` and, as asked, the preview and the PLY."""
        return [DEPTH_TAG + SUFFIXES[self.format]] + [PREVIEW_TAIL] * self.preview + [PLY_TAIL] * self.ply

    def paths(self, base: Path) -> list[Path]:
        return [tagged(base, tail) for tail in self.tails()]

    def is_complete(self, base: Path) -> bool:
        return all(p.exists() for p in self.paths(base))

    def write(
        self, base: Path, depth: np.ndarray, intrinsics: Intrinsics, image: tuple[np.ndarray, str] | None = None
    ) -> int:
        """Write ``depth`` (H, W float32 metres, NaN none) as asked; ``image`` (raw, encoding) colours the PLY.
        Returns the pixels a 16-bit PNG could not hold. Raises DepthFileError (a disk full, a bad path)."""
        lost = write_depth(tagged(base, DEPTH_TAG + SUFFIXES[self.format]), depth, self.format)
        if self.preview:
            write_preview(tagged(base, PREVIEW_TAIL), depth, self.min_depth, self.max_depth)
        if self.ply:
            rgb = colours(*image, *depth.shape) if self.color and image is not None else None
            write_ply(tagged(base, PLY_TAIL), depth, intrinsics, rgb, self.decimation)
        return lost
