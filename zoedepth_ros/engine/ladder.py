"""The rungs the engine may run on, fastest first: (precision, execution mode) pairs, and the steps between them.

See ``engine`` for how the engine walks down them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..model import PRECISIONS
from .onnx.session import ORT_MODES, available_modes
from .runtime import MODES

BACKENDS = ("torch", "onnxruntime", "auto")


@dataclass(frozen=True)
class Rung:
    """One way to run the model; ``guarded``: chosen by precision "auto", so it must pass the accuracy guard."""

    precision: str
    mode: str
    guarded: bool = False

    def __str__(self) -> str:
        return f"{self.precision} {self.mode}"

    @property
    def onnxruntime(self) -> bool:
        return self.mode in ORT_MODES

    @property
    def family(self) -> str:
        """What a guard verdict or a failed conversion applies to: a torch precision (every mode of it), or
        one onnxruntime rung (its graph and provider are its own)."""
        return str(self) if self.onnxruntime else self.precision


@dataclass(frozen=True)
class Fallback:
    """One step away from something that failed: a rung, or one of the switches (pinned memory, autotuning)."""

    failed: str  # "bf16 cuda_graph", "pinned host memory", "cuDNN autotuning"
    now: str  # what is used instead ("bf16 eager", "pageable copies", "off"; "" when nothing is left)
    phase: str  # "start-up", "warm-up", "run time"
    reason: str


def plan_ladder(
    precision: str,
    execution: str,
    device: torch.device,
    *,
    bf16_supported: bool | None = None,
    auto_precisions: Sequence[str] | None = None,
    backend: str = "torch",
    ort_modes: Sequence[str] | None = None,
) -> list[Rung]:
    """The rungs for the requested settings, fastest first (see the module docstring).

    ``auto_precisions`` replaces the reduced precisions that "auto" tries (default: bf16 and fp16 on CUDA,
    none on the CPU); ``bf16_supported`` defaults to asking the GPU. A combination that can never run (CUDA
    graphs on the CPU, unknown names) is a configuration error: ValueError, not a fallback.
    """
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use auto or one of {', '.join(PRECISIONS)}")
    if execution != "auto" and execution not in MODES:
        raise ValueError(f"unknown execution mode {execution!r}; use auto or one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    cuda = device.type == "cuda"
    if execution == "cuda_graph" and not cuda:
        raise ValueError(f"execution cuda_graph needs a CUDA device; the node runs on {device}")
    if execution == "compile":
        modes = ["compile", "cuda_graph", "eager"] if cuda else ["compile", "eager"]
    elif execution in ("auto", "cuda_graph"):
        modes = ["cuda_graph", "eager"] if cuda else ["eager"]
    else:
        modes = ["eager"]
    if precision == "auto":
        if auto_precisions is None:
            if cuda and (torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported):
                auto_precisions = ("bf16", "fp16")
            else:
                auto_precisions = ("fp16",) if cuda else ()
        precisions = [(p, True) for p in auto_precisions if p != "fp32"] + [("fp32", False)]
    else:
        precisions = [(precision, False)] + ([("fp32", False)] if precision != "fp32" else [])
    rungs = [Rung(p, m, guarded) for p, guarded in precisions for m in modes]
    if backend == "torch":
        return rungs
    return ort_rungs(precision, device, backend, ort_modes) + rungs


def ort_rungs(precision: str, device: torch.device, backend: str, ort_modes: Sequence[str] | None = None) -> list[Rung]:
    """The onnxruntime rungs above the torch ones: provider outer (TensorRT, CUDA; the CPU provider on the CPU),
    precision inner (auto: fp16 then fp32 on CUDA, fp32 on the CPU). All are guarded: each graph and provider
    must agree with torch fp32 (and, for backend auto, be faster) before it serves.

    ``ort_modes`` are the providers this onnxruntime offers (``session.available_modes()``). With backend
    "onnxruntime" every provider for the device is planned even if absent, so that the log says why it is not
    used; "auto" plans only the ones present.
    """
    cuda = device.type == "cuda"
    wanted = ["ort_tensorrt", "ort_cuda"] if cuda else ["ort_cpu"]
    if backend == "auto":
        present = available_modes() if ort_modes is None else ort_modes
        wanted = [m for m in wanted if m in present]
    if precision == "auto":
        precisions = ["fp16", "fp32"] if cuda else ["fp32"]
    else:
        precisions = [precision] + (["fp32"] if precision != "fp32" else [])
    return [Rung(p, m, True) for m in wanted for p in precisions]
