"""ZoeD_NK latent classifier: routes a batch to the indoor ("nyu") or outdoor ("kitti") metric head.

References: ZoeDepth (arXiv 2302.12288) section 3.3; upstream ``layers/patch_transformer.py`` and
``zoedepth_nk_v1.py``. Upstream names (``patch_transformer``, ``mlp_classifier``) are kept for the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import RouterConfig

HEADS = ("nyu", "kitti")  # logit index -> head name
ROUTING_TO_HEAD = {"auto": None, "indoor": "nyu", "outdoor": "kitti"}  # the ``routing`` setting -> a head to force
HEAD_ALIASES = {"nyu": "nyu", "indoor": "nyu", "kitti": "kitti", "outdoor": "kitti"}


def sinusoidal_encoding(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """(length, dim) encoding with all sines first and all cosines after (upstream's layout, not interleaved)."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    angles = pos * freq[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).to(dtype or torch.float32)


class PatchTransformerEncoder(nn.Module):
    """1x1 patch embedding, a zero class token in front, sin/cos positions, post-norm transformer layers."""

    def __init__(self, in_dim: int, cfg: RouterConfig, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        layer = nn.TransformerEncoderLayer(
            cfg.embed_dim, cfg.num_heads, dim_feedforward=cfg.ffn_dim, dropout=0.0, batch_first=True, **kw
        )
        self.transformer_encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.embedding_convPxP = nn.Conv2d(in_dim, cfg.embed_dim, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) bottleneck -> (B, E) class-token embedding."""
        tokens = F.pad(self.embedding_convPxP(x).flatten(2), (1, 0)).transpose(1, 2)  # B, 1 + h*w, E
        tokens = tokens + sinusoidal_encoding(tokens.shape[1], tokens.shape[2], tokens.device, tokens.dtype)
        return self.transformer_encoder(tokens)[:, 0]


def head_classifier(dim: int, device=None, dtype=None) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, dim, device=device, dtype=dtype),
        nn.ReLU(),
        nn.Linear(dim, len(HEADS), device=device, dtype=dtype),
    )


def batch_head(logits: torch.Tensor) -> torch.Tensor:
    """Index of the head for the whole batch: argmax of softmax of the logits summed over the batch.

    Upstream takes one decision per batch, so frames batched together share a head.
    """
    return torch.softmax(logits.float().sum(dim=0), dim=-1).argmax()


def image_heads(logits: torch.Tensor) -> torch.Tensor:
    """(B,) head index of each image, decided as ``batch_head`` decides for that image alone."""
    return torch.softmax(logits.float(), dim=-1).argmax(dim=-1)


def canonical_head(name: str) -> str:
    try:
        return HEAD_ALIASES[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown head {name!r}; use one of {sorted(HEAD_ALIASES)}") from None
