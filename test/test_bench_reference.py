"""Benchmark reference paths: official -> transformers weight mapping, the transformers model built from our weights,
the two timed pipelines and the timer. CPU only, tiny models (the full-size checks run on the meta device)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import randomize_, tiny_model

from zoedepth_ros.benchmarks.reference import (
    check_agreement,
    hf_compatible,
    hf_config_from,
    hf_default_pipeline,
    hf_image_processor,
    hf_incompatibilities,
    hf_model_from,
    official_defaults_pipeline,
)
from zoedepth_ros.benchmarks.timing import time_callable
from zoedepth_ros.model import ZOED_K, ZOED_N, ZOED_NK, LayoutError, ZoeDepth, official_state_dict, tiny_config
from zoedepth_ros.model.layouts import config_from_hf, hf_to_official, official_to_hf, official_to_model

DATA = Path(__file__).parent / "data"
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="transformers is the reference implementation (a test extra)",
)
NYU = {"name": "nyu", "n_bins": 16, "min_depth": 1e-3, "max_depth": 10.0}
KITTI = {"name": "kitti", "n_bins": 16, "min_depth": 1e-3, "max_depth": 80.0}


NET_SIZE = (192, 256)  # a quarter of the official pixels keeps the CPU tests quick; the BEiT grid is then 12x16


def hf_ready_model(variant: str, seed: int = 0) -> ZoeDepth:
    """A tiny random model with the widths transformers hard-codes (tiny_config's own router is 16 wide)."""
    torch.manual_seed(seed)
    config = replace(hf_compatible(tiny_config(variant)), net_size=NET_SIZE)
    return randomize_(ZoeDepth(config), seed).eval()


def small_processor():
    """transformers' default processor, aimed at the tests' network size instead of 384x512."""
    return hf_image_processor(size={"height": NET_SIZE[0], "width": NET_SIZE[1]})


@pytest.fixture(scope="module")
def net_image() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, NET_SIZE[0]), torch.linspace(0, 1, NET_SIZE[1]), indexing="ij")
    return torch.stack([xs, ys, 0.5 + 0.5 * torch.sin(9 * xs * ys)])[None].clamp(0, 1)


@pytest.fixture(scope="module")
def camera_image() -> np.ndarray:
    """A small structured uint8 RGB frame (H, W, 3)."""
    ys, xs = np.meshgrid(np.linspace(0, 1, 72), np.linspace(0, 1, 96), indexing="ij")
    rgb = np.stack([xs, ys, 0.5 + 0.5 * np.sin(7 * xs * ys)], axis=-1)
    return np.ascontiguousarray((255 * rgb).round().astype(np.uint8))


# ------------------------------------------------------------------------------------------ weight mapping


@pytest.mark.parametrize("variant", ["n", "k", "nk"])
def test_official_to_hf_round_trips_exactly(variant):
    model = tiny_model(variant)
    sd = official_state_dict(model)  # the release-file layout, buffers and unused BEiT head included
    hf = official_to_hf(sd)
    back = hf_to_official(hf)
    expected = official_to_model(sd, model.config)  # what the model holds: the documented buffers dropped
    assert back.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(back[k], expected[k])] == []
    # a model state dict (no buffers) maps to the same thing
    from_model = official_to_hf(model.state_dict())
    assert from_model.keys() == hf.keys() and all(torch.equal(from_model[k], hf[k]) for k in hf)


