"""Loading official and HF checkpoints, and failing with one clear error type on everything else."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from model_fixtures import save_official, tiny_model

from zoedepth_ros.model import CheckpointError, load, official_state_dict
from zoedepth_ros.model.backbone import relative_position_index


def official_sd(variant: str = "nk") -> dict[str, torch.Tensor]:
    return official_state_dict(tiny_model(variant))


def assert_same_model(a, b, x, atol=0.0):
    torch.testing.assert_close(a(x).metric_depth, b(x).metric_depth, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.linspace(0, 1, 3 * 32 * 48).reshape(1, 3, 32, 48)


@pytest.mark.parametrize("variant", ["n", "k", "nk"])
def test_official_layout_loads_strictly_and_reproduces_the_model(tiny_checkpoint, variant, image):
    model = load(tiny_checkpoint(variant))
    assert model.config.variant == variant
    assert not model.training
    assert_same_model(model, tiny_model(variant), image)


def test_bare_state_dict_with_module_prefix_and_fp16_tensors(tmp_path, image):
    sd = {f"module.{k}": (v.half() if v.is_floating_point() else v) for k, v in official_sd().items()}
    torch.save(sd, tmp_path / "bare.pt")
    model = load(tmp_path / "bare.pt")
    assert next(model.parameters()).dtype == torch.float32
    assert_same_model(model, tiny_model("nk"), image, atol=2e-2)


def test_dtype_and_explicit_variant(tiny_checkpoint):
    model = load(tiny_checkpoint("n"), variant="n", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(CheckpointError, match=r"patch_transformer|variant|missing"):
        load(tiny_checkpoint("nk"), variant="n")
    with pytest.raises(CheckpointError, match="unknown variant"):
        load(tiny_checkpoint("n"), variant="x")


def test_missing_file_says_how_to_fetch(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist.*zoedepth-ros-weights fetch"):
        load(tmp_path / "ZoeD_M12_NK.pt")


def test_truncated_archive(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint("n").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(tmp_path / "cut.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load(tmp_path / "notes.pt")
    (tmp_path / "garbled.pt").write_bytes(b"\x80\x02" + bytes(range(200)))
    with pytest.raises(CheckpointError, match=r"corrupt|unpickle"):
        load(tmp_path / "garbled.pt")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model": Payload()}, f)
    with pytest.raises(CheckpointError):
        load(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out


def test_unknown_layout(tmp_path):
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a ZoeDepth"):
        load(tmp_path / "other.pt")
    torch.save({"model": {"weight": "x"}}, tmp_path / "strings.pt")
    with pytest.raises(CheckpointError, match="not tensors"):
        load(tmp_path / "strings.pt")


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    sd = official_sd()
    del sd["projectors.2._net.0.bias"]
    sd["projectors.9._net.0.bias"] = torch.zeros(3)
    sd["conv2.bias"] = torch.zeros(7)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "1 missing key(s): projectors.2._net.0.bias" in msg
    assert "1 unexpected key(s): projectors.9._net.0.bias" in msg
    assert "conv2.bias (7,) vs model (32,)" in msg


@pytest.mark.parametrize(
    ("key_end", "value", "match"),
    [
        ("blocks.1.attn.relative_position_index", relative_position_index(5, 5), "relative_position_index"),
        ("nyu.log_binomial_transform.k_idx", torch.arange(1, 17).view(1, -1, 1, 1), "k_idx"),
        ("kitti.log_binomial_transform.K_minus_1", torch.tensor([63.0]).view(1, 1, 1, 1), "K_minus_1"),
        ("model.fc_norm.weight", torch.ones(5), "fc_norm"),
        ("model.head.weight", torch.zeros(1000, 5), "head.weight"),
    ],
)
def test_documented_buffers_are_verified_not_silently_dropped(tmp_path, key_end, value, match):
    sd = official_sd()
    (key,) = [k for k in sd if k.endswith(key_end)]
    sd[key] = value
    torch.save({"model": sd}, tmp_path / "buffers.pt")
    with pytest.raises(CheckpointError, match=match):
        load(tmp_path / "buffers.pt")


def test_checkpoint_without_the_optional_buffers_loads(tmp_path, image):
    """timm >= 0.9.8 era files lack relative_position_index; HF-converted ones also lack the ImageNet head."""
    sd = {
        k: v
        for k, v in official_sd().items()
        if not k.endswith(("relative_position_index", "k_idx", "K_minus_1")) and ".head." not in k
    }
    torch.save({"model": sd}, tmp_path / "lean.pt")
    assert_same_model(load(tmp_path / "lean.pt"), tiny_model("nk"), image)


def test_zoed_k_and_n_are_told_apart_and_k_uses_80_m(tiny_checkpoint):
    k = load(tiny_checkpoint("k"))
    assert k.config.metric.bin_centers == "normed"
    assert k.config.metric.heads[0].max_depth == 80.0  # upstream's infer config would clamp at 10 m
    assert k.config.net_size == (384, 768)
    assert load(tiny_checkpoint("n")).config.metric.bin_centers == "softplus"


def test_hf_folder_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dpt"}))
    with pytest.raises(CheckpointError, match="model_type"):
        load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "zoedepth"}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="safetensors"):
        load(tmp_path)


def test_transformers_state_dict_in_a_pt_file_points_to_the_folder(tmp_path):
    torch.save({"backbone.embeddings.cls_token": torch.zeros(1, 1, 4)}, tmp_path / "hf.pt")
    with pytest.raises(CheckpointError, match="model folder"):
        load(tmp_path / "hf.pt")


def test_save_official_roundtrip_with_legacy_serialization(tmp_path, image):
    path = save_official(tiny_model("n"), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert_same_model(load(path), tiny_model("n"), image)
