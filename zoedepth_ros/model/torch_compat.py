"""What differs between the oldest supported torch (2.3: NVIDIA's JetPack 6.0 wheels) and the newest: one place.

Everything here is feature detection (``hasattr`` or a tiny probe at import), never version parsing: NVIDIA's
Jetson wheels carry pre-release versions such as ``2.4.0a0+07cecf4168.nv24.05``. On a recent torch every name is
the native one (``OutOfMemoryError is torch.OutOfMemoryError``) and ``reflect_pad`` is plain ``F.pad``, so the
results are the same as without this module. It lives in ``model`` because both layers need it and the model
package must not import the engine.

Not a fallback but a rule for the whole package: the records that a traced call builds (``ForwardOutput``,
``InferenceResult``) are plain, not frozen, dataclasses, because torch.compile (dynamo) cannot build
a frozen dataclass inside a ``fullgraph`` trace in torch 2.3 (recent torch can).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

OLDEST_TORCH = "2.3"  # the floor declared in setup.py; test/test_torch_floor.py audits the APIs used against it

# torch.OutOfMemoryError (device-generic) is not in torch 2.3, where the same exception is torch.cuda.OutOfMemoryError;
# recent torch keeps torch.cuda.OutOfMemoryError as an alias of the generic one.
OutOfMemoryError: type[RuntimeError] = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError

# torch.AcceleratorError (CUDA errors as their own type) is recent; older torch raises a RuntimeError whose text
# names CUDA, which ``engine.failures`` recognises by its words. An empty tuple matches nothing in isinstance.
ACCELERATOR_ERRORS: tuple[type[BaseException], ...] = (
    (torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()
)


def _cpu_reflect_pad_works(dtype: torch.dtype) -> bool:
    try:
        F.pad(torch.zeros((1, 1, 2, 2), dtype=dtype), (1, 1, 1, 1), mode="reflect")
    except RuntimeError:  # '"reflection_pad2d" not implemented for 'Half'' (torch 2.3 on the CPU)
        return False
    return True


# Reduced-precision dtypes whose CPU reflection padding kernel is missing (fp16 on torch 2.3; none on recent torch).
CPU_REFLECT_PAD_UPCAST = frozenset(d for d in (torch.float16, torch.bfloat16) if not _cpu_reflect_pad_works(d))


def reflect_pad(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """``F.pad(x, pads, mode="reflect")``; where the CPU kernel lacks ``x``'s dtype, padded in fp32 and cast back.

    Padding only copies values and fp16 -> fp32 -> fp16 is exact, so the fallback gives the same tensor.
    """
    if x.dtype in CPU_REFLECT_PAD_UPCAST and x.device.type == "cpu":
        return F.pad(x.float(), pads, mode="reflect").to(x.dtype)
    return F.pad(x, pads, mode="reflect")


# The torch.export-based ONNX exporter (torch.onnx.export(dynamo=True)): torch 2.5 and later. The TorchScript
# exporter of older torch cannot export this model (it traces Python arithmetic on shapes), so there is no fallback:
# ``engine.onnx.export`` says to export on a machine with a newer torch.
ONNX_DYNAMO_EXPORT = "dynamo" in inspect.signature(torch.onnx.export).parameters


def onnx_export(module: torch.nn.Module, args: tuple, **kwargs):
    """``torch.onnx.export(module, args, dynamo=True, **kwargs)``: the ONNXProgram (torch >= 2.5 only)."""
    if not ONNX_DYNAMO_EXPORT:
        raise RuntimeError(f"torch {torch.__version__} has no torch.export-based ONNX exporter (torch >= 2.5 has)")
    return torch.onnx.export(module, args, dynamo=True, **kwargs)
