"""Checkpoint layouts: official ZoeDepth key rules, the Hugging Face (transformers 4.x) mapping, and
architecture inference from tensor shapes. Pure functions on state dicts; no file I/O here.

Official key rules (everything else must match the model exactly, checked by a strict load):
  * ``module.`` prefixes (DataParallel) are stripped.
  * ``*.attn.relative_position_index``: recomputed by the model; must equal the index for the table's grid.
  * ``*log_binomial_transform.k_idx`` / ``K_minus_1``: recomputed; must equal arange(n_bins) / n_bins - 1.
  * ``core.core.pretrained.model.fc_norm.*`` / ``head.*``: BEiT's unused ImageNet head; shapes are checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch

from .backbone import NUM_CLS_DISTANCES, relative_position_index
from .config import (
    PRESETS,
    BackboneConfig,
    BinHead,
    DecoderConfig,
    RouterConfig,
    ZoeDepthConfig,
)

BEIT = "core.core.pretrained.model."
OFFICIAL_ATTRACTORS_N = (16, 8, 4, 1)
OFFICIAL_ATTRACTORS_K = (32, 16, 8, 2)  # normed layers carry 2 channels per attractor


class LayoutError(ValueError):
    """A state dict that does not fit the expected layout; the message names the offending keys."""


StateDict = dict[str, torch.Tensor]


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    try:
        return tuple(sd[key].shape)
    except KeyError:
        raise LayoutError(f"missing key {key!r}: not a ZoeDepth checkpoint in the expected layout") from None


def key_list(keys, limit: int = 5) -> str:
    """The first ``limit`` keys, sorted, and how many more: for error messages."""
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_dict_mismatches(
    expected: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    missing: str = "missing key(s)",
    unexpected: str = "unexpected key(s)",
) -> list[str]:
    """What keeps ``got`` from loading strictly where ``expected`` is: missing and extra keys, shape mismatches."""
    problems = []
    if absent := expected.keys() - got.keys():
        problems.append(f"{len(absent)} {missing}: {key_list(absent)}")
    if extra := got.keys() - expected.keys():
        problems.append(f"{len(extra)} {unexpected}: {key_list(extra)}")
    shapes = [
        f"{k} {tuple(got[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and got[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:3])}")
    return problems


def strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return {k.removeprefix("module."): v for k, v in sd.items()}


def detect_variant(sd: Mapping[str, torch.Tensor]) -> str:
    """ "nk" if the router is present, else "n" or "k" from the official attractor channel pattern."""
    if any(k.startswith("patch_transformer.") for k in sd):
        return "nk"
    if not any(k.startswith("attractors.") for k in sd):
        raise LayoutError("no 'attractors.*' keys: not a ZoeDepth metric checkpoint (is it a MiDaS-only file?)")
    channels = tuple(_shape(sd, f"attractors.{i}._net.2.weight")[0] for i in range(4))
    if channels == OFFICIAL_ATTRACTORS_N:
        return "n"
    if channels == OFFICIAL_ATTRACTORS_K:
        return "k"
    raise LayoutError(f"cannot tell ZoeD_N from ZoeD_K by attractor channels {channels}; pass variant='n' or 'k'")


def config_from_state_dict(sd: Mapping[str, torch.Tensor], variant: str | None = None) -> ZoeDepthConfig:
    """Architecture of an official-layout state dict, read from tensor shapes (so tiny models load too)."""
    variant = variant or detect_variant(sd)
    if variant not in PRESETS:
        raise LayoutError(f"unknown variant {variant!r}; use 'n', 'k' or 'nk'")
    preset = PRESETS[variant]
    embed_dim = _shape(sd, BEIT + "cls_token")[-1]
    patch = _shape(sd, BEIT + "patch_embed.proj.weight")[-1]
    depth = len({m.group(1) for k in sd if (m := re.match(re.escape(BEIT) + r"blocks\.(\d+)\.", k))})
    n_table, num_heads = _shape(sd, BEIT + "blocks.0.attn.relative_position_bias_table")
    side = round((n_table - NUM_CLS_DISTANCES) ** 0.5)
    if side * side + NUM_CLS_DISTANCES != n_table or side % 2 == 0:
        raise LayoutError(f"relative_position_bias_table has {n_table} rows, not (2g-1)^2 + 3")
    backbone = BackboneConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=_shape(sd, BEIT + "blocks.0.mlp.fc1.weight")[0],
        patch_size=patch,
        pretrain_grid=(side + 1) // 2,
    )
    pre = "core.core.pretrained.act_postprocess"
    decoder = DecoderConfig(
        level_dims=tuple(_shape(sd, f"{pre}{i}.3.weight")[0] for i in range(1, 5)),
        features=_shape(sd, "core.core.scratch.layer1_rn.weight")[0],
        head_dim=_shape(sd, "core.core.scratch.output_conv.0.weight")[0],
        relative_dim=_shape(sd, "core.core.scratch.output_conv.2.weight")[0],
    )
    multi = variant == "nk"
    first = "nyu." if multi else ""
    seed = "seed_bin_regressors.nyu" if multi else "seed_bin_regressor"
    emb_dim, proj_mlp = _shape(sd, "seed_projector._net.2.weight")[:2]
    att = [_shape(sd, f"attractors.{first}{i}._net.2.weight")[0] for i in range(4)]
    normed = preset.metric.bin_centers == "normed"
    if normed and any(c % 2 for c in att):
        raise LayoutError(f"normed (ZoeD_K) attractors need an even channel count, got {att}")
    clb_hidden, clb_in = _shape(sd, f"conditional_log_binomial.{first}mlp.0.weight")[:2]
    use_rel = clb_in - emb_dim == decoder.relative_dim + 1
    if not use_rel and clb_in - emb_dim != decoder.relative_dim:
        raise LayoutError(
            f"conditional_log_binomial takes {clb_in} channels; expected {decoder.relative_dim} (+1) + {emb_dim}"
        )
    metric = replace(
        preset.metric,
        n_bins=_shape(sd, f"{seed}._net.2.weight")[0],
        bin_embedding_dim=emb_dim,
        n_attractors=tuple(c // 2 for c in att) if normed else tuple(att),
        seed_mlp_dim=_shape(sd, f"{seed}._net.0.weight")[0],
        projector_mlp_dim=proj_mlp,
        attractor_mlp_dim=_shape(sd, f"attractors.{first}0._net.0.weight")[0],
        clb_hidden_dim=clb_hidden,
        use_relative_depth=use_rel,
    )
    router = None
    if multi:
        layer_key = re.compile(r"patch_transformer\.transformer_encoder\.layers\.(\d+)\.")
        layers = {m.group(1) for k in sd if (m := layer_key.match(k))}
        router_dim = _shape(sd, "patch_transformer.embedding_convPxP.weight")[0]
        # the head count is not visible in the shapes: it is the official 4 (HF configs state theirs)
        router = RouterConfig(
            embed_dim=router_dim,
            num_heads=preset.router.num_heads,
            num_layers=len(layers),
            ffn_dim=_shape(sd, "patch_transformer.transformer_encoder.layers.0.linear1.weight")[0],
        )
    return replace(preset, backbone=backbone, decoder=decoder, metric=metric, router=router)


def official_to_model(sd: Mapping[str, torch.Tensor], config: ZoeDepthConfig) -> StateDict:
    """Apply the documented key rules; the result must then load strictly into ``ZoeDepth(config)``."""
    out: StateDict = {}
    bad: list[str] = []
    grid = config.backbone.pretrain_grid
    expected_index = None
    for key, value in strip_module_prefix(sd).items():
        if key.endswith(".attn.relative_position_index") and key.startswith(BEIT):
            if expected_index is None:
                expected_index = relative_position_index(grid, grid)
            if value.shape != expected_index.shape or not torch.equal(value.to(torch.long), expected_index):
                bad.append(f"{key} (not the index of a {grid}x{grid} grid)")
        elif key.endswith("log_binomial_transform.k_idx"):
            n_bins = config.metric.n_bins
            if value.numel() != n_bins or not torch.equal(value.flatten().to(torch.long), torch.arange(n_bins)):
                bad.append(f"{key} (expected arange({n_bins}))")
        elif key.endswith("log_binomial_transform.K_minus_1"):
            if value.numel() != 1 or float(value.flatten()[0]) != config.metric.n_bins - 1:
                bad.append(f"{key} (expected {config.metric.n_bins - 1})")
        elif key.startswith((BEIT + "fc_norm.", BEIT + "head.")):
            dim = config.backbone.embed_dim
            if "fc_norm" in key:
                ok = value.shape == (dim,)
            elif key.endswith("weight"):
                ok = value.ndim == 2 and value.shape[1] == dim
            else:
                ok = value.ndim == 1
            if not ok:
                bad.append(f"{key} (shape {tuple(value.shape)} does not fit the {dim}-wide encoder)")
        else:
            out[key] = value
    if bad:
        raise LayoutError("unexpected buffer contents: " + "; ".join(bad[:5]))
    return out


def official_state_dict(model: torch.nn.Module, num_classes: int = 1000) -> StateDict:
    """The model's weights in the exact official file layout, buffers and unused BEiT head included.

    The unused ImageNet head is zero; buffers are what upstream stores. Used to write test checkpoints.
    """
    config: ZoeDepthConfig = model.config
    sd = dict(model.state_dict())
    ref = next(iter(sd.values()))
    grid = config.backbone.pretrain_grid
    index = relative_position_index(grid, grid, device=ref.device)
    out: StateDict = {}
    dim = config.backbone.embed_dim
    for key, value in sd.items():
        out[key] = value
        if key.startswith(BEIT + "blocks.") and key.endswith(".attn.relative_position_bias_table"):
            out[key.replace("relative_position_bias_table", "relative_position_index")] = index.clone()
        if key.endswith(".mlp.fc2.bias") and key.startswith(BEIT + f"blocks.{config.backbone.depth - 1}."):
            out[BEIT + "fc_norm.weight"] = torch.ones(dim, device=ref.device)
            out[BEIT + "fc_norm.bias"] = torch.zeros(dim, device=ref.device)
            out[BEIT + "head.weight"] = torch.zeros(num_classes, dim, device=ref.device)
            out[BEIT + "head.bias"] = torch.zeros(num_classes, device=ref.device)
    # k_idx / K_minus_1 come first inside each conditional_log_binomial, as in the official files
    final: StateDict = {}
    n_bins = config.metric.n_bins
    for key, value in out.items():
        if key.endswith("mlp.0.weight") and key.startswith("conditional_log_binomial"):
            prefix = key[: -len("mlp.0.weight")] + "log_binomial_transform."
            final[prefix + "k_idx"] = torch.arange(n_bins, device=ref.device).view(1, -1, 1, 1)
            final[prefix + "K_minus_1"] = torch.tensor([float(n_bins - 1)], device=ref.device).view(1, 1, 1, 1)
        final[key] = value
    return final


# ----------------------------------------------------------------------------------------- Hugging Face


def _plus1(m: re.Match, i: int = 1) -> int:
    return int(m.group(i)) + 1


# (regex on a transformers 4.x on-disk key, function of the match giving the official prefix); first match wins.
# Neck levels count from 0 in HF and from 1 upstream; HF fusion layers run coarse to fine (refinenet4 first).
_HF_RENAMES: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"backbone\.embeddings\.cls_token$", lambda m: BEIT + "cls_token"),
    (r"backbone\.embeddings\.patch_embeddings\.projection\.", lambda m: BEIT + "patch_embed.proj."),
    (r"backbone\.encoder\.layer\.(\d+)\.lambda_(\d)$", lambda m: BEIT + f"blocks.{m[1]}.gamma_{m[2]}"),
    (r"backbone\.encoder\.layer\.(\d+)\.layernorm_before\.", lambda m: BEIT + f"blocks.{m[1]}.norm1."),
    (r"backbone\.encoder\.layer\.(\d+)\.layernorm_after\.", lambda m: BEIT + f"blocks.{m[1]}.norm2."),
    (
        r"backbone\.encoder\.layer\.(\d+)\.attention\.attention\.relative_position_bias\.relative_position_bias_table$",
        lambda m: BEIT + f"blocks.{m[1]}.attn.relative_position_bias_table",
    ),
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", lambda m: BEIT + f"blocks.{m[1]}.attn.proj."),
    (r"backbone\.encoder\.layer\.(\d+)\.intermediate\.dense\.", lambda m: BEIT + f"blocks.{m[1]}.mlp.fc1."),
    (r"backbone\.encoder\.layer\.(\d+)\.output\.dense\.", lambda m: BEIT + f"blocks.{m[1]}.mlp.fc2."),
    (
        r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.",
        lambda m: f"core.core.pretrained.act_postprocess{_plus1(m)}.0.project.0.",
    ),
    (
        r"neck\.reassemble_stage\.layers\.(\d)\.projection\.",
        lambda m: f"core.core.pretrained.act_postprocess{_plus1(m)}.3.",
    ),
    (
        r"neck\.reassemble_stage\.layers\.(\d)\.resize\.",
        lambda m: f"core.core.pretrained.act_postprocess{_plus1(m)}.4.",
    ),
    (r"neck\.convs\.(\d)\.", lambda m: f"core.core.scratch.layer{_plus1(m)}_rn."),
    (
        r"neck\.fusion_stage\.layers\.(\d)\.projection\.",
        lambda m: f"core.core.scratch.refinenet{4 - int(m[1])}.out_conv.",
    ),
    (
        r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.",
        lambda m: f"core.core.scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}.",
    ),
    (r"relative_head\.conv(\d)\.", lambda m: f"core.core.scratch.output_conv.{2 * (int(m[1]) - 1)}."),
    (r"metric_head\.conv2\.", lambda m: "conv2."),
    (r"metric_head\.mlp_classifier\.linear(\d)\.", lambda m: f"mlp_classifier.{2 * (int(m[1]) - 1)}."),
    (
        r"metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.",
        lambda m: f"patch_transformer.transformer_encoder.layers.{m[1]}.",
    ),
    (r"metric_head\.patch_transformer\.embedding_convPxP\.", lambda m: "patch_transformer.embedding_convPxP."),
    (
        r"metric_head\.(seed_bin_regressors?(?:\.[a-z]+)?|seed_projector|projectors\.\d|attractors(?:\.[a-z]+)?\.\d)"
        r"\.conv(\d)\.",
        lambda m: f"{m[1]}._net.{2 * (int(m[2]) - 1)}.",
    ),
    (r"metric_head\.(conditional_log_binomial(?:\.[a-z]+)?\.mlp\.\d)\.", lambda m: f"{m[1]}."),
]


def _apply_rename(key: str) -> str | None:
    for pattern, rename in _HF_RENAMES:
        m = re.match(pattern, key)
        if m is not None:
            return rename(m) + key[m.end() :]
    return None


def hf_to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Map a transformers 4.x ZoeDepth state dict to official names, re-fusing split q/k/v projections."""
    out: StateDict = {}
    unknown: list[str] = []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = re.match(r"^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$", key)
        if m:
            qkv.setdefault(BEIT + f"blocks.{m.group(1)}.attn.", {})[f"{m.group(2)}.{m.group(3)}"] = value
            continue
        m = re.match(
            r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.self_attn\."
            r"(query|key|value)\.(weight|bias)$",
            key,
        )
        if m:
            prefix = f"patch_transformer.transformer_encoder.layers.{m.group(1)}.self_attn."
            qkv.setdefault(prefix, {})[f"{m.group(2)}.{m.group(3)}"] = value
            continue
        new = _apply_rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise LayoutError(f"{len(unknown)} key(s) not in the transformers ZoeDepth layout: {key_list(unknown)}")
    for prefix, parts in qkv.items():
        try:
            if prefix.startswith(BEIT):
                out[prefix + "qkv.weight"] = torch.cat(
                    [parts["query.weight"], parts["key.weight"], parts["value.weight"]]
                )
                out[prefix + "q_bias"] = parts["query.bias"]
                out[prefix + "v_bias"] = parts["value.bias"]
            else:
                out[prefix + "in_proj_weight"] = torch.cat([parts[f"{n}.weight"] for n in ("query", "key", "value")])
                out[prefix + "in_proj_bias"] = torch.cat([parts[f"{n}.bias"] for n in ("query", "key", "value")])
        except KeyError as e:
            raise LayoutError(f"incomplete attention projection under {prefix!r}: missing {e.args[0]}") from None
    return out


