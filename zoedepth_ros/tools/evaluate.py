"""``zoedepth-ros-eval``: score a ZoeDepth checkpoint on a folder of RGB + ground-truth depth pairs.

Uses the metrics and protocol of :mod:`zoedepth_ros.evaluation`. No ROS, timm or torchvision needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zoedepth_ros.evaluation import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MIN_DEPTH,
    DepthMetrics,
    aggregate,
    compute_metrics,
    crop_mask,
    format_table,
)

PROG = "zoedepth-ros-eval"
RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_TAG = "_depth"
DEFAULT_DEPTH_SCALE = {"nyu": 1000.0, "kitti": 256.0}
DEFAULT_CROP = {"nyu": "eigen", "kitti": "garg"}

DESCRIPTION = """\
Evaluate a ZoeDepth checkpoint with the ZoeDepth metrics (d1 d2 d3 REL SqRel RMSE RMSElog log10 SILog):
metrics are computed per image and averaged over images.

Folder layout (--data, not recursive): for each RGB image <stem>.png, <stem>.jpg or <stem>.jpeg the ground
truth is <stem>_depth.png (16-bit integer depth, divided by --depth-scale to get metres) or
<stem>_depth.npy (float metres, H x W). RGB and depth must have the same size. Ground-truth pixels outside
(min-depth, max-depth), e.g. 0 for "no measurement", are ignored. RGB images without a depth file are
skipped with a warning.
"""

EPILOG = """\
defaults by --dataset: nyu -> max-depth 10, depth-scale 1000 (millimetres), crop eigen (rows 45:471,
cols 41:601 of 480x640 images); kitti -> max-depth 80, depth-scale 256, crop garg. Use --crop none for
images of other sizes. Predictions are clipped to [min-depth, max-depth]; NaN/inf predictions are
excluded and reported. With --json, metrics of images without valid pixels are written as null.
"""


class EvalError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


@dataclass(frozen=True)
class Pair:
    """One RGB image and its ground-truth depth file."""

    name: str
    rgb: Path
    depth: Path


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH_OR_DIR",
        help="checkpoint file or directory, anything zoedepth_ros.model.load accepts",
    )
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="folder of RGB + depth pairs")
    p.add_argument(
        "--dataset",
        choices=("nyu", "kitti"),
        default="nyu",
        help="protocol defaults: max depth, depth scale, crop (default: nyu)",
    )
    p.add_argument(
        "--min-depth",
        type=float,
        default=DEFAULT_MIN_DEPTH,
        metavar="M",
        help=f"minimum valid depth in metres (default: {DEFAULT_MIN_DEPTH})",
    )
    p.add_argument(
        "--max-depth",
        type=float,
        default=None,
        metavar="M",
        help="maximum valid depth in metres (default: 10 nyu, 80 kitti)",
    )
    p.add_argument(
        "--crop",
        choices=("none", "garg", "eigen"),
        default=None,
        help="evaluation crop (default: eigen for nyu, garg for kitti)",
    )
    p.add_argument(
        "--depth-scale",
        type=float,
        default=None,
        metavar="S",
        help="divisor for 16-bit depth PNGs (default: 1000 nyu, 256 kitti); unused for .npy",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="auto",
        help="inference device (default: auto = cuda if available)",
    )
    p.add_argument("--no-pad", action="store_true", help="disable the reflect-padding of the input")
    p.add_argument("--no-flip", action="store_true", help="disable horizontal-flip test-time augmentation")
    p.add_argument(
        "--domain",
        choices=("auto", "nyu", "kitti"),
        default="auto",
        help="NK models: bin head to use (default: auto = the model's router decides)",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N pairs")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="also write settings, per-image and mean metrics to this JSON file",
    )
    p.add_argument("--per-image", action="store_true", help="print a table row per image as well")
    return p


def find_pairs(folder: Path) -> tuple[list[Pair], list[str]]:
    """Pairs in ``folder`` sorted by name, and the names of RGB images without ground truth."""
    if not folder.is_dir():
        raise EvalError(f"data folder not found: {folder}")
    rgb_by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in RGB_SUFFIXES or path.stem.endswith(DEPTH_TAG):
            continue
        if path.stem in rgb_by_stem:
            raise EvalError(f"two RGB images share the stem {path.stem!r}: {rgb_by_stem[path.stem].name}, {path.name}")
        rgb_by_stem[path.stem] = path
    pairs, unpaired = [], []
    for stem, rgb in rgb_by_stem.items():
        candidates = [folder / f"{stem}{DEPTH_TAG}{ext}" for ext in (".png", ".npy")]
        found = [c for c in candidates if c.is_file()]
        if len(found) > 1:
            raise EvalError(f"ambiguous ground truth for {rgb.name}: both {found[0].name} and {found[1].name} exist")
        if found:
            pairs.append(Pair(stem, rgb, found[0]))
        else:
            unpaired.append(rgb.name)
    if not pairs:
        raise EvalError(f"no <stem>.png|.jpg|.jpeg + <stem>_depth.png|.npy pairs in {folder}")
    return pairs, unpaired


def read_rgb(path: Path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise EvalError(f"cannot read RGB image {path}: {exc}") from exc


def read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """An (H, W) float64 ground-truth depth map in metres."""
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EvalError(f"cannot read depth file {path}: {exc}") from exc
        if arr.dtype.kind not in "fiu":
            raise EvalError(f"depth file {path} holds {arr.dtype}, expected float metres")
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.array(im)
        except (OSError, ValueError) as exc:
            raise EvalError(f"cannot read depth image {path}: {exc}") from exc
        if arr.dtype.kind not in "iu":
            raise EvalError(f"depth image {path} is not an integer (16-bit) PNG (got {arr.dtype})")
        arr = arr / depth_scale
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise EvalError(f"depth file {path} must be a single-channel H x W map, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _image_size(path: Path, what: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read {what} {path}: {exc}") from exc


def check_pair(pair: Pair) -> tuple[int, int]:
    """The pair's (H, W); raises EvalError unless both files open and agree in size (reads headers only)."""
    rgb_hw = _image_size(pair.rgb, "RGB image")
    if pair.depth.suffix == ".npy":
        try:
            shape = np.load(pair.depth, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as exc:
            raise EvalError(f"cannot read depth file {pair.depth}: {exc}") from exc
        squeezed = tuple(s for s in shape if s != 1) if len(shape) > 2 else tuple(shape)
        depth_hw = squeezed if len(squeezed) == 2 else shape
    else:
        depth_hw = _image_size(pair.depth, "depth image")
    if tuple(depth_hw) != rgb_hw:
        raise EvalError(
            f"size mismatch for {pair.name}: RGB is {rgb_hw[0]}x{rgb_hw[1]} but depth is "
            f"{'x'.join(map(str, depth_hw))} (H x W)"
        )
    return rgb_hw


def _json_metrics(m: DepthMetrics) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.as_dict().items()}


