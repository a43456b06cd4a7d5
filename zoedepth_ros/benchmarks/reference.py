"""The two paths the benchmark reports speed-ups against, both built from the weights of one loaded ``ZoeDepth``:

* **transformers default**: ``ZoeDepthForDepthEstimation`` (fp32) with what a transformers user gets by default,
  the slow ``ZoeDepthImageProcessor`` with its defaults and ``post_process_depth_estimation`` back to the image size;
* **official defaults**: our model, eager fp32, with upstream ``infer()``'s defaults (reflect padding and flip
  averaging, i.e. two forward passes), including the upload and the uint8 -> float conversion.

Both take an (H, W, 3) uint8 RGB numpy image and return the (H, W) depth in metres on the device, so they time the
same work as the node: image in, depth out. transformers is an optional extra, imported inside the functions that
need it; nothing here imports timm or torchvision.

What transformers' default processing does differently from ours (``check_agreement`` measures the effect):
  * it runs on the host, in numpy: uint8 -> float32 by a float64 multiply with 1/255, ``np.pad`` reflect padding,
    a CPU ``torch.nn.functional.interpolate`` (bilinear, align_corners=True), normalisation; only the model and the
    post-processing run on the device. Ours uploads the uint8 image and does all of it on the device.
  * the sizes and modes are otherwise the official ones: the same int(sqrt(side / 2) * 3) reflect padding, the
    keep-aspect "scale closest to 1" resize to multiples of 32 around 384x512 (``ensure_multiple_of=32`` in the
    slow 4.x processor; the fast one and transformers 5.x default to 1/32, and the fast one needs torchvision),
    bicubic (align_corners=False) resize of the depth to the padded size, then the crop.
  * a single forward pass: ``post_process_depth_estimation`` only averages a flipped pass the caller ran itself, so
    the default is no flip augmentation (upstream ``infer()`` and our official-defaults path run two passes).
  * the processor's target size is always 384x512 unless configured, while our ZoeD_K preset runs around 384x768.
  * BEiT LayerNorm eps: ``hf_config_from`` sets the original 1e-6; BeitConfig's default 1e-12, which the converted
    Hub configs carry, shifts depth by a few 1e-4 m.
With the same weights on CPU the two agree bit for bit or to ~1e-7 relative (tiny and full-size random models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..engine.encodings import array_to_tensor, to_rgb
from ..model.backbone import LAYER_NORM_EPS
from ..model.config import ZoeDepthConfig
from ..model.layouts import official_to_hf
from ..model.processing import pad_reflect
from ..model.zoedepth import ZoeDepth

if TYPE_CHECKING:
    from transformers import ZoeDepthConfig as HFZoeDepthConfig
    from transformers import ZoeDepthForDepthEstimation, ZoeDepthImageProcessor

DepthFn = Callable[[np.ndarray], torch.Tensor]

# Widths transformers' ZoeDepth hard-codes or derives instead of reading them from its config.
HF_ROUTER_DIM = 128  # ZoeDepthMLPClassifier(in_features=128) in the multi-head metric head
HF_ROUTER_LAYERS = 4  # ZoeDepthPatchTransformerEncoder.forward runs exactly 4 layers
HF_NK_ATTRACTORS = 16  # every multi-head attractor layer gets the default n_attractors=16
HF_SINGLE_SEED_MLP = 256  # single-head ZoeDepthSeedBinRegressor default mlp_dim
HF_SINGLE_PROJECTOR_MLP = 128  # single-head ZoeDepthProjector default mlp_dim


def _hf_required(config: ZoeDepthConfig) -> dict[str, Any]:
    """Field path -> the value transformers' architecture implies for it, given the fields it does read."""
    d, m = config.decoder, config.metric
    multi = config.router is not None
    required: dict[str, Any] = {
        "decoder.head_dim": d.features // 2,
        "metric.seed_mlp_dim": m.bin_embedding_dim // 2 if multi else HF_SINGLE_SEED_MLP,
        "metric.projector_mlp_dim": m.bin_embedding_dim // 2 if multi else HF_SINGLE_PROJECTOR_MLP,
        "metric.attractor_mlp_dim": m.bin_embedding_dim,
        "metric.use_relative_depth": not multi,
        # conditional log-binomial hidden width: (in + condition) // bottleneck factor (4 multi-head, 2 single)
        "metric.clb_hidden_dim": (d.relative_dim + m.bin_embedding_dim) // 4
        if multi
        else (d.relative_dim + 1 + m.bin_embedding_dim) // 2,
    }
    if multi:
        required.update(
            {
                "metric.n_attractors": (HF_NK_ATTRACTORS,) * 4,
                "router.embed_dim": HF_ROUTER_DIM,
                "router.num_layers": HF_ROUTER_LAYERS,
            }
        )
    return required