def config_from_hf(hf_config: Mapping, sd: Mapping[str, torch.Tensor], variant: str | None = None) -> ZoeDepthConfig:
    """Architecture for a converted HF state dict, cross-checked with its config.json."""
    bins = hf_config.get("bin_configurations") or []
    if variant is None:
        if len(bins) == 2:
            variant = "nk"
        elif hf_config.get("bin_centers_type") == "normed":
            variant = "k"
        elif len(bins) == 1:
            variant = "n"
        else:
            raise LayoutError("config.json has no bin_configurations: not a ZoeDepth model folder")
    config = config_from_state_dict(sd, variant)
    if config.router is not None and "patch_transformer_num_attention_heads" in hf_config:
        config = replace(
            config, router=replace(config.router, num_heads=int(hf_config["patch_transformer_num_attention_heads"]))
        )
    backbone = hf_config.get("backbone_config") or {}
    if "num_attention_heads" in backbone and backbone["num_attention_heads"] != config.backbone.num_heads:
        raise LayoutError("config.json num_attention_heads disagrees with the relative position tables")
    # HF stores ZoeD_K with the nyu bin range (max 10 m); like the official fix-up we keep 80 m for "k".
    heads = tuple(
        BinHead(
            h.name,
            float(b.get("min_depth", h.min_depth)),
            h.max_depth if variant == "k" else float(b.get("max_depth", h.max_depth)),
        )
        for h, b in zip(config.metric.heads, bins or [{}] * len(config.metric.heads), strict=False)
    )
    return replace(config, metric=replace(config.metric, heads=heads))


