"""Checkpoints that would load but cannot work, and refusals that must read as plain, safe advice.

A NaN/Inf anywhere or an integer tensor where floats belong is refused at load (official files and HF folders
alike) instead of publishing all-NaN depth or dying in ``load_state_dict``; a pickle weights_only refuses gets our
own one-line reason (no ANSI codes, no hint to load it unsafely); a symlink loop is called a loop.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from helpers_http import CheckpointServer
from model_fixtures import save_official, tiny_model
from safetensors.torch import save_file

from zoedepth_ros import weights as W
from zoedepth_ros.model import CheckpointError, load, official_state_dict
from zoedepth_ros.model.layouts import official_to_hf

FC1 = "core.core.pretrained.model.blocks.0.mlp.fc1.weight"
NYU = {"name": "nyu", "n_bins": 16, "min_depth": 1e-3, "max_depth": 10.0}


def official_sd(variant: str = "nk") -> dict[str, torch.Tensor]:
    return official_state_dict(tiny_model(variant))


def poisoned(sd: dict[str, torch.Tensor], keys: list[str], value: float) -> dict[str, torch.Tensor]:
    out = dict(sd)
    for key in keys:
        out[key] = out[key].clone()
        out[key].view(-1)[out[key].numel() // 2] = value
    return out


def hf_folder(folder: Path, sd: dict[str, torch.Tensor]) -> Path:
    folder.mkdir()
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "zoedepth", "bin_configurations": [NYU]}))
    return folder


def assert_plain_one_line(message: str) -> None:
    assert "\x1b" not in message and "\n" not in message and "\t" not in message
    assert all(ch.isprintable() for ch in message)


# ------------------------------------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_weight_is_refused_with_its_name(tmp_path: Path, value: float) -> None:
    torch.save({"model": poisoned(official_sd(), [FC1], value)}, tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "diverged.pt")
    assert str(err.value) == (
        f"{tmp_path / 'diverged.pt'}: 1 tensor holds NaN or Inf: {FC1}; the file is corrupt "
        "or was saved from a diverged run"
    )


def test_many_non_finite_tensors_are_counted_and_the_first_five_named(tmp_path: Path) -> None:
    sd = official_sd()
    floats = sorted(k for k, v in sd.items() if v.is_floating_point())[:7]
    # fp16, as half-precision exports are where overflows to Inf usually come from
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in poisoned(sd, floats, float("inf")).items()}
    torch.save(half, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match=r"7 tensors hold NaN or Inf: ") as err:
        load(tmp_path / "half.pt")
    assert ", ".join(floats[:5]) + " (+2 more); the file is corrupt" in str(err.value)


def test_hf_folder_with_nan_is_refused(tmp_path: Path) -> None:
    hf = official_to_hf(official_sd("n"))
    key = "backbone.encoder.layer.1.attention.attention.query.weight"
    folder = hf_folder(tmp_path / "hf", poisoned(hf, [key], float("nan")))
    with pytest.raises(CheckpointError, match=rf"1 tensor holds NaN or Inf: {re.escape(key)}"):
        load(folder)


def test_fetch_rejects_and_deletes_a_diverged_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(W.CACHE_ENV, str(cache))
    save_official(tiny_model("nk"), tmp_path / "good.pt")
    sd = torch.load(tmp_path / "good.pt", weights_only=True)["model"]
    torch.save({"model": poisoned(sd, [FC1], float("nan"))}, tmp_path / "bad.pt")
    with CheckpointServer() as server:
        server.add("ZoeD_M12_NK.pt", (tmp_path / "bad.pt").read_bytes())
        with pytest.raises(W.WeightsError, match=r"not a usable ZoeDepth checkpoint: .*1 tensor holds NaN or Inf"):
            W.fetch("nk", base_url=server.url, progress=False, backoff=0.0, timeout=5.0)
    assert sorted(p.name for p in cache.glob("ZoeD_M12_NK.pt*")) == []


# --------------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool], ids=str)
def test_integer_weights_are_a_checkpoint_error(tmp_path: Path, dtype: torch.dtype) -> None:
    sd = official_sd()
    bias = "conv2.bias"
    sd[FC1], sd[bias] = (sd[FC1] * 100).to(dtype), (sd[bias] * 100).to(dtype)
    torch.save({"model": sd}, tmp_path / "ints.pt")
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "ints.pt")
    name = str(dtype).removeprefix("torch.")
    assert f"expected floating-point tensors, got {name} for: {bias}, {FC1};" in str(err.value)
    assert_plain_one_line(str(err.value))


def test_integer_weights_in_an_hf_folder_are_refused_before_qkv_fusion(tmp_path: Path) -> None:
    """torch.cat would silently promote an int query weight to float while fusing q/k/v: check the file's own."""
    hf = official_to_hf(official_sd("n"))
    key = "backbone.encoder.layer.0.attention.attention.query.weight"
    hf[key] = (hf[key] * 100).to(torch.int64)
    folder = hf_folder(tmp_path / "hf", hf)
    with pytest.raises(CheckpointError, match=rf"expected floating-point tensors, got int64 for: {re.escape(key)}"):
        load(folder)


# ------------------------------------------------------------------------------------ unsafe pickles


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle-2"])
def test_refused_pickle_gets_a_plain_safe_reason(tmp_path: Path, writer: str, capsys) -> None:
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"model": Payload()}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"model": Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError) as err:
        load(path)
    message = str(err.value)
    assert_plain_one_line(message)
    assert message.startswith(f"{path}: refusing to unpickle it: it references the Python object ")
    assert "print" in message  # the global weights_only refused
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "trust" not in message.lower() and "add_safe_globals" not in message
    assert "must never run" not in capsys.readouterr().out


def test_refused_protocol_4_pickle_names_the_opcode(tmp_path: Path) -> None:
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"model": {"w": 1}}, f, protocol=4)
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "plain.pt")
    message = str(err.value)
    assert_plain_one_line(message)
    assert "pickle opcode 149" in message and "weights_only" not in message


# -------------------------------------------------------------------------------------- symlink loops


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    link = tmp_path / "ZoeD_loop.pt"
    os.symlink(link, link)  # a link to itself: stat() fails with ELOOP, exists() says False
    return link


def test_load_reports_a_symlink_loop(loop: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"^checkpoint {re.escape(str(loop))} is a symbolic link loop"):
        load(loop)
    with pytest.raises(CheckpointError, match="is a symbolic link loop"):
        load(loop / "nested.pt")


def test_hf_folder_with_a_looping_weights_file(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "zoedepth", "bin_configurations": [NYU]}))
    os.symlink(folder / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a symbolic link loop"):
        load(folder)


def test_weights_resolve_and_ensure_report_a_symlink_loop(loop: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))
    expected = rf"^checkpoint {re.escape(str(loop))} is a symbolic link loop"
    with pytest.raises(W.WeightsError, match=expected):
        W.resolve_checkpoint(str(loop))
    with pytest.raises(W.WeightsError, match=expected):
        W.ensure_checkpoint(loop, log=pytest.fail)
    monkeypatch.chdir(tmp_path)
    os.symlink("NK", "NK")  # a loop named like an official checkpoint is still a path the user meant
    with pytest.raises(W.WeightsError, match="NK is a symbolic link loop"):
        W.ensure_checkpoint("NK", log=pytest.fail)
    with pytest.raises(W.WeightsError, match="is a symbolic link loop"):
        W.verify(loop)
