"""Read ZoeDepth weights from an official ``.pt`` or a Hugging Face folder and build the model from them.

Files are opened with ``torch.load(weights_only=True)`` (memory-mapped where the format allows) or safetensors;
nothing is fetched from the network. Every failure is a ``CheckpointError`` whose message says what to do,
in one plain line. Tensors are checked before use: a file with NaN/Inf weights or integer tensors where floats
belong would otherwise load and publish all-NaN depth (or fail deep inside ``load_state_dict``).
"""

from __future__ import annotations

import errno
import json
import pickle
import re
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


# Integer buffers the official / transformers files legitimately carry; their values are checked by the layout rules.
_INDEX_BUFFERS = (
    "relative_position_index",
    "log_binomial_transform.k_idx",
    "log_binomial_transform.K_minus_1",
    "log_binomial_transform.k_minus_1",
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, of an unknown layout or not matching the model."""


def _plain(text: str) -> str:
    """Message text without terminal escape codes or control characters (torch's messages carry ANSI bold)."""
    return " ".join(_ANSI.sub("", text).split())


def is_link_loop(path: Path) -> bool:
    """True when resolving ``path`` runs into a symlink loop, which ``Path.exists`` reports as plain absence."""
    try:
        path.stat()
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _require_no_loop(path: Path) -> None:
    if is_link_loop(path):
        raise CheckpointError(f"checkpoint {path} is a symbolic link loop; make the link point to the real checkpoint")


def _unpickling_reason(error: BaseException) -> str:
    """Our own one-line account of what weights_only=True refused.

    torch's text suggests ``weights_only=False`` (arbitrary code execution for an untrusted file) and carries ANSI
    codes, so only the facts are taken from it: the global it refused or the opcode it did not support.
    """
    text = _plain(str(error))
    # "Unsupported global: GLOBAL print ..." (recent torch), "Unsupported class __builtin__.print" (torch 2.3)
    if m := re.search(r"GLOBAL\s+([\w.]+)", text) or re.search(r"Unsupported class\s+([\w.]+)", text):
        return f"it references the Python object {m[1]}, which is not a tensor"
    if m := re.search(r"Unsupported operand (\d+)", text):
        return f"it uses pickle opcode {m[1]}, which torch tensor checkpoints do not (a plain pickle or a corrupt file)"
    return "it holds Python objects other than tensors"


def _torch_load(path: Path) -> object:
    """torch.load with weights_only=True: memory-mapped for zip archives, plain for legacy pickles."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    is_zip, is_pickle = magic.startswith(b"PK"), magic[:1] == b"\x80"
    if not (is_zip or is_pickle):
        raise CheckpointError(
            f"{path}: not a torch checkpoint (neither a zip archive nor a pickle); "
            f"{FETCH_HINT} or point to the right file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to unpickle it: {_unpickling_reason(e)}; only plain tensor "
            f"checkpoints are read, since anything else could run code from the file; "
            f"{FETCH_HINT} or point to the right file"
        ) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        detail = _plain(str(e).splitlines()[0]) if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint, probably truncated or corrupt ({detail}); "
            f"delete it and {FETCH_HINT}"
        ) from None


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


def _non_finite(t: torch.Tensor) -> bool:
    """True when ``t`` holds NaN or +-Inf.

    aminmax is one streaming pass with no temporary: NaN propagates to both results and an Inf is the min or max.
    ``torch.isfinite(t).all()`` gives the same answer but allocates a bool copy and is ~10x slower on CPU, which
    matters for a 1.4 GB memory-mapped checkpoint read at every node start.
    """
    if t.numel() == 0:
        return False
    lo, hi = torch.aminmax(t.detach())
    return not bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_tensors(sd: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Refuse weights that would load but cannot work: integer tensors where floats belong, NaN or Inf anywhere.

    Run on the tensors as read from the file (before any layout conversion could promote an int to float), so the
    names are the file's own. A diverged or damaged checkpoint otherwise loads fine and yields all-NaN depth.
    """
    wrong_dtype: dict[torch.dtype, list[str]] = {}
    for key, value in sd.items():
        if not value.is_floating_point() and not key.endswith(_INDEX_BUFFERS):
            wrong_dtype.setdefault(value.dtype, []).append(key)
    if wrong_dtype:
        got = "; ".join(
            f"{str(dtype).removeprefix('torch.')} for: {key_list(keys)}" for dtype, keys in wrong_dtype.items()
        )
        raise CheckpointError(
            f"{source}: expected floating-point tensors, got {got}; this is not a ZoeDepth "
            "weights file or it was damaged"
        )
    bad = [key for key, value in sd.items() if value.is_floating_point() and _non_finite(value)]
    if bad:
        what = "1 tensor holds" if len(bad) == 1 else f"{len(bad)} tensors hold"
        raise CheckpointError(
            f"{source}: {what} NaN or Inf: {key_list(bad)}; the file is corrupt or was saved from a diverged run"
        )


def _read_hf_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    config_file = folder / "config.json"
    _require_no_loop(config_file)
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: a Hugging Face model folder needs config.json")
    try:
        hf_config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_file}: unreadable JSON ({e})") from None
    if hf_config.get("model_type") not in (None, "zoedepth"):
        raise CheckpointError(
            f"{folder}: config.json is for model_type {hf_config.get('model_type')!r}, not 'zoedepth'"
        )
    weights = folder / "model.safetensors"
    bin_file = folder / "pytorch_model.bin"
    _require_no_loop(weights)
    _require_no_loop(bin_file)
    if weights.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(weights)), hf_config
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{weights}: unreadable safetensors file, probably truncated ({_plain(str(e))})"
            ) from None
    if bin_file.is_file():
        return _as_state_dict(_torch_load(bin_file), bin_file), hf_config
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin next to config.json")


def read_checkpoint(source: str | Path, variant: str | None = None) -> tuple[dict[str, torch.Tensor], ZoeDepthConfig]:
    """State dict (official names, key rules applied) and the architecture it describes."""
    path = Path(source).expanduser()
    _require_no_loop(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; {FETCH_HINT} or pass a path to a .pt file "
            "or a Hugging Face model folder"
        )
    try:
        if path.is_dir():
            hf_sd, hf_config = _read_hf_folder(path)
            check_tensors(hf_sd, path)
            sd = hf_to_official(hf_sd)
            config = config_from_hf(hf_config, sd, variant)
        else:
            sd = _as_state_dict(_torch_load(path), path)
            check_tensors(sd, path)
            if any(k.startswith(("backbone.", "metric_head.")) for k in sd):
                raise CheckpointError(
                    f"{path}: this is a transformers state dict; point to its model folder (with config.json) instead"
                )
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
    # read_checkpoint already refused such files; this covers state dicts handed in directly
    not_float = [k for k, v in sd.items() if expected[k].is_floating_point() and not v.is_floating_point()]
    if not_float:
        dtypes = ", ".join(sorted({str(sd[k].dtype).removeprefix("torch.") for k in not_float}))
        raise CheckpointError(
            f"checkpoint does not fit the model: expected floating-point tensors, got {dtypes} "
            f"for: {key_list(not_float)}"
        )
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(cast, strict=True, assign=assign)


def load(
    source: str | Path,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ZoeDepth:
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
