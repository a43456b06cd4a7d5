"""Turn a device setting (auto, cpu, cuda, cuda:N) into a torch.device, failing clearly when it cannot run."""

from __future__ import annotations

import torch


def resolve_device(spec: str) -> torch.device:
    """``auto`` is cuda when available, else cpu; a CUDA device that does not exist raises ValueError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return device
