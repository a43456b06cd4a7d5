"""Read ZoeDepth weights from an official ``.pt`` or a Hugging Face folder and build the model from them.

Files are opened with ``torch.load(weights_only=True)`` (memory-mapped where the format allows) or safetensors;
nothing is fetched from the network. Every failure is a ``CheckpointError`` whose message says what to do.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from .config import ZoeDepthConfig
from .layouts import (
    config_from_hf,
    config_from_state_dict,
    hf_to_official,
    key_list,
    official_to_model,
    state_dict_mismatches,
    strip_module_prefix,
)
from .zoedepth import ZoeDepth

FETCH_HINT = "fetch the official weights with `zoedepth-ros-weights fetch ZoeD_M12_NK`"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, of an unknown layout or not matching the model."""


def _torch_load(path: Path) -> object:
    """torch.load with weights_only=True: memory-mapped for zip archives, plain for legacy pickles."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    is_zip, is_pickle = magic.startswith(b"PK"), magic[:1] == b"\x80"
    if not (is_zip or is_pickle):
        raise CheckpointError(f"{path}: not a torch checkpoint (neither a zip archive nor a pickle); "
                              f"{FETCH_HINT} or point to the right file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refusing to unpickle non-tensor objects (weights_only=True): "
                              f"{str(e).splitlines()[0]}") from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint, probably truncated or corrupt ({detail}); "
                              f"delete it and {FETCH_HINT}") from None


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict or a dict with 'model', got {type(obj).__name__}")
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {key_list(map(str, non_tensors))}")
    return strip_module_prefix(obj)


def _read_hf_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: a Hugging Face model folder needs config.json")
    try:
        hf_config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_file}: unreadable JSON ({e})") from None
    if hf_config.get("model_type") not in (None, "zoedepth"):
        raise CheckpointError(f"{folder}: config.json is for model_type {hf_config.get('model_type')!r}, "
                              "not 'zoedepth'")
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(weights)), hf_config
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{weights}: unreadable safetensors file, probably truncated ({e})") from None
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        return _as_state_dict(_torch_load(bin_file), bin_file), hf_config
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin next to config.json")


def read_checkpoint(source: str | Path, variant: str | None = None) -> tuple[dict[str, torch.Tensor], ZoeDepthConfig]:
    """State dict (official names, key rules applied) and the architecture it describes."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; {FETCH_HINT} or pass a path to a .pt file "
                              "or a Hugging Face model folder")
    try:
        if path.is_dir():
            hf_sd, hf_config = _read_hf_folder(path)
            sd = hf_to_official(hf_sd)
            config = config_from_hf(hf_config, sd, variant)
        else:
            sd = _as_state_dict(_torch_load(path), path)
            if any(k.startswith(("backbone.", "metric_head.")) for k in sd):
                raise CheckpointError(f"{path}: this is a transformers state dict; point to its model folder "
                                      "(with config.json) instead")
            config = config_from_state_dict(sd, variant)
        return official_to_model(sd, config), config
    except ValueError as e:  # LayoutError, or a config the shapes describe that fails validation
        raise CheckpointError(f"{path}: {e}") from None


def load_state(model: ZoeDepth, sd: Mapping[str, torch.Tensor], dtype: torch.dtype, assign: bool) -> None:
    """Strict load with errors that name the first missing / unexpected / mis-shaped keys."""
    expected = model.state_dict()
    problems = state_dict_mismatches(expected, sd)
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(cast, strict=True, assign=assign)


def load(source: str | Path, variant: str | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> ZoeDepth:
    """Build ZoeDepth from an official checkpoint or a Hugging Face folder, in eval mode.

    Args:
        source: ``ZoeD_M12_{N,K,NK}.pt`` (``{"model": sd}`` or a bare state dict, ``module.`` prefixes and fp16
            allowed) or a folder with ``config.json`` + ``model.safetensors`` (transformers 4.x key names).
        variant: "n", "k" or "nk"; inferred from the keys when None.
        device, dtype: where the weights go and their floating dtype.
    """
    if variant is not None and variant not in ("n", "k", "nk"):
        raise CheckpointError(f"unknown variant {variant!r}; use 'n', 'k' or 'nk'")
    sd, config = read_checkpoint(source, variant)
    device = torch.device(device)
    with torch.device("meta"):
        model = ZoeDepth(config)
    load_state(model, sd, dtype, assign=True)
    return model.to(device=device).eval()
