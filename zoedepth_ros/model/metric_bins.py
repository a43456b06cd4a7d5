"""ZoeDepth metric bins module: seed bins, attractor refinement and the conditional log-binomial output.

References: ZoeDepth (arXiv 2302.12288) section 3 and its ``layers/localbins_layers.py``, ``attractor.py``
and ``dist_layers.py``. All resizes here are bilinear with align_corners=True, as upstream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Upstream configs say attractor_alpha=1000, but the attractor layers call their distance function without
# passing it, so the function's defaults (alpha 300, gamma 2) are what the released weights were trained with.
ATTRACTOR_ALPHA = 300.0
ATTRACTOR_GAMMA = 2  # dx / (1 + alpha * dx^gamma): the "inv" attractor; the updates are averaged ("mean")
BIN_EPS = 1e-3  # added before normalising bin widths / normed attractor outputs
PROB_EPS = 1e-4  # p and t regularisation in the conditional log-binomial
STIRLING_EPS = 1e-7  # keeps log(0) out of the Stirling binomial coefficient


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def inv_attractor(dx: torch.Tensor) -> torch.Tensor:
    return dx / (1 + ATTRACTOR_ALPHA * dx.pow(ATTRACTOR_GAMMA))


def _mlp(in_dim: int, hidden: int, out_dim: int, last: nn.Module | None, device=None, dtype=None) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_dim, hidden, 1, device=device, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(hidden, out_dim, 1, device=device, dtype=dtype),
    ]
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class SeedBinRegressor(nn.Module):
    """Initial per-pixel bin centres from the bottleneck.

    "softplus" (N, NK): centres are the softplus outputs directly, unbounded.
    "normed" (K): ReLU widths + eps, normalised to fill [min_depth, max_depth], centres between edges.
    Returns (bins the attractors refine, metric centres); for "normed" the former are scaled to [0, 1].
    """

    def __init__(
        self,
        in_dim: int,
        mlp_dim: int,
        n_bins: int,
        normed: bool,
        min_depth: float,
        max_depth: float,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.normed, self.min_depth, self.max_depth = normed, min_depth, max_depth
        self._net = _mlp(in_dim, mlp_dim, n_bins, nn.ReLU() if normed else nn.Softplus(), device, dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self._net(x)
        if not self.normed:
            return b, b
        widths = b + BIN_EPS
        widths = (self.max_depth - self.min_depth) * widths / widths.sum(dim=1, keepdim=True)
        edges = torch.cumsum(F.pad(widths, (0, 0, 0, 0, 1, 0), value=self.min_depth), dim=1)
        centers = 0.5 * (edges[:, :-1] + edges[:, 1:])
        return (centers - self.min_depth) / (self.max_depth - self.min_depth), centers


class Projector(nn.Module):
    """1x1 MLP from decoder features to the bin embedding."""

    def __init__(self, in_dim: int, mlp_dim: int, out_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self._net = _mlp(in_dim, mlp_dim, out_dim, None, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net(x)


class AttractorLayer(nn.Module):
    """Move every bin centre towards n attractor points: b += mean_i dx_i / (1 + 300 dx_i^2), dx_i = a_i - b.

    "softplus": attractors are softplus outputs in metres; the refined centres stay unsorted and unclipped.
    "normed" (ZoeD_K): 2n ReLU channels + eps, of which only the first of each pair is used (upstream computes a
    normalisation and then overwrites it; kept for weight compatibility); centres live in [0, 1] and are mapped
    to metres, sorted and clipped to [min_depth, max_depth].
    """

    def __init__(
        self,
        in_dim: int,
        mlp_dim: int,
        n_attractors: int,
        normed: bool,
        min_depth: float,
        max_depth: float,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.n_attractors, self.normed = n_attractors, normed
        self.min_depth, self.max_depth = min_depth, max_depth
        out = 2 * n_attractors if normed else n_attractors
        self._net = _mlp(in_dim, mlp_dim, out, nn.ReLU() if normed else nn.Softplus(), device, dtype)

    def forward(
        self,
        emb: torch.Tensor,
        prev_emb: torch.Tensor,
        bins: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._net(emb + resize_to(prev_emb, emb.shape[-2:]))  # B, n(*2), h, w
        if self.normed:
            n, _, h, w = a.shape
            a = (a + BIN_EPS).view(n, self.n_attractors, 2, h, w)[:, :, 0]
        bins = resize_to(bins, a.shape[-2:])
        delta = inv_attractor(a.unsqueeze(2) - bins.unsqueeze(1)).mean(dim=1)  # B, n_bins, h, w
        bins = bins + delta
        if not self.normed:
            return bins, bins
        centers = (self.max_depth - self.min_depth) * bins + self.min_depth
        centers = torch.sort(centers, dim=1).values.clamp(self.min_depth, self.max_depth)
        return bins, centers


def log_binomial_coefficient(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """log C(n, k) by Stirling's approximation n ln n - k ln k - (n-k) ln(n-k), as upstream (with its epsilons)."""
    n = n + STIRLING_EPS
    k = k + STIRLING_EPS
    return n * torch.log(n) - k * torch.log(k) - (n - k) * torch.log(n - k + STIRLING_EPS)


def log_binomial_probs(p: torch.Tensor, t: torch.Tensor, n_bins: int) -> torch.Tensor:
    """softmax over k of [log C(K-1, k) + k ln p + (K-1-k) ln(1-p)] / t.

    Args:
        p: (B, 1, H, W) success probability. t: (B, 1, H, W) temperature.
    Returns:
        (B, n_bins, H, W) probabilities.
    """
    k = torch.arange(n_bins, device=p.device, dtype=p.dtype).view(1, -1, 1, 1)
    k_max = torch.full((1, 1, 1, 1), n_bins - 1, device=p.device, dtype=p.dtype)
    q = torch.clamp(1 - p, min=PROB_EPS, max=1.0)  # float bounds: an int bound breaks ONNX export
    p = torch.clamp(p, min=PROB_EPS, max=1.0)
    y = log_binomial_coefficient(k_max, k) + k * torch.log(p) + (k_max - k) * torch.log(q)
    return torch.softmax(y / t, dim=1)


class ConditionalLogBinomial(nn.Module):
    """Per-pixel bin probabilities: an MLP predicts (p, t) from [features, bin embedding]."""

    def __init__(
        self,
        in_dim: int,
        cond_dim: int,
        hidden: int,
        n_bins: int,
        min_temp: float,
        max_temp: float,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.n_bins, self.min_temp, self.max_temp = n_bins, min_temp, max_temp
        self.mlp = nn.Sequential(
            nn.Conv2d(in_dim + cond_dim, hidden, 1, device=device, dtype=dtype),
            nn.GELU(),
            nn.Conv2d(hidden, 4, 1, device=device, dtype=dtype),
            nn.Softplus(),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        pt = self.mlp(torch.cat([x, cond], dim=1)) + PROB_EPS
        p = pt[:, 0:1] / (pt[:, 0:1] + pt[:, 1:2])
        t = pt[:, 2:3] / (pt[:, 2:3] + pt[:, 3:4])
        t = (self.max_temp - self.min_temp) * t + self.min_temp
        return log_binomial_probs(p, t, self.n_bins)
