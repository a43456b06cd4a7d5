"""The ``backends`` section: torch against onnxruntime on the same weights, input and settings, as ratios.

Every candidate is the engine's own runner (``DepthRunner`` for the torch rungs, ``OrtRunner`` for onnxruntime),
timed on the same 640x480 probe scene with the node's defaults (pad, no flip), and compared with fp32 eager: the
max depth difference and the routing are reported beside each speed. For onnxruntime the export time and file size,
and the peak memory of creating the session and of running one frame (measured in a fresh process with
onnxruntime's default session options, so nothing else is counted) are reported too.
"""

from __future__ import annotations

import copy
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.accuracy import probe_images
from ..engine.onnx.cache import GraphKey, graph_path, weights_sha256
from ..engine.onnx.graph import ExportSpec
from ..engine.onnx.runner import OrtRunner
from ..engine.onnx.session import SessionSettings
from ..engine.runtime import DepthRunner
from ..model import ZoeDepth, set_precision
from .stats import summarize
from .timing import time_callable


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over an
    exec, so a child of a large process would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: KiB on Linux-likes


def session_memory(path: Path, height: int, width: int, batch: int = 1) -> dict[str, float]:
    """Peak resident memory (MB) of a fresh process: before, after creating a default-options CPU session, after
    one run. Runs ``python -m zoedepth_ros.benchmarks.backends PATH H W B``."""
    cmd = [sys.executable, "-m", "zoedepth_ros.benchmarks.backends", str(path), str(height), str(width), str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {out.returncode}: {tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_here(path: str, height: int, width: int, batch: int) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort

    base = _peak_rss_mb()
    t0 = time.monotonic()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # default session options
    created = _peak_rss_mb()
    create_s = time.monotonic() - t0
    image = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
    session.run(None, {"image": image})
    return {
        "baseline_mb": base,
        "session_peak_mb": created,
        "run_peak_mb": _peak_rss_mb(),
        "session_create_s": create_s,
    }


def _file_mb(path: Path) -> float:
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 1e6


def _weights_mb(model: ZoeDepth) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


def measure_backends(
    model: ZoeDepth,
    device: torch.device,
    size: tuple[int, int] = (480, 640),
    *,
    warmup: int = 2,
    iters: int = 10,
    cache_root: Path | None = None,
    torch_rungs: list[tuple[str, str]] | None = None,
    ort_rungs: list[tuple[str, str]] | None = None,
    memory: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rows of (backend, precision, mode): p50 ms, speed relative to fp32 eager, max |depth - fp32 eager| (m),
    routing; plus the ONNX export and memory figures. Unavailable rungs are rows with an ``error``."""
    height, width = size
    cuda = device.type == "cuda"
    if torch_rungs is None:
        torch_rungs = [("fp32", "eager"), ("bf16", "eager")]
        if cuda:
            torch_rungs += [("fp32", "cuda_graph"), ("bf16", "cuda_graph"), ("fp16", "cuda_graph")]
    if ort_rungs is None:  # a provider that is missing is a row with its reason, not a silent gap
        wanted = ["ort_tensorrt", "ort_cuda"] if cuda else ["ort_cpu"]
        precisions = ("fp32", "fp16") if cuda else ("fp32",)  # the CPU provider has no fast fp16
        ort_rungs = [(p, m) for m in wanted for p in precisions]
    image = probe_images(height, width, device=device)[0]
    sha = weights_sha256(model)
    root = cache_root or Path(tempfile.mkdtemp(prefix="zoedepth-bench-onnx-"))
    settings = SessionSettings(cache_root=root)
    reference = model.predict(image, pad_input=True, flip_aug=False)
    rows: list[dict[str, Any]] = []

    def measure(backend: str, precision: str, mode: str, make: Callable[[], Any]) -> None:
        row: dict[str, Any] = {"backend": backend, "precision": precision, "mode": mode}
        try:
            t0 = time.monotonic()
            runner = make()
            out = runner(image, pad_input=True, flip_aug=False)  # export / session / capture happen here
            row["first_call_s"] = time.monotonic() - t0
            row["max_abs_diff_m"] = float((out.depth.float() - reference.depth).abs().max())
            row["routing_identical"] = out.heads == reference.heads
            row.update(summarize(time_callable(lambda: runner(image, True, False), device, warmup, iters)))
            log(f"  {backend} {precision} {mode}: {row['p50_ms']:.1f} ms, max diff {row['max_abs_diff_m']:.2e} m")
        except Exception as e:  # one rung's failure is a row, not the end of the section
            row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            log(f"  {backend} {precision} {mode}: {row['error']}")
        rows.append(row)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    for precision, mode in torch_rungs:

        def make_torch(precision=precision, mode=mode):
            m = model if precision == "fp32" else set_precision(copy.deepcopy(model), precision)
            return DepthRunner(m, device, mode=mode)

        measure("torch", precision, mode, make_torch)
    for precision, mode in ort_rungs:

        def make_ort(precision=precision, mode=mode):
            return OrtRunner(model, device, mode=mode, precision=precision, weights_id=lambda: sha, settings=settings)

        measure("onnxruntime", precision, mode, make_ort)
    base = next((r for r in rows if (r["backend"], r["precision"], r["mode"]) == ("torch", "fp32", "eager")), None)
    for r in rows:
        if base and "p50_ms" in r and "p50_ms" in base:
            r["speed_vs_torch_fp32_eager"] = base["p50_ms"] / r["p50_ms"]
    result: dict[str, Any] = {"size": f"{width}x{height}", "rows": rows, "weights_mb": _weights_mb(model)}
    exported = [
        graph_path(GraphKey.of(model.config.variant, sha, ExportSpec(height, width, precision=p)), root)
        for p, _ in ort_rungs
    ]
    result["onnx"] = {p.name: {"file_mb": _file_mb(p)} for p in exported if p.exists()}
    if memory and not cuda:
        for p in exported:
            if p.exists():
                log(f"  memory of a default-options onnxruntime session for {p.name}")
                result["onnx"][p.name].update(session_memory(p, height, width))
    return result


if __name__ == "__main__":  # the fresh process of ``session_memory``
    path_arg, h_arg, w_arg, b_arg = sys.argv[1:5]
    print(json.dumps(_measure_here(path_arg, int(h_arg), int(w_arg), int(b_arg))))