def test_fused_projections_are_split_in_query_key_value_order():
    model = tiny_model("nk")
    sd = model.state_dict()
    hf = official_to_hf(sd)
    beit = "core.core.pretrained.model.blocks.1.attn."
    attn = "backbone.encoder.layer.1.attention.attention."
    dim = model.config.backbone.embed_dim
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf[f"{attn}{name}.weight"], sd[beit + "qkv.weight"][i * dim : (i + 1) * dim])
    assert torch.equal(hf[attn + "query.bias"], sd[beit + "q_bias"])
    assert torch.equal(hf[attn + "value.bias"], sd[beit + "v_bias"])
    assert attn + "key.bias" not in hf  # BEiT's key projection has no bias
    router = "patch_transformer.transformer_encoder.layers.1.self_attn."
    hf_router = "metric_head.patch_transformer.transformer_encoder.1.self_attn."
    e = model.config.router.embed_dim
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf[f"{hf_router}{name}.weight"], sd[router + "in_proj_weight"][i * e : (i + 1) * e])
        assert torch.equal(hf[f"{hf_router}{name}.bias"], sd[router + "in_proj_bias"][i * e : (i + 1) * e])


def test_official_to_hf_rejects_foreign_keys_and_mismatched_templates():
    sd = tiny_model("n").state_dict()
    with pytest.raises(LayoutError, match="not in the official ZoeDepth layout"):
        official_to_hf({**sd, "decoder.extra.weight": torch.zeros(1)})
    template = official_to_hf(sd)
    missing = dict(template)
    missing["relative_head.conv9.weight"] = torch.zeros(1)
    with pytest.raises(LayoutError, match="missing"):
        official_to_hf(sd, template=missing)
    reshaped = {**template, "neck.convs.0.weight": torch.zeros(1, 1, 1, 1)}
    with pytest.raises(LayoutError, match="shape mismatch"):
        official_to_hf(sd, template=reshaped)


