"""Accuracy guard: a fast mode is only used if it routes like fp32 and its depth is within 1 % of fp32.

The reference is the fp32 eager model on the same inputs. Depth is compared by the mean relative difference over
the pixels where both are finite and positive, per image; the worst image decides. Routing must pick the same
head on every image and pass. ``engine.Engine`` runs it for each reduced-precision rung when precision is "auto".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..model import InferenceResult, ZoeDepth

MAX_MEAN_REL_DIFF = 0.01
PROBE_SIZE = (480, 640)  # height, width: the most common robot camera size

log = logging.getLogger(__name__)

Predict = Callable[[torch.Tensor], InferenceResult]


@dataclass(frozen=True)
class GuardReport:
    """How a candidate mode compares with fp32 on the probe images."""

    mode: str
    passed: bool
    routing_identical: bool
    mean_rel_diff: float  # worst image
    per_image: tuple[float, ...]
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def probe_images(height: int, width: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Three deterministic (1, 3, H, W) scenes in [0, 1]: a room-like perspective, smooth blobs, fine texture.

    Structured content keeps the network's activations in a realistic range (noise would not); real images
    can be passed to ``guard`` instead.
    """
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, height, device=device), torch.linspace(0, 1, width, device=device), indexing="ij"
    )
    horizon = (ys > 0.45).float()
    floor = horizon * (0.5 + 0.5 * torch.sign(torch.sin(40 * (xs - 0.5) / (ys + 0.05)) * torch.sin(30 / (ys + 0.1))))
    room = torch.stack([0.3 + 0.4 * ys, 0.35 + 0.2 * floor, 0.6 - 0.3 * ys * (1 - floor)])
    blobs = torch.stack(
        [
            0.5 + 0.5 * torch.sin(5 * xs + 2 * ys),
            0.5 + 0.5 * torch.cos(4 * xs * ys + 1),
            0.5 + 0.4 * torch.sin(7 * ys - 3 * xs),
        ]
    )
    gen = torch.Generator().manual_seed(0)
    grain = torch.rand((3, height, width), generator=gen).to(device)
    texture = 0.6 * blobs + 0.25 * (torch.sin(90 * xs) * torch.cos(70 * ys) + 1) / 2 + 0.15 * grain
    return [img.clamp(0, 1)[None] for img in (room, blobs, texture)]


def mean_relative_difference(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """mean |c - r| / r over pixels where both are finite and r > 0; inf if the candidate breaks any of them."""
    ref, cand = reference.float(), candidate.float()
    valid = torch.isfinite(ref) & (ref > 0)
    if not torch.isfinite(cand[valid]).all():
        return math.inf
    if not valid.any():
        return math.nan
    return float(((cand - ref).abs()[valid] / ref[valid]).mean())


def guard(
    reference: Sequence[InferenceResult],
    candidate: Predict,
    images: Sequence[torch.Tensor],
    mode: str,
    max_mean_rel_diff: float = MAX_MEAN_REL_DIFF,
) -> GuardReport:
    """Compare ``candidate`` on ``images`` with the fp32 ``reference`` results for the same images."""
    diffs, same_routing = [], True
    for ref, image in zip(reference, images, strict=True):
        out = candidate(image)
        same_routing &= ref.heads == out.heads
        diffs.append(mean_relative_difference(ref.depth, out.depth))
    worst = max(diffs) if diffs else math.nan
    reasons = []
    if not same_routing:
        reasons.append("routing differs from fp32")
    if not worst <= max_mean_rel_diff:  # NaN fails too
        reasons.append(f"mean relative depth difference {worst:.4f} > {max_mean_rel_diff}")
    return GuardReport(mode, not reasons, same_routing, worst, tuple(diffs), "; ".join(reasons))


def reference_results(
    model: ZoeDepth, images: Sequence[torch.Tensor], pad_input: bool = True, flip_aug: bool = False
) -> list[InferenceResult]:
    """fp32 eager results (the model must be in fp32)."""
    return [model.predict(image, pad_input=pad_input, flip_aug=flip_aug) for image in images]


def settled(result: InferenceResult) -> InferenceResult:
    """A copy of a (possibly graph-static) result that the next call cannot overwrite."""
    return InferenceResult(
        result.depth.clone(),
        result.head_indices.clone(),
        tuple(t.clone() for t in result.head_logits),
        result.forced,
        result.head_names,
    )
