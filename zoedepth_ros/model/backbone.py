"""BEiT ViT backbone as MiDaS v3.1 runs it: any input size, per-block relative-position bias resampled.

References: BEiT (arXiv 2106.08254); MiDaS v3.1 ``backbones/beit.py`` (window-size patch); timm 0.6 ``beit.py``
for the parameter names the official ZoeDepth checkpoints use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig

LAYER_NORM_EPS = 1e-6  # timm BEiT; transformers' BeitConfig defaults to 1e-12 (a tiny deviation there)
LAYER_SCALE_INIT = 1e-5  # BEiT-L init_values
NUM_CLS_DISTANCES = 3  # extra table rows: cls->patch, patch->cls, cls->cls
MASK_ALIGNMENT = 8  # elements; attention-bias row stride the fused CUDA attention kernels accept as is


def relative_position_index(grid_h: int, grid_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Table row for every (query, key) pair of a (1 + h*w)-token sequence, cls token first.

    Patch pairs map to (dy + h - 1) * (2w - 1) + (dx + w - 1); the three cls relations use the last rows.
    """
    ys, xs = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + (grid_h - 1)
    dx = xs[:, None] - xs[None, :] + (grid_w - 1)
    n_grid = (2 * grid_h - 1) * (2 * grid_w - 1)
    index = torch.empty((grid_h * grid_w + 1,) * 2, dtype=torch.long, device=device)
    index[1:, 1:] = dy * (2 * grid_w - 1) + dx
    index[0, :] = n_grid  # cls query -> patches
    index[:, 0] = n_grid + 1  # patch queries -> cls
    index[0, 0] = n_grid + 2
    return index