def _get(config: ZoeDepthConfig, path: str) -> Any:
    part, name = path.split(".")
    return getattr(getattr(config, part), name)


def hf_incompatibilities(config: ZoeDepthConfig) -> list[str]:
    """Why transformers' ZoeDepthForDepthEstimation cannot express ``config`` (empty for the official presets)."""
    return [
        f"{path} is {_get(config, path)!r}, transformers needs {want!r}"
        for path, want in _hf_required(config).items()
        if _get(config, path) != want
    ]


def hf_compatible(config: ZoeDepthConfig) -> ZoeDepthConfig:
    """``config`` with the widths transformers hard-codes, e.g. to make a ``tiny_config`` a transformers model too.

    The official presets are returned unchanged.
    """
    groups: dict[str, dict[str, Any]] = {}
    for path, want in _hf_required(config).items():
        part, name = path.split(".")
        groups.setdefault(part, {})[name] = want
    return replace(config, **{part: replace(getattr(config, part), **fields) for part, fields in groups.items()})


def hf_config_from(config: ZoeDepthConfig) -> HFZoeDepthConfig:
    """The transformers ``ZoeDepthConfig`` of the same architecture (the mapping of the official converter, with
    the original BEiT LayerNorm eps 1e-6 and our depth range per head, i.e. 80 m for ZoeD_K)."""
    import transformers

    problems = hf_incompatibilities(config)
    if problems:
        raise ValueError(
            "transformers' ZoeDepth cannot express this architecture: "
            + "; ".join(problems)
            + " (hf_compatible() gives the nearest config it can)"
        )
    b, d, m = config.backbone, config.decoder, config.metric
    backbone = transformers.BeitConfig(
        image_size=b.pretrain_grid * b.patch_size,
        patch_size=b.patch_size,
        num_hidden_layers=b.depth,
        hidden_size=b.embed_dim,
        intermediate_size=b.mlp_dim,
        num_attention_heads=b.num_heads,
        use_relative_position_bias=True,
        reshape_hidden_states=False,
        layer_norm_eps=LAYER_NORM_EPS,
        out_features=[f"stage{i + 1}" for i in b.hook_blocks],  # stage k is the output of block k - 1
    )
    kwargs: dict[str, Any] = {
        "backbone_config": backbone,
        "neck_hidden_sizes": list(d.level_dims),
        "fusion_hidden_size": d.features,
        "bottleneck_features": d.features,
        "num_relative_features": d.relative_dim,
        "bin_embedding_dim": m.bin_embedding_dim,
        "bin_configurations": [
            {"name": h.name, "n_bins": m.n_bins, "min_depth": h.min_depth, "max_depth": h.max_depth} for h in m.heads
        ],
        "num_attractors": list(m.n_attractors),
        "bin_centers_type": m.bin_centers,
        "min_temp": m.min_temp,
        "max_temp": m.max_temp,
    }
    if config.router is not None:
        r = config.router
        kwargs.update(
            num_patch_transformer_layers=r.num_layers,
            patch_transformer_hidden_size=r.embed_dim,
            patch_transformer_intermediate_size=r.ffn_dim,
            patch_transformer_num_attention_heads=r.num_heads,
        )
    return transformers.ZoeDepthConfig(**kwargs)


def _check_placement(module: torch.nn.Module, device: torch.device, what: str) -> None:
    """The reference paths run fp32 on ``device``; refuse quietly different set-ups instead of timing them."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    p = params[0]
    if p.device.type != device.type or (device.index is not None and p.device.index != device.index):
        raise ValueError(f"{what} is on {p.device}, not {device}; move it first")
    if any(q.dtype != torch.float32 for q in params):
        raise ValueError(f"{what} must be float32 for the fp32 reference path")


def hf_model_from(model: ZoeDepth, device: str | torch.device) -> ZoeDepthForDepthEstimation:
    """transformers' ``ZoeDepthForDepthEstimation`` holding exactly ``model``'s weights, fp32, in eval mode.

    Built directly on ``device`` (its random initialisation is then overwritten by a strict load).
    """
    from transformers import ZoeDepthForDepthEstimation

    device = torch.device(device)
    hf_config = hf_config_from(model.config)
    with torch.device(device):
        hf = ZoeDepthForDepthEstimation(hf_config)
    hf.load_state_dict(official_to_hf(model.state_dict(), template=hf.state_dict()), strict=True)
    return hf.float().eval()


def hf_image_processor(**overrides: Any) -> ZoeDepthImageProcessor:
    """The slow (numpy) ``ZoeDepthImageProcessor`` with its defaults: the fast one needs torchvision, and
    ``AutoImageProcessor`` would pick it where torchvision imports."""
    from transformers import ZoeDepthImageProcessor

    return ZoeDepthImageProcessor(**overrides)


def hf_default_pipeline(
    hf_model: ZoeDepthForDepthEstimation,
    device: str | torch.device,
    image_processor: ZoeDepthImageProcessor | None = None,
) -> DepthFn:
    """uint8 (H, W, 3) RGB -> (H, W) depth via transformers' default processing (see the module docstring)."""
    device = torch.device(device)
    _check_placement(hf_model, device, "the transformers model")
    processor = image_processor if image_processor is not None else hf_image_processor()

    def run(image: np.ndarray) -> torch.Tensor:
        inputs = processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            outputs = hf_model(pixel_values=inputs["pixel_values"].to(device))
            results = processor.post_process_depth_estimation(outputs, source_sizes=[tuple(image.shape[:2])])
        return results[0]["predicted_depth"]

    return run