# Official -> transformers 4.x: the inverse of the table above, used to build a transformers reference model
# from our weights. (regex on an official key, function of the match giving the HF prefix); first match wins.
_BLOCK = re.escape(BEIT) + r"blocks\.(\d+)\."
_HF_LAYER = "backbone.encoder.layer."
_OFFICIAL_RENAMES: list[tuple[str, Callable[[re.Match], str]]] = [
    (re.escape(BEIT) + r"cls_token$", lambda m: "backbone.embeddings.cls_token"),
    (re.escape(BEIT) + r"patch_embed\.proj\.", lambda m: "backbone.embeddings.patch_embeddings.projection."),
    (_BLOCK + r"gamma_(\d)$", lambda m: f"{_HF_LAYER}{m[1]}.lambda_{m[2]}"),
    (_BLOCK + r"norm1\.", lambda m: f"{_HF_LAYER}{m[1]}.layernorm_before."),
    (_BLOCK + r"norm2\.", lambda m: f"{_HF_LAYER}{m[1]}.layernorm_after."),
    (
        _BLOCK + r"attn\.relative_position_bias_table$",
        lambda m: f"{_HF_LAYER}{m[1]}.attention.attention.relative_position_bias.relative_position_bias_table",
    ),
    (_BLOCK + r"attn\.proj\.", lambda m: f"{_HF_LAYER}{m[1]}.attention.output.dense."),
    (_BLOCK + r"mlp\.fc1\.", lambda m: f"{_HF_LAYER}{m[1]}.intermediate.dense."),
    (_BLOCK + r"mlp\.fc2\.", lambda m: f"{_HF_LAYER}{m[1]}.output.dense."),
    (
        r"core\.core\.pretrained\.act_postprocess(\d)\.0\.project\.0\.",
        lambda m: f"neck.reassemble_stage.readout_projects.{int(m[1]) - 1}.0.",
    ),
    (
        r"core\.core\.pretrained\.act_postprocess(\d)\.3\.",
        lambda m: f"neck.reassemble_stage.layers.{int(m[1]) - 1}.projection.",
    ),
    (
        r"core\.core\.pretrained\.act_postprocess(\d)\.4\.",
        lambda m: f"neck.reassemble_stage.layers.{int(m[1]) - 1}.resize.",
    ),
    (r"core\.core\.scratch\.layer(\d)_rn\.", lambda m: f"neck.convs.{int(m[1]) - 1}."),
    (
        r"core\.core\.scratch\.refinenet(\d)\.out_conv\.",
        lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.projection.",
    ),
    (
        r"core\.core\.scratch\.refinenet(\d)\.resConfUnit(\d)\.conv(\d)\.",
        lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.residual_layer{m[2]}.convolution{m[3]}.",
    ),
    (r"core\.core\.scratch\.output_conv\.([024])\.", lambda m: f"relative_head.conv{int(m[1]) // 2 + 1}."),
    (r"conv2\.", lambda m: "metric_head.conv2."),
    (r"mlp_classifier\.([02])\.", lambda m: f"metric_head.mlp_classifier.linear{int(m[1]) // 2 + 1}."),
    (
        r"patch_transformer\.transformer_encoder\.layers\.(\d+)\.",
        lambda m: f"metric_head.patch_transformer.transformer_encoder.{m[1]}.",
    ),
    (r"patch_transformer\.embedding_convPxP\.", lambda m: "metric_head.patch_transformer.embedding_convPxP."),
    (
        r"(seed_bin_regressors?(?:\.[a-z]+)?|seed_projector|projectors\.\d|attractors(?:\.[a-z]+)?\.\d)\._net\.([02])\.",
        lambda m: f"metric_head.{m[1]}.conv{int(m[2]) // 2 + 1}.",
    ),
    (r"(conditional_log_binomial(?:\.[a-z]+)?\.mlp\.\d)\.", lambda m: f"metric_head.{m[1]}."),
]

