"""Reduced precision with fp32 islands: where ZoeDepth may run in bf16/fp16 and where it must not.

The BEiT encoder and its reassemble stages (about 80 % of the FLOPs) run in the low precision. The DPT decoder
stays in fp32 because MiDaS activations there overflow fp16 (ZoeDepth issue #56: ``use_amp`` gives NaN); on
CUDA its convolutions still use TF32 tensor cores by default. The metric-bins heads and the router also stay
in fp32: they are cheap, the attractor update (1 + 300 dx^2) and the log-binomial softmax are sensitive, and
the router's indoor/outdoor decision must not flip because of rounding. Each stage casts its input to the
dtype of its own weights (see ``ZoeDepth.forward`` and ``DPTDepth.forward``).
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOW_PRECISION_STAGES = ("core.core.pretrained",)  # everything else is an fp32 island


def precision_of(model: nn.Module) -> str:
    """The precision name of ``model``'s low-precision stages ("fp32" when nothing is reduced)."""
    dtype = next(model.get_submodule(LOW_PRECISION_STAGES[0]).parameters()).dtype
    return next(name for name, d in PRECISIONS.items() if d == dtype)


def set_precision(model: nn.Module, precision: str) -> nn.Module:
    """Cast the low-precision stages to ``precision`` and keep the islands in fp32 (in place; returns model).

    Only goes down from fp32: casting bf16/fp16 weights back up would not restore them, so that raises.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    current = precision_of(model)
    if current == precision:
        return model
    if current != "fp32":
        raise ValueError(f"the model is already in {current}; reload fp32 weights to run it in {precision}")
    islands_fp32 = all(p.dtype == torch.float32 for p in model.parameters())
    if not islands_fp32:
        raise ValueError("set_precision needs an fp32 model (load it with dtype=torch.float32)")
    for stage in LOW_PRECISION_STAGES:
        model.get_submodule(stage).to(PRECISIONS[precision])
    return model