def resample_bias_table(table: torch.Tensor, pretrain_grid: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Stretch the (2g-1)^2 grid part of a bias table to (2h-1) x (2w-1); keep the 3 cls rows.

    MiDaS v3.1 does this on every call with bilinear, align_corners=False (identity at the trained size).
    """
    side = 2 * pretrain_grid - 1
    grid_part, cls_part = table[: side * side], table[side * side :]
    new_h, new_w = 2 * grid_h - 1, 2 * grid_w - 1
    if (new_h, new_w) != (side, side):
        grid = grid_part.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_h, new_w), mode="bilinear", align_corners=False)
        grid_part = grid.permute(0, 2, 3, 1).reshape(new_h * new_w, -1)
    return torch.cat([grid_part, cls_part], dim=0)


def _row_aligned(bias: torch.Tensor, multiple: int = MASK_ALIGNMENT) -> torch.Tensor:
    """The same values with each row starting at a multiple of ``multiple`` elements.

    SDPA's memory-efficient CUDA kernel needs an aligned mask and otherwise pads a copy on every call;
    a 1 + h*w token sequence is never aligned.
    """
    n = bias.shape[-1]
    padded = -(-n // multiple) * multiple
    if padded == n:
        return bias.contiguous()
    out = bias.new_zeros(*bias.shape[:-1], padded)
    out[..., :n] = bias
    return out[..., :n]


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, C


class Attention(nn.Module):
    """Multi-head self-attention with q/v biases (no k bias) and a relative-position bias per head."""

    def __init__(self, dim: int, num_heads: int, pretrain_grid: int, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.pretrain_grid = pretrain_grid
        n_table = (2 * pretrain_grid - 1) ** 2 + NUM_CLS_DISTANCES
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **kw)
        self.q_bias = nn.Parameter(torch.zeros(dim, **kw))
        self.v_bias = nn.Parameter(torch.zeros(dim, **kw))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n_table, num_heads, **kw))
        self.proj = nn.Linear(dim, dim, **kw)
        # For graph export (``static_attention``): a precomputed bias held as a buffer, so that an exported graph
        # stores it as data, and explicit softmax attention, which every exporter and runtime understands.
        self.register_buffer("static_bias", None, persistent=False)
        self.explicit = False
        self._index_cache: dict[tuple[int, int, str], torch.Tensor] = {}
        # (grid_h, grid_w, dtype) -> (table version, bias): a camera's size needs its bias computed once
        self._bias_cache: dict[tuple[int, int, torch.dtype], tuple[tuple[int, int], torch.Tensor]] = {}

    def _apply(self, fn, recurse=True):
        self._bias_cache.clear()  # .to() / .half() / .cuda() replace the table
        self._index_cache.clear()
        return super()._apply(fn, recurse)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.q_bias)
        nn.init.zeros_(self.v_bias)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, grid_h: int, grid_w: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(heads, 1 + h*w, 1 + h*w) additive attention bias for a h x w patch grid, in ``dtype``.

        Without autograd it is cached per grid size and dtype, and recomputed when the table changes (in place or
        by ``load_state_dict``). Traced code (torch.compile) computes it in the graph instead.
        """
        table = self.relative_position_bias_table
        dtype = dtype or table.dtype
        cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if not cacheable:
            return _row_aligned(self._compute_bias(grid_h, grid_w).to(dtype))
        key = (grid_h, grid_w, dtype)
        version = (table._version, table.data_ptr())
        hit = self._bias_cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        bias = _row_aligned(self._compute_bias(grid_h, grid_w).to(dtype))
        self._bias_cache[key] = (version, bias)
        return bias

    def _compute_bias(self, grid_h: int, grid_w: int) -> torch.Tensor:
        table = resample_bias_table(self.relative_position_bias_table, self.pretrain_grid, grid_h, grid_w)
        key = (grid_h, grid_w, str(table.device))
        index = self._index_cache.get(key)
        if index is None:
            index = self._index_cache[key] = relative_position_index(grid_h, grid_w, table.device)
        n = grid_h * grid_w + 1
        return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        qkv_bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, heads, N, head_dim
        if self.static_bias is not None:
            bias = self.static_bias.to(q.dtype).unsqueeze(0)
        else:
            bias = self.relative_position_bias(*grid_hw, q.dtype).unsqueeze(0)
        if self.explicit:
            # softmax in fp32, as the fused kernels accumulate it: an explicit fp32 island in a reduced graph
            scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-2, -1)).float() + bias.float()
            out = torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, device=None, dtype=None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale: x += g1 * attn(norm1 x); x += g2 * mlp(norm2 x)."""

    def __init__(self, cfg: BackboneConfig, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS, **kw)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.pretrain_grid, **kw)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS, **kw)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_dim, **kw)
        self.gamma_1 = nn.Parameter(torch.full((cfg.embed_dim,), LAYER_SCALE_INIT, **kw))
        self.gamma_2 = nn.Parameter(torch.full((cfg.embed_dim,), LAYER_SCALE_INIT, **kw))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma_1, LAYER_SCALE_INIT)
        nn.init.constant_(self.gamma_2, LAYER_SCALE_INIT)

    def _norm(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        if not self.attn.explicit or x.dtype == torch.float32:
            return norm(x)
        # export: an explicit fp32 island (torch's reduced-precision kernels compute the statistics in fp32
        # too; TensorRT's strongly-typed mode would otherwise run fp16 LayerNorm, which overflows after attention)
        w, b = norm.weight.float(), norm.bias.float()
        return F.layer_norm(x.float(), norm.normalized_shape, w, b, norm.eps).to(x.dtype)

    def forward(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self._norm(self.norm1, x), grid_hw)
        return x + self.gamma_2 * self.mlp(self._norm(self.norm2, x))


class Beit(nn.Module):
    """BEiT encoder without absolute position embedding or final norm (MiDaS uses block outputs)."""

    def __init__(self, cfg: BackboneConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim, device=device, dtype=dtype)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim, device=device, dtype=dtype))
        self.blocks = nn.ModuleList(Block(cfg, device=device, dtype=dtype) for _ in range(cfg.depth))

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token sequences (B, 1 + h*w, C) after each of ``cfg.hook_blocks``; h, w = input size / patch."""
        p = self.cfg.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        grid_hw = (x.shape[-2] // p, x.shape[-1] // p)
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        hooks = set(self.cfg.hook_blocks)
        outputs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, grid_hw)
            if i in hooks:
                outputs.append(tokens)
        return outputs


@contextmanager
def static_attention(beit: Beit, grid_hw: tuple[int, int]) -> Iterator[None]:
    """Within the block, every attention layer runs explicit softmax attention on a fixed, precomputed bias, and
    in reduced precision the softmax and the layer norms compute in fp32 with explicit casts.

    For exporting a graph at one input size: the bias (resampled table gathered per token pair) becomes a
    constant tensor the exporter writes as data, instead of a resample-and-gather subgraph that a runtime would
    fold at load time (tens of GB for BEiT-L). The numbers are those of the fused path up to float rounding.
    """
    layers = [block.attn for block in beit.blocks]
    try:
        with torch.no_grad():
            for attn in layers:
                attn.static_bias = attn._compute_bias(*grid_hw).contiguous()
                attn.explicit = True
        yield
    finally:
        for attn in layers:
            attn.static_bias = None
            attn.explicit = False