def read_listing(name: str) -> dict[str, tuple[int, ...]]:
    entries = {}
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        entries[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return entries


@needs_transformers
@pytest.mark.parametrize(
    ("config", "listing"),
    [
        (ZOED_NK, "hf_zoedepth_nyu_kitti_state_dict_keys.txt"),
        (ZOED_N, "hf_zoedepth_nyu_state_dict_keys.txt"),
        (ZOED_K, None),
    ],
)
def test_full_size_weights_cover_every_transformers_key(config, listing):
    from transformers import ZoeDepthForDepthEstimation

    assert hf_incompatibilities(config) == [] and hf_compatible(config) == config
    with torch.device("meta"):  # no 1.4 GB allocations
        ours = ZoeDepth(config)
        hf = ZoeDepthForDepthEstimation(hf_config_from(config))
    template = hf.state_dict()
    mapped = official_to_hf(official_state_dict(ours), template=template)  # raises on missing/extra/shape
    assert list(mapped) == list(template)
    if listing is not None:  # the Hub models' on-disk layout, recorded independently of this code
        assert {k: tuple(v.shape) for k, v in mapped.items()} == read_listing(listing)


# ------------------------------------------------------------------------------------------ transformers model


@needs_transformers
@pytest.mark.parametrize(("bins", "centers"), [([NYU], "softplus"), ([KITTI], "normed"), ([NYU, KITTI], "softplus")])
def test_hf_model_from_rebuilds_an_independent_transformers_model(bins, centers, net_image):
    from test_hf_parity import hf_model  # a transformers model configured by hand, not by hf_config_from

    # weights and architecture originate in transformers; ours is loaded from them, then mapped back
    original = hf_model(bins, seed=7, bin_centers_type=centers)
    sd = hf_to_official(original.state_dict())
    config = config_from_hf(original.config.to_dict(), sd)
    ours = ZoeDepth(config)
    ours.load_state_dict(official_to_model(sd, config), strict=True)
    rebuilt = hf_model_from(ours, "cpu")
    want, got = original.state_dict(), rebuilt.state_dict()
    assert got.keys() == want.keys()
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    pixel_values = (net_image - 0.5) / 0.5
    with torch.no_grad():
        expected, actual = original(pixel_values=pixel_values), rebuilt(pixel_values=pixel_values)
    torch.testing.assert_close(actual.predicted_depth, expected.predicted_depth, rtol=0, atol=1e-6)


@needs_transformers
@pytest.mark.parametrize("variant", ["n", "k", "nk"])
def test_transformers_model_from_ours_matches_our_forward(variant, net_image):
    ours = hf_ready_model(variant, seed=3)
    hf = hf_model_from(ours, "cpu")
    assert hf.config.backbone_config.layer_norm_eps == 1e-6
    with torch.no_grad():
        expected = hf(pixel_values=(net_image - 0.5) / 0.5)
        got = ours(net_image)  # at network size: our internal resize is the identity
    assert float(got.metric_depth.std()) > 1e-3  # not a flat map that would hide mistakes
    torch.testing.assert_close(got.metric_depth[:, 0], expected.predicted_depth, rtol=0, atol=1e-4)
    if variant == "nk":
        torch.testing.assert_close(got.head_logits, expected.domain_logits, rtol=0, atol=1e-4)


@needs_transformers
def test_configs_transformers_cannot_express_are_refused_with_reasons():
    problems = hf_incompatibilities(tiny_config("nk"))
    assert any("router.embed_dim" in p and "128" in p for p in problems)
    assert any("router.num_layers" in p for p in problems)
    with pytest.raises(ValueError, match=r"router\.embed_dim"):
        hf_model_from(tiny_model("nk"), "cpu")
    compatible = hf_compatible(tiny_config("nk"))
    assert hf_incompatibilities(compatible) == []
    # only the widths transformers fixes change
    assert compatible.backbone == tiny_config("nk").backbone
    assert replace(
        compatible, metric=tiny_config("nk").metric, router=tiny_config("nk").router, decoder=tiny_config("nk").decoder
    ) == tiny_config("nk")


# ------------------------------------------------------------------------------------------ pipelines, timing


@needs_transformers
def test_pipelines_return_finite_depth_at_the_image_size(camera_image):
    model = hf_ready_model("nk", seed=1)
    hf = hf_model_from(model, "cpu")
    processor = hf_image_processor()  # the defaults: slow numpy processor, multiples of 32, pad, 384x512
    assert type(processor).__name__ == "ZoeDepthImageProcessor"
    assert (processor.ensure_multiple_of, processor.do_pad, processor.size) == (32, True, {"height": 384, "width": 512})
    runs = (
        hf_default_pipeline(hf, "cpu"),
        hf_default_pipeline(hf, "cpu", small_processor()),
        official_defaults_pipeline(model, "cpu"),
    )
    for run in runs:
        depth = run(camera_image)
        assert tuple(depth.shape) == camera_image.shape[:2]
        assert depth.dtype == torch.float32 and bool(torch.isfinite(depth).all())
        assert float(depth.min()) > 0


def test_pipelines_refuse_models_on_another_device_or_dtype(camera_image):
    model = hf_ready_model("n")
    with pytest.raises(ValueError, match="float32"):
        official_defaults_pipeline(hf_ready_model("n").half(), "cpu")
    with pytest.raises(ValueError, match="not meta"):
        official_defaults_pipeline(model, "meta")


@needs_transformers
@pytest.mark.parametrize("variant", ["n", "nk"])
def test_transformers_default_path_agrees_with_ours(variant, camera_image):
    model = hf_ready_model(variant, seed=2)
    report = check_agreement(model, hf_model_from(model, "cpu"), camera_image, "cpu", image_processor=small_processor())
    assert report.hf_net_size == report.our_net_size
    assert report.ok and report.mean_rel < 1e-5, report.describe()
    assert report.mean_rel_vs_defaults > report.mean_rel  # the flip averaging transformers skips is visible


def test_time_callable_counts_warmup_and_returns_positive_milliseconds():
    calls = []
    samples = time_callable(lambda: calls.append(torch.ones(64, 64).sum()), "cpu", warmup=2, iters=5)
    assert len(calls) == 7
    assert len(samples) == 5 and all(isinstance(s, float) and s > 0 for s in samples)
    with pytest.raises(ValueError):
        time_callable(lambda: None, "cpu", warmup=0, iters=0)
