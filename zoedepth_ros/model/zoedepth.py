"""ZoeDepth assembly: MiDaS DPT-BEiT relative core + metric bins head(s) + the NK router.

References: ZoeDepth (arXiv 2302.12288); upstream ``zoedepth_v1.py`` / ``zoedepth_nk_v1.py`` and
``depth_model.py`` (``infer``). Attribute names equal the official state_dict prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import ZoeDepthConfig
from .decoder import DPTDepth, DPTFeatures
from .metric_bins import AttractorLayer, ConditionalLogBinomial, Projector, SeedBinRegressor, resize_to
from .processing import net_input_size, pad_reflect, prepare_input, restore_size
from .router import HEADS, PatchTransformerEncoder, batch_head, canonical_head, head_classifier, image_heads


class MidasCore(nn.Module):
    """Holds the DPT model under the name ``core`` (the official weights live at ``core.core.*``)."""

    def __init__(self, dpt: DPTDepth) -> None:
        super().__init__()
        self.core = dpt

    def forward(self, x: torch.Tensor) -> DPTFeatures:
        return self.core(x)


@dataclass  # not frozen: torch.compile in torch 2.3 cannot build a frozen dataclass in a trace (torch_compat)
class ForwardOutput:
    """``ZoeDepth.forward`` output: metric depth at network resolution and the head each image went to."""

    metric_depth: torch.Tensor  # (B, 1, h, w) metres
    head_index: torch.Tensor  # (B,) long: each image's head, an index into ``ZoeDepth.heads``
    head: str | None  # the one head that served the whole batch; None when selected per image on the device
    head_logits: torch.Tensor | None  # (B, 2) router logits for NK (also when the head is forced); else None


@dataclass  # not frozen, as ForwardOutput
class InferenceResult:
    """``ZoeDepth.predict`` output: depth at input size and the routing of each forward pass.

    The heads are kept as a device tensor so that on-device routing needs no host sync; ``heads`` and
    ``image_heads`` read it (and sync) only when asked.
    """

    depth: torch.Tensor  # B, 1, H, W metres
    head_indices: torch.Tensor  # (passes, B) long: index into head_names; 2 passes with flip augmentation
    head_logits: tuple[torch.Tensor, ...]  # (B, 2) per pass; empty for single-head models
    forced: bool
    head_names: tuple[str, ...]

    def image_heads(self, index: int = 0) -> tuple[str, ...]:
        """The head of each pass for image ``index`` of the batch."""
        return tuple(self.head_names[i] for i in self.head_indices[:, index].tolist())

    @property
    def heads(self) -> tuple[str, ...]:
        """The head of each pass for the first image (all of a batch's, with batch routing)."""
        return self.image_heads(0)


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a stage computes in: that of its parameters (``precision.set_precision`` may mix them)."""
    return next(module.parameters()).dtype


class ZoeDepth(nn.Module):
    """ZoeD_N, ZoeD_K or ZoeD_NK, chosen by ``config``.

    Args:
        config: architecture; see ``config.PRESETS`` and ``tiny_config``.
        device, dtype: where and how parameters are created (``"meta"`` builds without memory for loading).
    """

    def __init__(self, config: ZoeDepthConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        kw = {"device": device, "dtype": dtype}
        d, m = config.decoder, config.metric
        normed = m.bin_centers == "normed"
        self.core = MidasCore(DPTDepth(config.backbone, d, **kw))
        self.conv2 = nn.Conv2d(d.features, d.features, 1, **kw)
        clb_in = d.relative_dim + int(m.use_relative_depth)

        def seed(h):
            return SeedBinRegressor(d.features, m.seed_mlp_dim, m.n_bins, normed, h.min_depth, h.max_depth, **kw)

        def attractors(h):
            return nn.ModuleList(
                AttractorLayer(m.bin_embedding_dim, m.attractor_mlp_dim, n, normed, h.min_depth, h.max_depth, **kw)
                for n in m.n_attractors
            )

        def clb(h):
            return ConditionalLogBinomial(
                clb_in, m.bin_embedding_dim, m.clb_hidden_dim, m.n_bins, m.min_temp, m.max_temp, **kw
            )

        multi = config.router is not None
        if multi:
            self.patch_transformer = PatchTransformerEncoder(d.features, config.router, **kw)
            self.mlp_classifier = head_classifier(config.router.embed_dim, **kw)
            self.seed_bin_regressors = nn.ModuleDict({h.name: seed(h) for h in m.heads})
        else:
            self.seed_bin_regressor = seed(m.heads[0])
        self.seed_projector = Projector(d.features, m.projector_mlp_dim, m.bin_embedding_dim, **kw)
        self.projectors = nn.ModuleList(
            Projector(d.features, m.projector_mlp_dim, m.bin_embedding_dim, **kw) for _ in range(4)
        )
        # registration order = upstream state_dict order
        if multi:
            self.attractors = nn.ModuleDict({h.name: attractors(h) for h in m.heads})
            self.conditional_log_binomial = nn.ModuleDict({h.name: clb(h) for h in m.heads})
        else:
            self.attractors = attractors(m.heads[0])
            self.conditional_log_binomial = clb(m.heads[0])
        self.eval()

    @property
    def heads(self) -> tuple[str, ...]:
        """The metric heads this model has, in router-logit order for NK."""
        return self.config.head_names

    def _head(self, name: str) -> tuple[SeedBinRegressor, nn.ModuleList, ConditionalLogBinomial]:
        if self.config.router is None:
            return self.seed_bin_regressor, self.attractors, self.conditional_log_binomial
        return self.seed_bin_regressors[name], self.attractors[name], self.conditional_log_binomial[name]

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected an RGB batch of shape (B, 3, H, W), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"expected float RGB in [0, 1], got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError("empty batch")

    def resolve_head(self, head: str | None) -> str | None:
        """The canonical name of a head to force ("indoor" -> "nyu"); ValueError when this model lacks it."""
        if head is None:
            return None
        name = canonical_head(head)
        if name not in self.heads:
            raise ValueError(
                f"this {self.config.variant.upper()} model has only the {self.heads} head(s); cannot force {head!r}"
            )
        return name

    def forward(
        self, x: torch.Tensor, head: str | None = None, route_on_device: bool = False, per_image: bool = False
    ) -> ForwardOutput:
        """Metric depth at network resolution.

        Args:
            x: (B, 3, H, W) RGB float in [0, 1]; resized and normalised here as upstream does.
            head: force a head ("nyu"/"indoor" or "kitti"/"outdoor") instead of the router.
            route_on_device: NK only: run both heads and select on the device instead of reading the router's
                decision on the host, so that the forward has no host sync (CUDA graphs, torch.compile).
                The selected depth is the same as with host routing.
            per_image: NK only: each image gets the head its own router picks, as if it were alone (frames of
                independent cameras batched together). Off, the batch shares one decision, as upstream does;
                for a batch of one the two are the same.
        """
        self._check_input(x)
        forced = self.resolve_head(head)
        size = net_input_size(x.shape[-2], x.shape[-1], self.config.net_size, self.config.keep_aspect)
        device = self.conv2.weight.device
        batch = x.shape[0]
        feats = self.core(prepare_input(x.to(device), size).to(module_dtype(self.core)))
        head_dtype = module_dtype(self.conv2)
        if feats.l4_rn.dtype != head_dtype:
            feats = DPTFeatures(*(f.to(head_dtype) for f in feats))
        bottleneck = self.conv2(feats.l4_rn)
        logits = None
        if self.config.router is None:
            names, index = self.heads, torch.zeros(batch, dtype=torch.long, device=device)
        else:
            emb = self.patch_transformer(bottleneck.to(module_dtype(self.patch_transformer)))
            logits = self.mlp_classifier(emb).float()
            if forced is not None:
                names, index = (forced,), torch.full((batch,), HEADS.index(forced), device=device)
            else:
                index = image_heads(logits) if per_image else batch_head(logits).expand(batch)
                if route_on_device:
                    names = HEADS
                else:
                    names = tuple(HEADS[i] for i in sorted(set(index.tolist())))  # one host sync per batch
        shared = self._shared_embeddings(feats, bottleneck)
        depths = [self._metric_head(name, feats, bottleneck, shared) for name in names]
        if len(depths) == 1:
            depth = depths[0]
        else:  # both heads ran: each image takes its own one
            depth = torch.where((index == 0).view(batch, 1, 1, 1), depths[0], depths[1])
        return ForwardOutput(depth, index, names[0] if len(names) == 1 else None, logits)

    def _shared_embeddings(self, feats: DPTFeatures, bottleneck: torch.Tensor) -> list[torch.Tensor]:
        """Bin embeddings both heads read: the seed projection, then one per decoder level."""
        return [self.seed_projector(bottleneck)] + [
            p(level) for p, level in zip(self.projectors, feats[3:], strict=True)
        ]

    def _metric_head(
        self, name: str, feats: DPTFeatures, bottleneck: torch.Tensor, embeddings: list[torch.Tensor]
    ) -> torch.Tensor:
        """Seed bins -> attractor refinement over the decoder levels -> log-binomial expectation, one head."""
        seed_regressor, attractors, clb = self._head(name)
        bins, centers = seed_regressor(bottleneck)
        for attractor, prev_emb, emb in zip(attractors, embeddings[:-1], embeddings[1:], strict=True):
            bins, centers = attractor(emb, prev_emb, bins)
        last = feats.out_conv
        if self.config.metric.use_relative_depth:
            last = torch.cat([last, resize_to(feats.rel_depth, last.shape[-2:])], dim=1)
        probs = clb(last, resize_to(embeddings[-1], last.shape[-2:]))
        centers = resize_to(centers, last.shape[-2:])
        return torch.sum(probs * centers, dim=1, keepdim=True)

    def _infer_once(
        self, x: torch.Tensor, pad_input: bool, head: str | None, route_on_device: bool, per_image: bool
    ) -> tuple[torch.Tensor, ForwardOutput]:
        pads = (0, 0)
        if pad_input:
            x, pads = pad_reflect(x)
        out = self(x, head=head, route_on_device=route_on_device, per_image=per_image)
        depth = restore_size(out.metric_depth.float(), tuple(x.shape[-2:]), pads)
        return depth, out

    @torch.no_grad()
    def predict(
        self,
        x: torch.Tensor,
        pad_input: bool = True,
        flip_aug: bool = True,
        head: str | None = None,
        route_on_device: bool = False,
        per_image: bool = False,
    ) -> InferenceResult:
        """``infer`` plus the routing of each pass (flip passes route independently, as upstream).

        With ``route_on_device`` nothing here waits for the device; ``per_image`` routes each image on its own
        (see ``forward``).
        """
        self._check_input(x)
        depth, out = self._infer_once(x, pad_input, head, route_on_device, per_image)
        outs = [out]
        if flip_aug:
            flipped, out_f = self._infer_once(torch.flip(x, dims=[3]), pad_input, head, route_on_device, per_image)
            depth = (depth + torch.flip(flipped, dims=[3])) / 2
            outs.append(out_f)
        logits = tuple(o.head_logits for o in outs if o.head_logits is not None)
        indices = torch.stack([o.head_index for o in outs])
        return InferenceResult(depth, indices, logits, head is not None, self.heads)

    def infer(
        self, x: torch.Tensor, pad_input: bool = True, flip_aug: bool = True, head: str | None = None
    ) -> torch.Tensor:
        """Official ``infer()``: optional reflect padding and flip averaging; (B, 1, H, W) metres, float32."""
        return self.predict(x, pad_input=pad_input, flip_aug=flip_aug, head=head).depth

    def net_size_for(self, height: int, width: int) -> tuple[int, int]:
        return net_input_size(height, width, self.config.net_size, self.config.keep_aspect)

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (construction already does this unless built on "meta")."""
        for module in self.modules():
            if module is self:
                continue
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if reset is not None:
                reset()
