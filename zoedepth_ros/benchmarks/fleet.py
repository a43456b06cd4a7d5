"""``zoedepth-ros-bench --sections fleet``: zoedepth-ros-fleet against zoedepth-ros-bag run on each bag in turn.

The same synthetic bags (one camera each), the same weights and device, each command a fresh process timed from
start to exit, so every start-up counts: Python and the model once per bag for the single-machine tool; Ray, the
workers and the model once per worker for the fleet. Rows:

- ``zoedepth-ros-bag``, each bag in turn (the baseline);
- ``zoedepth-ros-fleet``, one worker holding the machine (all CPUs, or the GPU): its overhead over the baseline is
  the target (<= 10 %, ``targets.FLEET_OVERHEAD``) over a job of a few minutes;
- ``zoedepth-ros-fleet``, two workers sharing the machine (half the CPUs each, or half the GPU each);
- optionally (``images``) the same frames as a folder of PNGs: ``zoedepth-ros-predict`` against the fleet's Ray
  Data path with one worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..model import ZoeDepth, official_state_dict
from .bag import write_synthetic_bag


def _run(argv: list[str], summary: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """One command, timed from start to exit; its summary JSON's figures."""
    log("  $ " + " ".join(argv[2:]))
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{argv[2]} exited {proc.returncode}: {tail}")
    data = json.loads(summary.read_text())
    return {"seconds": round(seconds, 3), "frames_out": data.get("frames_out", 0)}


def _tool(name: str) -> list[str]:
    return [sys.executable, "-m", f"zoedepth_ros.tools.{name}"]


def measure_fleet(
    model: ZoeDepth,
    device: torch.device,
    size: tuple[int, int],
    *,
    bags: int = 4,
    frames: int = 8,
    batch: int = 4,
    images: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The rows above, as a dict for the report."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        return {"skipped": f"Ray is not installed ({e}): pip install 'zoedepth_ros[fleet]'"}
    height, width = size
    cpus = os.cpu_count() or 1
    gpu = device.type == "cuda"
    engine = ["--device", str(device), "--batch", str(batch)]
    result: dict[str, Any] = {
        "bags": bags,
        "frames_per_bag": frames,
        "width": width,
        "height": height,
        "batch": batch,
        "cpus": cpus,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = root / "weights.pt"
        torch.save({"model": {k: v.cpu() for k, v in official_state_dict(model).items()}}, checkpoint)
        engine += ["--checkpoint", str(checkpoint), "--no-download"]
        paths = []
        for i in range(bags):
            paths.append(root / "in" / f"bag{i}")
            paths[-1].parent.mkdir(exist_ok=True)
            write_synthetic_bag(paths[-1], height, width, frames)

        def row(label: str, workers: int, argv_for: Callable[[Path, Path], list[list[str]]]) -> dict[str, Any]:
            out, summary = root / label.replace(" ", "_"), root / f"{label.replace(' ', '_')}.json"
            seconds, frames_out = 0.0, 0
            for argv in argv_for(out, summary):
                got = _run(argv, summary, log)
                seconds += got["seconds"]
                frames_out += got["frames_out"]
            entry = {"command": label, "workers": workers, "seconds": round(seconds, 2), "frames_out": frames_out}
            entry["frames_per_second"] = round(frames_out / seconds, 3) if seconds else None
            result["rows"].append(entry)
            log(f"  {label}: {frames_out} frames in {seconds:.1f} s")
            return entry

        def fleet(inputs: list[Path], workers: int) -> Callable[[Path, Path], list[list[str]]]:
            share = ["--gpus-per-worker", f"{1 / workers:g}"] if gpu else ["--cpus-per-worker", f"{cpus / workers:g}"]
            return lambda out, summary: [
                [
                    *_tool("fleet"),
                    *map(str, inputs),
                    "--output-dir",
                    str(out),
                    "--address",
                    "local",
                    "--workers",
                    str(workers),
                    *share,
                    "--quiet",
                    "--summary-json",
                    str(summary),
                    *engine,
                ]
            ]

        def each_bag(out: Path, summary: Path) -> list[list[str]]:
            out.mkdir()
            return [
                [*_tool("bag"), str(p), str(out / p.name), "--quiet", "--summary-json", str(summary), *engine]
                for p in paths
            ]

        base = row("zoedepth-ros-bag each bag", 1, each_bag)
        one = row("zoedepth-ros-fleet 1 worker", 1, fleet(paths, 1))
        two = row("zoedepth-ros-fleet 2 workers", 2, fleet(paths, 2))
        result["fleet_overhead_share"] = round(one["seconds"] / base["seconds"] - 1.0, 4)
        result["two_workers_speedup"] = round(one["seconds"] / two["seconds"], 3)
        if images:
            from PIL import Image

            from .bag import _image

            folder = root / "in" / "images"
            folder.mkdir()
            for i in range(bags * frames):
                Image.fromarray(_image(i, height, width)).save(folder / f"{i:05d}.png")

            def predict(out: Path, summary: Path) -> list[list[str]]:
                return [[*_tool("predict"), str(folder), "--output", str(out), "--summary-json", str(summary), *engine]]

            images_base = row("zoedepth-ros-predict folder", 1, predict)
            images_one = row("zoedepth-ros-fleet folder 1 worker", 1, fleet([folder], 1))
            result["images_overhead_share"] = round(images_one["seconds"] / images_base["seconds"] - 1.0, 4)
    return result