def run(args: argparse.Namespace) -> int:
    """Evaluate with parsed arguments; raises EvalError (and friends) for the caller to report."""
    import torch

    dataset = args.dataset
    max_depth = DEFAULT_MAX_DEPTH[dataset] if args.max_depth is None else args.max_depth
    depth_scale = DEFAULT_DEPTH_SCALE[dataset] if args.depth_scale is None else args.depth_scale
    crop = DEFAULT_CROP[dataset] if args.crop is None else (None if args.crop == "none" else args.crop)
    if not (0 <= args.min_depth < max_depth and math.isfinite(max_depth)):
        raise EvalError(f"need 0 <= --min-depth < --max-depth, got {args.min_depth} and {max_depth}")
    if not (depth_scale > 0 and math.isfinite(depth_scale)):
        raise EvalError(f"--depth-scale must be positive, got {depth_scale}")
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be at least 1, got {args.limit}")

    pairs, unpaired = find_pairs(args.data)
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (", ..." if len(unpaired) > 5 else "")
        print(f"{PROG}: warning: {len(unpaired)} RGB image(s) without ground truth skipped: {shown}", file=sys.stderr)
    if args.limit is not None:
        pairs = pairs[: args.limit]
    for pair in pairs:  # fail fast, before the (slow) model load, on unreadable or mismatched files
        try:
            crop_mask(check_pair(pair), crop, dataset)
        except ValueError as exc:
            raise EvalError(f"{pair.name}: {exc}") from exc

    from zoedepth_ros.engine.device import resolve_device

    try:
        device = str(resolve_device(args.device))
    except ValueError as exc:
        raise EvalError(str(exc)) from exc
    try:
        from zoedepth_ros.model import CheckpointError, load
    except ImportError as exc:
        raise EvalError(f"the zoedepth_ros.model package cannot be imported: {exc}") from exc
    try:
        model = load(args.checkpoint, device=device, dtype=torch.float32)
    except CheckpointError as exc:
        raise EvalError(f"cannot load checkpoint {args.checkpoint}: {exc}") from exc
    domain = None if args.domain == "auto" else args.domain
    heads = tuple(getattr(model, "heads", ()))
    if domain is not None and heads and domain not in heads:
        raise EvalError(f"--domain {domain}: this model only has the {', '.join(heads)} head(s)")

    results: list[tuple[str, DepthMetrics]] = []
    for pair in tqdm(pairs, desc="evaluating", unit="img", file=sys.stderr, disable=None, leave=False):
        rgb = read_rgb(pair.rgb)
        gt = read_depth(pair.depth, depth_scale)
        if rgb.shape[:2] != gt.shape:
            raise EvalError(
                f"size mismatch for {pair.name}: RGB is {rgb.shape[0]}x{rgb.shape[1]} but depth "
                f"is {gt.shape[0]}x{gt.shape[1]} (H x W)"
            )
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32) / 255.0
        with torch.inference_mode():
            pred = model.infer(x, pad_input=not args.no_pad, flip_aug=not args.no_flip, head=domain)
        try:
            metrics = compute_metrics(
                pred[0, 0].float().cpu(), gt, min_depth=args.min_depth, max_depth=max_depth, crop=crop, dataset=dataset
            )
        except ValueError as exc:
            raise EvalError(f"{pair.name}: {exc}") from exc
        results.append((pair.name, metrics))

    empty = [name for name, m in results if m.is_empty]
    if len(empty) == len(results):
        raise EvalError(
            f"none of the {len(results)} ground-truth maps has a valid pixel in "
            f"({args.min_depth}, {max_depth}) m with crop {crop or 'none'}; check --depth-scale"
        )
    mean = aggregate(m for _, m in results)

    variant = getattr(getattr(model, "config", None), "variant", "?")
    print(f"checkpoint: {args.checkpoint} (variant {variant}), device {device}, domain {args.domain}")
    print(
        f"protocol: {dataset}, depth ({args.min_depth}, {max_depth}) m, crop {crop or 'none'}, "
        f"pad {not args.no_pad}, flip {not args.no_flip}"
    )
    print(
        f"evaluated {mean.n_images} image(s)"
        + (f"; {len(empty)} without valid pixels skipped: {', '.join(empty)}" if empty else "")
    )
    if mean.n_nonfinite:
        print(
            f"{PROG}: warning: {mean.n_nonfinite} pixel(s) with non-finite predictions were excluded", file=sys.stderr
        )
    rows = [*results, ("mean", mean)] if args.per_image else [("mean", mean)]
    print(format_table(rows))

    if args.json is not None:
        report = {
            "checkpoint": str(args.checkpoint),
            "variant": variant,
            "settings": {
                "dataset": dataset,
                "min_depth": args.min_depth,
                "max_depth": max_depth,
                "crop": crop,
                "depth_scale": depth_scale,
                "pad_input": not args.no_pad,
                "flip_aug": not args.no_flip,
                "domain": domain,
                "device": device,
            },
            "per_image": [{"name": name, **_json_metrics(m)} for name, m in results],
            "mean": _json_metrics(mean),
        }
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise EvalError(f"cannot write {args.json}: {exc}") from exc
        print(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zoedepth-ros-eval``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error (argparse already printed it)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return run(args)
    except EvalError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # model/torch failures: one line, no traceback
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
