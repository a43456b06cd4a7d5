"""Where exported graphs and TensorRT engines live, named by everything they depend on.

An ONNX file depends on the weights (checkpoint SHA-256), the ``ExportSpec``, this package's version and the
opset: a change of any of them gives a new file name, so a stale graph is never used. A
TensorRT engine depends further on the GPU and on the TensorRT and onnxruntime versions, so an upgraded JetPack
gets a fresh engine folder (and rebuilds) instead of failing on an engine it cannot load.

Layout under ``weights.cache_dir()`` (``$ZOEDEPTH_ROS_CACHE``)::

    onnx/<variant>_<spec tag>_<key hash>.onnx (+ .data)
    tensorrt/<gpu>_sm<cc>_trt<version>_ort<version>/   engine cache and timing cache (onnxruntime's files)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ... import __version__
from ...weights import cache_dir, recorded_sha256, sha256_file
from .graph import ExportSpec

ONNX_DIR = "onnx"
TENSORRT_DIR = "tensorrt"

_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def onnx_cache_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / ONNX_DIR


def exporter_versions() -> dict[str, str]:
    """The versions a file's meaning depends on besides the weights and the spec: this package's (the graph it
    exports) and the opset. Not torch's or onnxscript's that made it (they are in its metadata): a file exported on a
    workstation is then found by a robot whose torch cannot export (JetPack 6.0's 2.3)."""
    from .export import OPSET

    return {"zoedepth_ros": __version__, "opset": str(OPSET)}


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """The checkpoint's SHA-256: the one its download recorded, else computed (once per file version)."""
    path = Path(path)
    recorded = recorded_sha256(path)
    if recorded:
        return recorded
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if key not in _digests:
            _digests[key] = sha256_file(path)
        return _digests[key]


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes): for a model that came from no file."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class GraphKey:
    """What one exported file depends on."""

    variant: str
    weights_sha256: str
    spec: ExportSpec
    versions: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, variant: str, weights: str, spec: ExportSpec) -> GraphKey:
        return cls(variant, weights, spec, tuple(sorted(exporter_versions().items())))

    def digest(self) -> str:
        text = json.dumps(
            {"variant": self.variant, "weights": self.weights_sha256, "spec": asdict(self.spec), "v": self.versions},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def filename(self) -> str:
        return f"{self.variant}_{self.spec.tag()}_{self.digest()}.onnx"


def graph_path(key: GraphKey, root: Path | None = None) -> Path:
    return onnx_cache_dir(root) / key.filename()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def tensorrt_cache_dir(
    gpu_name: str, compute_capability: tuple[int, int], tensorrt: str, onnxruntime: str, root: Path | None = None
) -> Path:
    """The engine-cache folder for this GPU and these library versions (see the module docstring)."""
    major, minor = compute_capability
    name = f"{_slug(gpu_name)}_sm{major}{minor}_trt{_slug(tensorrt)}_ort{_slug(onnxruntime)}"
    return (root or cache_dir()) / TENSORRT_DIR / name
