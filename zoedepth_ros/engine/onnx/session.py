"""ONNX Runtime sessions for an exported graph: which execution provider, with which options, and what it costs.

Rung modes and their providers (onnxruntime always keeps its CPU provider behind them for unsupported nodes)::

    ort_tensorrt   TensorRT (engine and timing caches on disk), CUDA for what TensorRT does not take
    ort_cuda       CUDA
    ort_cpu        CPU

A TensorRT engine build takes minutes on a Jetson: ``open_session`` logs a line every ``PROGRESS_SECONDS`` while
the session is being created, so a silent node is never mistaken for a hung one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .cache import tensorrt_cache_dir

ORT_MODES = {
    "ort_tensorrt": "TensorrtExecutionProvider",
    "ort_cuda": "CUDAExecutionProvider",
    "ort_cpu": "CPUExecutionProvider",
}
PROGRESS_SECONDS = 10.0
DEFAULT_WORKSPACE_GB = 4.0  # TensorRT's tactic scratch space; a Jetson Orin NX 8 GB shares it with the CPU

log = logging.getLogger(__name__)


class SessionError(RuntimeError):
    """onnxruntime is missing, lacks the provider, or could not create the session (or build the engine)."""


@dataclass(frozen=True)
class SessionSettings:
    """User knobs for sessions (node parameters ``onnx_*``)."""

    workspace_gb: float = DEFAULT_WORKSPACE_GB
    cache_root: Path | None = None  # default: weights.cache_dir()
    intra_op_threads: int = 0  # 0: onnxruntime's default (one per physical core)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise SessionError(
            "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu on a CUDA machine; README, "
            "'ONNX Runtime and TensorRT')"
        ) from None
    return onnxruntime


def available_modes() -> list[str]:
    """The ORT rung modes this onnxruntime build offers, fastest first ([] without onnxruntime)."""
    try:
        providers = set(import_onnxruntime().get_available_providers())
    except SessionError:
        return []
    return [mode for mode, provider in ORT_MODES.items() if provider in providers]


def tensorrt_version() -> str:
    """The TensorRT library version onnxruntime will load: the Python package's, else libnvinfer's own
    ``getInferLibVersion`` (JetPack installs TensorRT system-wide, outside a venv), else "unknown"."""
    try:
        import tensorrt

        return tensorrt.__version__
    except Exception:
        pass
    import ctypes

    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(name)
            lib.getInferLibVersion.restype = ctypes.c_int32
            v = int(lib.getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # 8.x encodes major*1000 + minor*100 + patch; 10.x major*10000 + minor*100 + patch
        major, rest = (v // 10000, v % 10000) if v >= 10000 else (v // 1000, v % 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    return "unknown"


def engine_cache_for(device: torch.device, settings: SessionSettings) -> Path:
    ort = import_onnxruntime()
    index = device.index or 0
    name = torch.cuda.get_device_name(index) if torch.cuda.is_available() else "gpu"
    cc = torch.cuda.get_device_capability(index) if torch.cuda.is_available() else (0, 0)
    return tensorrt_cache_dir(name, cc, tensorrt_version(), ort.__version__, settings.cache_root)


def providers_for(mode: str, device: torch.device, precision: str, settings: SessionSettings) -> list:
    """The ``providers`` argument of ``InferenceSession`` for a rung mode."""
    if mode not in ORT_MODES:
        raise ValueError(f"unknown onnxruntime mode {mode!r}; use one of {', '.join(ORT_MODES)}")
    if mode == "ort_cpu":
        return ["CPUExecutionProvider"]
    # onnxruntime computes on torch's current stream: the frame's preprocessing is ordered before it on the
    # device, with no host wait (``OrtRunner`` synchronises only when called from another stream)
    stream = str(torch.cuda.current_stream(device).cuda_stream)
    cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0, "user_compute_stream": stream})
    if mode == "ort_cuda":
        return [cuda]
    cache = engine_cache_for(device, settings)
    cache.mkdir(parents=True, exist_ok=True)
    trt = {
        "device_id": device.index or 0,
        "trt_max_workspace_size": int(settings.workspace_gb * (1 << 30)),
        # the graph carries its own types (fp32 islands as casts); fp16 kernels only where the graph is fp16
        "trt_fp16_enable": precision == "fp16",
        "trt_layer_norm_fp32_fallback": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "user_compute_stream": stream,
    }
    if precision == "bf16":  # only then: onnxruntime before 1.20 rejects the option as unknown
        trt["trt_bf16_enable"] = True
    return [("TensorrtExecutionProvider", trt), cuda]


def open_session(
    path: Path,
    mode: str,
    device: torch.device,
    precision: str,
    settings: SessionSettings,
    info: Callable[[str], None] | None = None,
):
    """An ``InferenceSession`` for ``path`` on the rung mode's provider; SessionError when it cannot be had.

    onnxruntime silently drops a provider it cannot load (a missing TensorRT library) and runs on the next one;
    that is a failure of this rung, not a success on another, so it raises.
    """
    ort = import_onnxruntime()
    info = info or log.info
    wanted = ORT_MODES[mode]
    present = ort.get_available_providers()
    if wanted not in present:
        raise SessionError(f"this onnxruntime ({ort.__version__}) has no {wanted}; available: {', '.join(present)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about CPU fallbacks of shape ops are noise
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    providers = providers_for(mode, device, precision, settings)
    what = "building or loading the TensorRT engine" if mode == "ort_tensorrt" else "creating the session"
    done = threading.Event()
    t0 = time.monotonic()

    def progress() -> None:
        while not done.wait(PROGRESS_SECONDS):
            info(f"onnxruntime: still {what} for {path.name} ({time.monotonic() - t0:.0f} s)")

    ticker = threading.Thread(target=progress, name="ort-progress", daemon=True)
    ticker.start()
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise SessionError(f"onnxruntime could not open {path.name} with {wanted}: {first}") from e
    finally:
        done.set()
        ticker.join()
    if session.get_providers()[0] != wanted:
        raise SessionError(f"onnxruntime fell back from {wanted} to {session.get_providers()[0]} for {path.name}")
    info(f"onnxruntime: {wanted} ready for {path.name} in {time.monotonic() - t0:.1f} s")
    return session
