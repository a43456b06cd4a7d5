"""Tiny random ZoeDepth models and checkpoints in the exact official layout, for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from zoedepth_ros.model import ZoeDepth, official_state_dict, tiny_config


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-degenerate random values (default init leaves layer scale at 1e-5 and biases
    at zero, which would hide mistakes in the transformer blocks, biases and relative-position tables)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "gamma" in name or "lambda" in name:
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
            elif ("norm" in name or "layernorm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "relative_position_bias_table" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    return module


def tiny_model(variant: str, seed: int = 0) -> ZoeDepth:
    torch.manual_seed(seed)
    return randomize_(ZoeDepth(tiny_config(variant)), seed).eval()


def save_official(model: ZoeDepth, path: Path, **save_kw) -> Path:
    torch.save({"model": official_state_dict(model), "optimizer": None, "epoch": 0}, path, **save_kw)
    return path