def _upload(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) float RGB in [0, 1] on ``device``, converted there, as the node does."""
    return to_rgb(array_to_tensor(image).to(device, non_blocking=True), "rgb8")


def official_defaults_pipeline(model: ZoeDepth, device: str | torch.device) -> DepthFn:
    """uint8 (H, W, 3) RGB -> (H, W) depth: our model eager fp32 with ``infer()``'s defaults (pad + flip)."""
    device = torch.device(device)
    _check_placement(model, device, "the model")

    def run(image: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return model.infer(_upload(image, device), pad_input=True, flip_aug=True)[0, 0]

    return run


@dataclass(frozen=True)
class DepthAgreement:
    """How close transformers' default path comes to ours on one image (relative to our depth)."""

    mean_rel: float  # vs ours with the same settings (padding, no flip): implementation + host processing
    max_rel: float
    max_abs_m: float
    mean_rel_vs_defaults: float  # vs our official defaults (adds the flip averaging transformers skips by default)
    hf_net_size: tuple[int, int]  # the size each network ran at
    our_net_size: tuple[int, int]
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.mean_rel <= self.tolerance

    def describe(self) -> str:
        verdict = "agree" if self.ok else "DISAGREE"
        return (
            f"transformers vs ours {verdict}: mean rel {self.mean_rel:.2e} (tolerance {self.tolerance:.0e}), "
            f"max rel {self.max_rel:.2e}, max |d| {self.max_abs_m:.2e} m, net {self.hf_net_size} vs "
            f"{self.our_net_size}; vs official defaults (flip) mean rel {self.mean_rel_vs_defaults:.2e}"
        )


def check_agreement(
    model: ZoeDepth,
    hf_model: ZoeDepthForDepthEstimation,
    image: np.ndarray,
    device: str | torch.device,
    tolerance: float = 1e-3,
    image_processor: ZoeDepthImageProcessor | None = None,
) -> DepthAgreement:
    """Run transformers' default path and ours on ``image`` and report their relative depth difference.

    Not an equality check: the host-side numpy pre-processing and different kernels may leave small differences
    (on CPU we measured 0 to ~1e-7 relative; GPUs add cuDNN's TF32 convolutions and other reduction orders), and a
    different NK routing decision shows as a large one.
    ``tolerance`` bounds the mean relative difference against ours with the same settings. ``image_processor``
    defaults to transformers' defaults (384x512 target); give it ``size`` = the model's ``net_size`` where that
    differs (ZoeD_K) to compare like with like.
    """
    device = torch.device(device)
    processor = image_processor if image_processor is not None else hf_image_processor()
    hf_depth = hf_default_pipeline(hf_model, device, processor)(image).float()
    rgb = _upload(image, device)
    with torch.inference_mode():
        matched = model.infer(rgb, pad_input=True, flip_aug=False)[0, 0].float()
    defaults = official_defaults_pipeline(model, device)(image).float()
    denom = matched.abs().clamp_min(1e-6)
    diff = (hf_depth - matched).abs()
    hf_size = tuple(processor(images=image, return_tensors="pt")["pixel_values"].shape[-2:])
    padded = pad_reflect(rgb)[0]
    return DepthAgreement(
        mean_rel=float((diff / denom).mean()),
        max_rel=float((diff / denom).max()),
        max_abs_m=float(diff.max()),
        mean_rel_vs_defaults=float(((hf_depth - defaults).abs() / defaults.abs().clamp_min(1e-6)).mean()),
        hf_net_size=(int(hf_size[0]), int(hf_size[1])),
        our_net_size=model.net_size_for(padded.shape[-2], padded.shape[-1]),
        tolerance=tolerance,
    )
