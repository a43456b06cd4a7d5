"""Model latency per precision and execution mode, each guarded against fp32, plus the image-to-depth paths.

Every fast mode is built from the same fp32 weights, timed on the same input and checked by the accuracy guard
(``zoedepth_ros.engine.accuracy``) against fp32 eager on the probe images at that size, so a mode's speed is never
reported without its accuracy.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..engine.accuracy import guard, probe_images, reference_results, settled
from ..engine.encodings import array_to_tensor, to_rgb
from ..engine.runtime import DepthRunner
from ..model import ZoeDepth, set_precision
from .stats import summarize
from .timing import time_callable

NET_SIZE = (384, 512)  # the targets' "ZoeD_NK at 384x512": the network size of a 4:3 camera


def probe_uint8(height: int, width: int) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 camera image (the first probe scene)."""
    rgb = probe_images(height, width)[0][0]
    return (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_runner(
    fp32_model: ZoeDepth, device: torch.device, precision: str, mode: str, channels_last: bool
) -> DepthRunner:
    """A runner on a copy of ``fp32_model`` (or the model itself for fp32 eager)."""
    if precision == "fp32" and mode == "eager" and not channels_last:
        return DepthRunner(fp32_model, device)
    model = set_precision(copy.deepcopy(fp32_model), precision)
    return DepthRunner(model, device, mode=mode, channels_last=channels_last)


def image_to_depth(runner: DepthRunner) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 (H, W, 3) -> (H, W) depth through ``runner``: upload, RGB on the device, model (pad, no flip)."""

    def run(image: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            rgb = to_rgb(array_to_tensor(image).to(runner.device, non_blocking=True), "rgb8")
            return runner(rgb, pad_input=True, flip_aug=False).depth[0, 0]

    return run


def measure_modes(
    fp32_model: ZoeDepth,
    device: torch.device,
    sizes: Sequence[tuple[int, int]],
    precisions: Sequence[str],
    modes: Sequence[str],
    *,
    channels_last: bool,
    warmup: int,
    iters: int,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per (size, precision, mode): latency / throughput of the model call and the guard's verdict.

    ``sizes`` are (height, width) camera sizes, run with reflect padding as the node does; the special size
    ``NET_SIZE`` is also run without padding, i.e. the network at exactly 384x512.
    """
    rows: list[dict[str, Any]] = []
    for height, width in sizes:
        cases = [(True, "camera")] + ([(False, "network")] if (height, width) == NET_SIZE else [])
        for pad, scope in cases:
            images = probe_images(height, width, device=device)
            with torch.inference_mode():
                reference = reference_results(fp32_model, images, pad_input=pad)
            for precision in precisions:
                for mode in modes:
                    row: dict[str, Any] = {
                        "height": height,
                        "width": width,
                        "scope": scope,
                        "pad_input": pad,
                        "precision": precision,
                        "mode": mode,
                        "channels_last": channels_last and device.type == "cuda",
                    }
                    try:
                        runner = build_runner(fp32_model, device, precision, mode, channels_last)
                        x = images[0]
                        samples = time_callable(lambda r=runner, x=x, p=pad: r(x, pad_input=p), device, warmup, iters)
                        report = guard(
                            reference,
                            lambda im, r=runner, p=pad: settled(r(im, pad_input=p)),
                            images,
                            runner.describe(),
                        )
                    except Exception as e:  # a mode this device cannot run is reported, not fatal
                        row["error"] = f"{type(e).__name__}: {e}"
                        log(f"  {width}x{height} {precision} {mode}: {row['error']}")
                        rows.append(row)
                        continue
                    finally:
                        runner = None
                        _free(device)
                    stats = summarize(samples)
                    row.update(latency=stats, throughput_fps=1e3 / stats["mean_ms"], guard=report.as_dict())
                    log(
                        f"  {width}x{height} {scope} {precision:>4} {mode:<10} p50 {stats['p50_ms']:9.2f} ms "
                        f"guard {'ok' if report.passed else 'FAIL'} ({report.mean_rel_diff:.1e})"
                    )
                    rows.append(row)
    return rows


def best_row(rows: Sequence[dict[str, Any]], height: int, width: int, scope: str) -> dict[str, Any] | None:
    """The fastest row for a size and scope that passed the guard (fp32 eager always passes)."""
    ok = [
        r
        for r in rows
        if r["height"] == height
        and r["width"] == width
        and r["scope"] == scope
        and "error" not in r
        and r["guard"]["passed"]
    ]
    return min(ok, key=lambda r: r["latency"]["p50_ms"], default=None)


def compare_paths(
    fp32_model: ZoeDepth,
    device: torch.device,
    sizes: Sequence[tuple[int, int]],
    rows: Sequence[dict[str, Any]],
    *,
    channels_last: bool,
    warmup: int,
    iters: int,
    with_transformers: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Image in, depth out, at each camera size: ours in its best guarded mode vs our eager fp32 with the
    official defaults (pad + flip) vs transformers' ZoeDepthForDepthEstimation with its default processing."""
    from . import reference as ref

    hf_model = None
    hf_error = None
    if with_transformers:
        try:
            hf_model = ref.hf_model_from(fp32_model, device)
        except Exception as e:  # transformers missing, or a config it cannot express
            hf_error = f"{type(e).__name__}: {e}"
    out = []
    for height, width in sizes:
        best = best_row(rows, height, width, "camera")
        precision, mode = (best["precision"], best["mode"]) if best else ("fp32", "eager")
        image = probe_uint8(height, width)
        entry: dict[str, Any] = {"height": height, "width": width, "ours_mode": f"{precision} {mode}"}
        runner = build_runner(fp32_model, device, precision, mode, channels_last)
        paths = {
            "ours": image_to_depth(runner),
            "official_defaults_fp32": ref.official_defaults_pipeline(fp32_model, device),
        }
        if hf_model is not None:
            paths["transformers_default"] = ref.hf_default_pipeline(hf_model, device)
        for name, fn in paths.items():
            stats = summarize(time_callable(lambda f=fn, im=image: f(im), device, warmup, iters))
            entry[name] = stats
            log(f"  {width}x{height} {name:<24} p50 {stats['p50_ms']:9.2f} ms")
        base = entry["ours"]["p50_ms"]
        entry["speedup"] = {name: entry[name]["p50_ms"] / base for name in paths if name != "ours"}
        if hf_error:
            entry["transformers_default"] = {"skipped": hf_error}
        out.append(entry)
        runner = None
        _free(device)
    return out
