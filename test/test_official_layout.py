"""The full-size models, built on the meta device, have exactly the official state_dict keys and shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoedepth_ros.model import ZOED_K, ZOED_N, ZOED_NK, ZoeDepth, official_state_dict, tiny_config
from zoedepth_ros.model.layouts import config_from_state_dict, detect_variant, official_to_model

DATA = Path(__file__).parent / "data"


def read_listing(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    entries = {}
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        entries[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return entries


def meta_model(config) -> ZoeDepth:
    with torch.device("meta"):
        return ZoeDepth(config)


def layout(sd: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}


@pytest.mark.parametrize(
    ("config", "listing", "entries"),
    [
        (ZOED_NK, "zoed_nk_state_dict_keys.txt", 615),
        (ZOED_N, "zoed_n_state_dict_keys.txt", 535),
    ],
)
def test_full_model_matches_official_listing(config, listing, entries):
    expected = read_listing(listing)
    assert len(expected) == entries
    got = layout(official_state_dict(meta_model(config)))
    assert got.keys() == expected.keys()
    assert [k for k in got if got[k] != expected[k]] == []
    assert list(got) == list(expected)  # same order as upstream's state_dict()


def test_full_model_parameter_counts_match_the_listing_header():
    nk = meta_model(ZOED_NK)
    assert sum(p.numel() for p in nk.parameters()) == 346_100_355 - 1024 * 2 - 1000 * 1024 - 1000
    n = meta_model(ZOED_N)
    assert sum(p.numel() for p in n.parameters()) == 344_816_746 - 1024 * 2 - 1000 * 1024 - 1000


def test_zoed_k_differs_from_n_only_in_normed_attractor_widths():
    n = layout(official_state_dict(meta_model(ZOED_N)))
    k = layout(official_state_dict(meta_model(ZOED_K)))
    assert n.keys() == k.keys()
    differing = {key: (n[key][0], k[key][0]) for key in n if n[key] != k[key]}
    assert differing == {
        f"attractors.{i}._net.2.{p}": (
            (c, 128, 1, 1) if p == "weight" else (c,),
            (2 * c, 128, 1, 1) if p == "weight" else (2 * c,),
        )
        for i, c in enumerate((16, 8, 4, 1))
        for p in ("weight", "bias")
    }


@pytest.mark.parametrize("config", [ZOED_N, ZOED_K, ZOED_NK])
def test_architecture_is_recovered_from_shapes_alone(config):
    sd = official_state_dict(meta_model(config))
    assert detect_variant(sd) == config.variant
    assert config_from_state_dict(sd) == config


def test_key_rules_remove_exactly_the_documented_entries():
    sd = official_state_dict(ZoeDepth(tiny_config("nk")))
    kept = official_to_model(sd, tiny_config("nk"))
    removed = sd.keys() - kept.keys()
    assert len(removed) == 4 + 2 * 2 + 4  # rel-pos index per block, k_idx/K_minus_1 per head, fc_norm + head
    assert all(
        k.endswith(("relative_position_index", "k_idx", "K_minus_1")) or ".fc_norm." in k or ".head." in k
        for k in removed
    )
    assert kept.keys() == ZoeDepth(tiny_config("nk")).state_dict().keys()
