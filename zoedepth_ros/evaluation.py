"""Depth-estimation metrics following the ZoeDepth evaluation protocol (arXiv 2302.12288).

Over the M valid pixels of one image, with ground truth ``d`` and prediction ``p`` (metres):

* ``abs_rel``  = mean(|d - p| / d)                 (REL in the paper)
* ``sq_rel``   = mean((d - p)^2 / d)
* ``rmse``     = sqrt(mean((d - p)^2))
* ``rmse_log`` = sqrt(mean((ln d - ln p)^2))
* ``log10``    = mean(|log10 d - log10 p|)
* ``silog``    = 100 * sqrt(mean(e^2) - mean(e)^2), e = ln p - ln d  (ZoeDepth convention: no lambda,
  scaled by 100; evaluated as the centred variance mean((e - mean e)^2), the same quantity without the
  cancellation that can make the textbook form slightly negative or noisy)
* ``delta<n>`` = fraction of pixels with max(d/p, p/d) < 1.25^n, n = 1, 2, 3

Protocol choices, all deliberate:

* Valid pixels: ``min_depth < gt < max_depth`` and ``gt`` finite, intersected with the optional crop mask.
* The prediction is clipped to ``[min_depth, max_depth]`` before the metrics (as ZoeDepth does).
* Non-finite predictions (NaN/inf) are NOT clipped or substituted (ZoeDepth maps inf -> max and
  NaN -> min). They are dropped from the valid set and counted in ``n_nonfinite`` so that a broken
  model is visible in the results rather than silently scored. Callers that want a hard failure can
  check ``n_nonfinite`` (the ``zoedepth-ros-eval`` command warns about it).
* A prediction whose (H, W) differs from the ground truth is resized to the ground-truth size with
  bilinear interpolation (``align_corners=False``), as ZoeDepth does before computing metrics.
* An image with zero valid pixels does not raise: it yields NaN metrics with ``n_valid == 0``, and
  :func:`aggregate` leaves such images out (it raises only if no image has a valid pixel).
* Crops are a single choice (``None``, ``"garg"`` or ``"eigen"``); ZoeDepth's pair of booleans, where
  ``garg_crop`` wins over ``eigen_crop`` if both are set, maps to ``crop="garg"``.
* Dataset means are per-image metrics averaged over images (ZoeDepth's ``RunningAverageDict``), not
  metrics of all pixels pooled together; the two differ in general.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("nyu", "kitti")
CROPS = ("garg", "eigen")
DEFAULT_MIN_DEPTH = 1e-3
DEFAULT_MAX_DEPTH = {"nyu": 10.0, "kitti": 80.0}
METRIC_NAMES = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
NYU_EIGEN_SHAPE = (480, 640)


@dataclass(frozen=True)
class DepthMetrics:
    """Metrics of one image, or the per-image mean over a dataset (then ``n_images > 1``).

    ``n_valid`` is the number of pixels scored (summed over images for a mean); ``n_nonfinite`` the
    number of otherwise-valid pixels dropped because the prediction was NaN/inf; ``n_images`` the number
    of images averaged (1 for a single image; 0 for an image without valid pixels).
    """

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    log10: float
    silog: float
    delta1: float
    delta2: float
    delta3: float
    n_valid: int
    n_nonfinite: int = 0
    n_images: int = 1

    def as_dict(self) -> dict[str, float | int]:
        """All fields as a plain ``dict`` (metrics as floats, counts as ints)."""
        return asdict(self)

    @property
    def is_empty(self) -> bool:
        """True when no pixel was valid (the metrics are NaN)."""
        return self.n_valid == 0


def _as_2d(x: Any, name: str) -> np.ndarray:
    """A float64 (H, W) numpy copy of ``x`` (numpy array, torch tensor or nested sequence).

    Leading singleton axes, e.g. the ``(1, 1, H, W)`` output of ``model.infer``, are squeezed away.
    """
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} is not a numeric array: {exc}") from exc
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D depth map (H, W), optionally with leading singleton axes; "
            f"got shape {tuple(np.shape(x))}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr


def _resize_bilinear(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D array to ``size`` = (H, W), align_corners=False."""
    t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _check_range(min_depth: float, max_depth: float) -> None:
    if not (math.isfinite(min_depth) and math.isfinite(max_depth) and 0 <= min_depth < max_depth):
        raise ValueError(f"need finite 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def crop_mask(shape: tuple[int, int], crop: str | None, dataset: str = "nyu") -> np.ndarray:
    """Boolean (H, W) mask of the evaluation crop (all True for ``crop=None``).

    * ``"garg"``: rows ``int(0.40810811 h):int(0.99189189 h)``, cols ``int(0.03594771 w):int(0.96405229 w)``
      (the same for both datasets).
    * ``"eigen"`` with ``dataset="kitti"``: rows ``int(0.3324324 h):int(0.91351351 h)``,
      cols ``int(0.0359477 w):int(0.96405229 w)``.
    * ``"eigen"`` with ``dataset="nyu"``: rows 45:471, cols 41:601; defined only for 480x640 images.
    """
    _check_dataset(dataset)
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"crop_mask needs a positive (H, W) shape, got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    if crop is None:
        mask[:] = True
    elif crop == "garg":
        mask[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    elif crop == "eigen" and dataset == "kitti":
        mask[int(0.3324324 * h) : int(0.91351351 * h), int(0.0359477 * w) : int(0.96405229 * w)] = True
    elif crop == "eigen":
        if (h, w) != NYU_EIGEN_SHAPE:
            raise ValueError(
                f"the NYU Eigen crop (rows 45:471, cols 41:601) is defined for 480x640 ground "
                f"truth only, got {h}x{w}; use crop 'garg' or none instead"
            )
        mask[45:471, 41:601] = True
    else:
        raise ValueError(f"crop must be None, 'garg' or 'eigen', got {crop!r}")
    return mask


def _nan_metrics(n_nonfinite: int) -> DepthMetrics:
    nan = float("nan")
    return DepthMetrics(nan, nan, nan, nan, nan, nan, nan, nan, nan, n_valid=0, n_nonfinite=n_nonfinite, n_images=0)


def compute_metrics(
    pred: Any,
    gt: Any,
    *,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float | None = None,
    crop: str | None = None,
    dataset: str = "nyu",
) -> DepthMetrics:
    """Metrics of one predicted depth map against its ground truth (both in metres).

    ``pred`` and ``gt`` are numpy arrays or torch tensors of shape (H, W) (leading singleton axes are
    allowed). ``max_depth=None`` takes the dataset default (10 m NYU, 80 m KITTI). ``dataset`` also picks
    the Eigen-crop flavour. See the module docstring for masking, clipping and resizing rules.
    Returns NaN metrics with ``n_valid == 0`` when no pixel is valid; raises ``ValueError`` on bad input.
    """
    _check_dataset(dataset)
    if max_depth is None:
        max_depth = DEFAULT_MAX_DEPTH[dataset]
    min_depth, max_depth = float(min_depth), float(max_depth)
    _check_range(min_depth, max_depth)
    gt_arr = _as_2d(gt, "gt")
    pred_arr = _as_2d(pred, "pred")
    if pred_arr.shape != gt_arr.shape:
        pred_arr = _resize_bilinear(pred_arr, gt_arr.shape)

    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt_arr) & (gt_arr > min_depth) & (gt_arr < max_depth)
    valid &= crop_mask(gt_arr.shape, crop, dataset)
    finite_pred = np.isfinite(pred_arr)
    n_nonfinite = int(np.count_nonzero(valid & ~finite_pred))
    valid &= finite_pred
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        return _nan_metrics(n_nonfinite)

    d = gt_arr[valid]
    p = np.clip(pred_arr[valid], min_depth, max_depth)
    if min_depth == 0.0:  # p could be clipped to exactly 0: keep the logs finite
        p = np.maximum(p, np.finfo(np.float64).tiny)

    ratio = np.maximum(d / p, p / d)
    diff = d - p
    log_err = np.log(p) - np.log(d)
    silog_sq = float(np.mean((log_err - np.mean(log_err)) ** 2))  # = mean(e^2) - mean(e)^2, computed stably
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(diff) / d)),
        sq_rel=float(np.mean(diff**2 / d)),
        rmse=float(np.sqrt(np.mean(diff**2))),
        rmse_log=float(np.sqrt(np.mean(log_err**2))),
        log10=float(np.mean(np.abs(np.log10(d) - np.log10(p)))),
        silog=100.0 * math.sqrt(silog_sq),
        delta1=float(np.mean(ratio < 1.25)),
        delta2=float(np.mean(ratio < 1.25**2)),
        delta3=float(np.mean(ratio < 1.25**3)),
        n_valid=n_valid,
        n_nonfinite=n_nonfinite,
    )