# Official entries with no transformers counterpart: buffers HF recomputes (non-persistent there) and BEiT's
# unused ImageNet head. official_to_model is where their contents are verified.
_NOT_IN_HF = re.compile(
    re.escape(BEIT) + r"(blocks\.\d+\.attn\.relative_position_index$|fc_norm\.|head\.)"
    r"|.*log_binomial_transform\.(k_idx|K_minus_1)$"
)
# HF buffers a template may carry (persistent in some transformers versions); values derive from the config.
_HF_DERIVED = ("relative_position_index", "log_binomial_transform.k_idx", "log_binomial_transform.k_minus_1")


def _split3(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of a fused q|k|v projection, as independent tensors (so the result can be saved as safetensors)."""
    if value.shape[0] % 3:
        raise LayoutError(f"fused q/k/v projection with {value.shape[0]} rows is not divisible by 3")
    q, k, v = (part.clone() for part in value.chunk(3))
    return q, k, v


def official_to_hf(sd: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor] | None = None) -> StateDict:
    """Official ZoeDepth weights under transformers 4.x ``ZoeDepthForDepthEstimation`` names (inverse of
    ``hf_to_official``), so a transformers model can run the very same weights as ours.

    Accepts the release-file layout (buffers and the unused BEiT head are dropped) or ``ZoeDepth.state_dict()``.
    Fused projections are split exactly: BEiT ``qkv.weight`` into query/key/value (``q_bias`` / ``v_bias`` become
    the query/value biases; HF's key has no bias), the router's ``in_proj_{weight,bias}`` into query/key/value.
    With ``template`` (an HF model's ``state_dict()``, possibly on the meta device) the result must have exactly its
    keys and shapes, and comes in its order; HF buffers it holds that we do not store (relative position indices,
    ``k_idx``/``k_minus_1``, persistent in some transformers versions) are taken from it.
    """
    out: StateDict = {}
    unknown: list[str] = []
    for key, value in strip_module_prefix(sd).items():
        if _NOT_IN_HF.match(key):
            continue
        m = re.match(_BLOCK + r"attn\.(qkv\.weight|q_bias|v_bias)$", key)
        if m:
            attn = f"{_HF_LAYER}{m[1]}.attention.attention."
            if m[2] == "qkv.weight":
                for name, part in zip(("query", "key", "value"), _split3(value), strict=True):
                    out[f"{attn}{name}.weight"] = part
            else:
                out[attn + ("query.bias" if m[2] == "q_bias" else "value.bias")] = value
            continue
        m = re.match(r"patch_transformer\.transformer_encoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", key)
        if m:
            attn = f"metric_head.patch_transformer.transformer_encoder.{m[1]}.self_attn."
            for name, part in zip(("query", "key", "value"), _split3(value), strict=True):
                out[f"{attn}{name}.{m[2]}"] = part
            continue
        for pattern, rename in _OFFICIAL_RENAMES:
            m = re.match(pattern, key)
            if m is not None:
                out[rename(m) + key[m.end() :]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise LayoutError(f"{len(unknown)} key(s) not in the official ZoeDepth layout: {key_list(unknown)}")
    if template is None:
        return out
    for key, value in template.items():
        if key not in out and key.endswith(_HF_DERIVED):
            out[key] = value
    problems = state_dict_mismatches(
        template,
        out,
        missing="key(s) the transformers model needs are missing",
        unexpected="key(s) the transformers model lacks",
    )
    if problems:
        raise LayoutError("weights do not fit the transformers model: " + "; ".join(problems))
    return {k: out[k] for k in template}
