"""Which exceptions are device failures, and how they are named in one log line.

The engine steps down its ladder for a device failure (out of memory, a CUDA / cuDNN error, a failed graph capture
or compile) and re-raises anything else - a bad frame, a programming error - unchanged.
"""

from __future__ import annotations

import re

from ..model.torch_compat import ACCELERATOR_ERRORS, OutOfMemoryError
from .onnx.export import ExportError
from .onnx.session import SessionError
from .runtime import CaptureError, CompileError
from .transfer import PinnedMemoryError

COUNTED_KINDS = ("out_of_memory", "device_error", "cudnn")  # may be transient: stepped down after a few in a row
# the mode cannot run this input: stepped down at once (an ONNX export or onnxruntime session that failed too)
IMMEDIATE_KINDS = ("capture", "compile", "export", "session")
DROPPED_KINDS = (*COUNTED_KINDS, *IMMEDIATE_KINDS)  # what ``FrameDropped.kind`` can be
MAX_REASON_CHARS = 300

# Words that CUDA, cuDNN, cuBLAS and graph errors put in their messages. Case-sensitive and whole-word, so that
# "cuda:0" (a device mismatch) and "CUDAFloatType" (a dtype mismatch) - programming errors - do not match.
_DEVICE_TEXT = re.compile(
    r"(?<![\w.])(?:CUDA(?![A-Za-z])|CUDAGraph|cudaGraph|cudaError|CUBLAS|cuBLAS|cuDNN|CUDNN"
    r"|NVRTC)"
)
_CUDNN_TEXT = re.compile(r"(?<![\w.])(?:cuDNN|CUDNN)")


def classify(exc: BaseException) -> str | None:
    """The kind of device failure ``exc`` is, or None when it is not one (then it is the caller's problem).

    Kinds: "pinned_memory", "out_of_memory", "capture" (recording a CUDA graph), "compile" (torch.compile /
    dynamo / inductor), "export" (ONNX export), "session" (onnxruntime: missing provider, session creation,
    TensorRT engine build), "cudnn", "device_error" (any other CUDA / cuBLAS / graph-replay error).
    """
    if isinstance(exc, PinnedMemoryError):
        return "pinned_memory"
    if isinstance(exc, OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, CaptureError):
        return "capture"
    if isinstance(exc, ExportError):
        return "export"
    if isinstance(exc, SessionError):
        return "session"
    if isinstance(exc, CompileError) or any(
        c.__module__.startswith(("torch._dynamo", "torch._inductor")) for c in type(exc).__mro__
    ):
        return "compile"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if _CUDNN_TEXT.search(text):
            return "cudnn"
        if isinstance(exc, ACCELERATOR_ERRORS) or _DEVICE_TEXT.search(text):
            return "device_error"
    return None


def summary(exc: BaseException) -> str:
    """``Type: first line`` of an exception (of its cause for our own wrappers), short enough for one log line."""
    if isinstance(exc, CaptureError | CompileError | PinnedMemoryError) and exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


KIND_TEXT = {
    "out_of_memory": "out of memory",
    "capture": "CUDA-graph capture failed",
    "compile": "torch.compile failed",
    "cudnn": "cuDNN error",
    "device_error": "CUDA error",
    "pinned_memory": "pinned allocation failed",
    "export": "ONNX export failed",
    "session": "onnxruntime failed",
}


def failure_text(step: str, exc: BaseException) -> str:
    """ "CUDA-graph capture failed during warm-up at 640x480 (RuntimeError: ...)", or "<step> failed (...)"."""
    kind = classify(exc)
    what = f"{KIND_TEXT[kind]} during {step}" if kind is not None else f"{step} failed"
    return f"{what} ({summary(exc)})"


class FrameDropped(Exception):
    """A frame lost to a device failure that the engine has already counted and acted on; ``kind`` names it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