def aggregate(results: Iterable[DepthMetrics]) -> DepthMetrics:
    """Mean of per-image metrics over images (ZoeDepth's running average), skipping empty images.

    ``n_valid`` and ``n_nonfinite`` are summed; ``n_images`` counts the images averaged. Raises
    ``ValueError`` if ``results`` is empty or no image has a valid pixel.
    """
    items = list(results)
    if not items:
        raise ValueError("aggregate needs at least one DepthMetrics")
    for r in items:
        if not isinstance(r, DepthMetrics):
            raise ValueError(f"aggregate expects DepthMetrics, got {type(r).__name__}")
    used = [r for r in items if not r.is_empty]
    if not used:
        raise ValueError(f"none of the {len(items)} images has a valid ground-truth pixel")
    weight = sum(r.n_images for r in used)
    means = {name: sum(getattr(r, name) * r.n_images for r in used) / weight for name in METRIC_NAMES}
    return DepthMetrics(
        **means,
        n_valid=sum(r.n_valid for r in used),
        n_nonfinite=sum(r.n_nonfinite for r in items),
        n_images=weight,
    )


_HEADERS = {
    "delta1": "d1",
    "delta2": "d2",
    "delta3": "d3",
    "abs_rel": "REL",
    "sq_rel": "SqRel",
    "rmse": "RMSE",
    "rmse_log": "RMSElog",
    "log10": "log10",
    "silog": "SILog",
}


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"


def format_table(rows: Mapping[str, DepthMetrics] | Sequence[tuple[str, DepthMetrics]]) -> str:
    """A markdown table, one row per (name, metrics), columns aligned for plain-text reading too.

    Columns: d1 d2 d3 (higher is better), REL SqRel RMSE RMSElog log10 SILog (lower is better), pixels.
    """
    pairs = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    header = ["name", *(_HEADERS[n] for n in METRIC_NAMES), "pixels"]
    body = [[str(name), *(_fmt(getattr(m, n)) for n in METRIC_NAMES), str(m.n_valid)] for name, m in pairs]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


__all__ = [
    "CROPS",
    "DATASETS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MIN_DEPTH",
    "METRIC_NAMES",
    "DepthMetrics",
    "aggregate",
    "compute_metrics",
    "crop_mask",
    "format_table",
]
