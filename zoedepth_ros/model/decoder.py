"""DPT decoder and MiDaS relative-depth head, returning every feature ZoeDepth's metric head reads.

References: DPT (arXiv 2103.13413); MiDaS v3.1 ``dpt_depth.py``, ``blocks.py`` and ``backbones/utils.py``
(readout "project", reassemble factors 4, 2, 1, 1/2, fusion with align_corners=True).
Module names follow the official checkpoint: ``pretrained.{model, act_postprocess1..4}`` and ``scratch.*``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Beit
from .config import BackboneConfig, DecoderConfig


class DPTFeatures(NamedTuple):
    """What ZoeDepth reads from MiDaS (upstream collects these with forward hooks)."""

    rel_depth: torch.Tensor  # B, 1, H, W   relative inverse depth (final ReLU)
    out_conv: torch.Tensor  # B, 32, H, W  activation after output_conv[3]
    l4_rn: torch.Tensor  # B, F, H/32, W/32
    r4: torch.Tensor  # B, F, H/16, W/16  fusion outputs, coarse to fine
    r3: torch.Tensor  # B, F, H/8, W/8
    r2: torch.Tensor  # B, F, H/4, W/4
    r1: torch.Tensor  # B, F, H/2, W/2


class ProjectReadout(nn.Module):
    """Fold the cls token into every patch token: GELU(Linear([patch, cls]))."""

    def __init__(self, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim, device=device, dtype=dtype), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        cls = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat([patches, cls], dim=-1))


class Reassemble(nn.Module):
    """Tokens -> image-like map at one DPT level. Children keep the upstream indices 0, 3, 4."""

    def __init__(self, dim: int, out_dim: int, level: int, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.add_module("0", ProjectReadout(dim, **kw))
        self.add_module("3", nn.Conv2d(dim, out_dim, 1, **kw))
        resample: nn.Module | None = {
            0: nn.ConvTranspose2d(out_dim, out_dim, 4, stride=4, **kw),  # x4
            1: nn.ConvTranspose2d(out_dim, out_dim, 2, stride=2, **kw),  # x2
            2: None,  # x1
            3: nn.Conv2d(out_dim, out_dim, 3, stride=2, padding=1, **kw),  # /2
        }[level]
        if resample is not None:
            self.add_module("4", resample)

    def forward(self, tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        x = self._modules["0"](tokens).transpose(1, 2).unflatten(2, grid_hw)
        x = self._modules["3"](x)
        resample = self._modules.get("4")
        return resample(x) if resample is not None else x


class BeitReadoutBackbone(nn.Module):
    """MiDaS's ``pretrained`` container: the encoder plus its four reassemble stages."""

    def __init__(self, bcfg: BackboneConfig, dcfg: DecoderConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.model = Beit(bcfg, device=device, dtype=dtype)
        for level, out_dim in enumerate(dcfg.level_dims):
            reassemble = Reassemble(bcfg.embed_dim, out_dim, level, device=device, dtype=dtype)
            self.add_module(f"act_postprocess{level + 1}", reassemble)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p = self.model.cfg.patch_size
        grid_hw = (x.shape[-2] // p, x.shape[-1] // p)
        tokens = self.model.forward_intermediates(x)
        return [self._modules[f"act_postprocess{i + 1}"](t, grid_hw) for i, t in enumerate(tokens)]


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, device=device, dtype=dtype)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Refine a coarse path, add a skip, resize (bilinear, align_corners=True), project."""

    def __init__(self, features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, device=device, dtype=dtype)
        self.resConfUnit1 = ResidualConvUnit(features, device=device, dtype=dtype)
        self.resConfUnit2 = ResidualConvUnit(features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int] | None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    """MiDaS ``scratch``: level projections, fusion blocks and the relative-depth head."""

    def __init__(self, cfg: DecoderConfig, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        for i, dim in enumerate(cfg.level_dims):
            self.add_module(f"layer{i + 1}_rn", nn.Conv2d(dim, cfg.features, 3, padding=1, bias=False, **kw))
        for i in range(4):
            self.add_module(f"refinenet{i + 1}", FusionBlock(cfg.features, **kw))
        self.output_conv = nn.Sequential(
            nn.Conv2d(cfg.features, cfg.head_dim, 3, padding=1, **kw),
            Upsample2x(),
            nn.Conv2d(cfg.head_dim, cfg.relative_dim, 3, padding=1, **kw),
            nn.ReLU(),  # ZoeDepth taps the 32-channel activation here
            nn.Conv2d(cfg.relative_dim, 1, 1, **kw),
            nn.ReLU(),  # non_negative=True
        )

    def forward(self, levels: list[torch.Tensor]) -> DPTFeatures:
        m = self._modules
        rn = [m[f"layer{i + 1}_rn"](x) for i, x in enumerate(levels)]
        r4 = m["refinenet4"](rn[3], None, rn[2].shape[-2:])
        r3 = m["refinenet3"](r4, rn[2], rn[1].shape[-2:])
        r2 = m["refinenet2"](r3, rn[1], rn[0].shape[-2:])
        r1 = m["refinenet1"](r2, rn[0], None)
        out_conv = self.output_conv[:4](r1)
        rel_depth = self.output_conv[4:](out_conv)
        return DPTFeatures(rel_depth, out_conv, rn[3], r4, r3, r2, r1)


class DPTDepth(nn.Module):
    """MiDaS DPTDepthModel with BEiT: normalised image (B, 3, H, W) -> DPTFeatures."""

    def __init__(self, bcfg: BackboneConfig, dcfg: DecoderConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.pretrained = BeitReadoutBackbone(bcfg, dcfg, device=device, dtype=dtype)
        self.scratch = Scratch(dcfg, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> DPTFeatures:
        levels = self.pretrained(x)
        dtype = self.scratch.layer1_rn.weight.dtype  # the decoder may be an fp32 island (see precision.py)
        return self.scratch([level.to(dtype) for level in levels])
