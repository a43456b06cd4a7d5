"""Names of exported graphs and TensorRT engine folders (``engine.onnx.cache``): a change of anything a file depends
on (weights, any ``ExportSpec`` field, the exporter's versions; the GPU and library versions for an engine) gives a
new name, the same inputs the same name; the checkpoint hash is the recorded one, else computed and recomputed when
the file changes."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

import pytest
import torch
from model_fixtures import tiny_model

from zoedepth_ros import weights as W
from zoedepth_ros.engine.onnx import cache as C
from zoedepth_ros.engine.onnx.graph import ExportSpec

VERSIONS = {"zoedepth_ros": "1.0.0", "opset": "18"}
SHA = "a" * 64
SPEC = ExportSpec(480, 640)
# a different valid value for every ExportSpec field (a new field fails the test until it gets one here)
OTHER_VALUE = {
    "height": 720,
    "width": 1280,
    "batch": 2,
    "pad_input": False,
    "flip_aug": True,
    "routing": "indoor",
    "precision": "fp16",
}


@pytest.fixture
def versions(monkeypatch) -> dict[str, str]:
    current = dict(VERSIONS)
    monkeypatch.setattr(C, "exporter_versions", lambda: dict(current))
    return current


def key(variant: str = "nk", sha: str = SHA, spec: ExportSpec = SPEC) -> C.GraphKey:
    return C.GraphKey.of(variant, sha, spec)


def test_same_inputs_same_name(versions):
    a, b = key(), key(spec=ExportSpec(480, 640))
    assert a == b and a.digest() == b.digest() and a.filename() == b.filename()
    assert re.fullmatch(r"nk_640x480_b1_pad_noflip_auto_fp32_[0-9a-f]{16}\.onnx", a.filename())


def test_every_dependency_changes_the_name(versions):
    base = key()
    changed = {"variant": key(variant="n"), "weights": key(sha="b" * 64)}
    fields = [f.name for f in dataclasses.fields(ExportSpec)]
    assert sorted(fields) == sorted(OTHER_VALUE)
    for field in fields:
        changed[f"spec.{field}"] = key(spec=dataclasses.replace(SPEC, **{field: OTHER_VALUE[field]}))
    for name in VERSIONS:
        versions.clear()
        versions.update(VERSIONS, **{name: VERSIONS[name] + ".post1"})
        changed[f"version {name}"] = key()
    versions.clear()
    versions.update(VERSIONS)
    assert key() == base  # back to the same versions, the same key

    digests = {what: k.digest() for what, k in changed.items()}
    names = {what: k.filename() for what, k in changed.items()}
    assert base.digest() not in digests.values(), digests
    assert base.filename() not in names.values(), names
    assert len(set(digests.values())) == len(digests)  # and each change is a different name from every other


def test_a_new_exporter_version_key_changes_the_name(versions):
    base = key()
    versions["another_library"] = "1.20.0"
    assert key().filename() != base.filename()


def test_graph_path_is_in_the_cache(versions, monkeypatch, tmp_path):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))
    k = key()
    assert C.graph_path(k) == tmp_path / "cache" / "onnx" / k.filename()
    assert C.graph_path(k, tmp_path / "other") == tmp_path / "other" / "onnx" / k.filename()


def test_exporter_versions_are_the_package_and_opset():
    from zoedepth_ros import __version__
    from zoedepth_ros.engine.onnx.export import OPSET

    assert C.exporter_versions() == {"zoedepth_ros": __version__, "opset": str(OPSET)}


def test_the_name_does_not_depend_on_the_exporting_torch(monkeypatch):
    """A file exported on a workstation is found by a robot whose torch (JetPack's) differs."""
    before = key().filename()
    monkeypatch.setattr(torch, "__version__", "2.3.0a0+40ec155e58.nv24.03")
    assert key().filename() == before


# --------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_sha256_computed_and_recomputed_after_a_change(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"first version of the weights")
    assert W.recorded_sha256(path) is None
    first = C.checkpoint_sha256(path)
    assert first == hashlib.sha256(b"first version of the weights").hexdigest()
    assert C.checkpoint_sha256(path) == first

    path.write_bytes(b"second, longer version of the weights")
    assert C.checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != first

    # the same size, rewritten in place: told apart by the modification time
    stat = path.stat()
    path.write_bytes(b"third,  longer version of the weights")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == stat.st_size
    assert C.checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_sha256_prefers_the_recorded_hash(tmp_path):
    path = tmp_path / "ZoeD_M12_NK.pt"
    path.write_bytes(b"weights")
    sidecar = path.with_name(path.name + ".sha256")
    recorded = hashlib.sha256(b"what the download verified").hexdigest()
    sidecar.write_text(f"{recorded}  {path.name}\n")  # as the downloader records it (sha256sum format)
    assert W.recorded_sha256(path) == recorded
    assert C.checkpoint_sha256(path) == recorded  # not the hash of the file's bytes: the recorded one
    sidecar.write_text(f"{recorded.upper()}  {path.name}\n")
    assert C.checkpoint_sha256(path) == recorded
    # a sidecar that holds no hash is ignored: the file is hashed
    sidecar.write_text("not a hash\n")
    assert C.checkpoint_sha256(path) == hashlib.sha256(b"weights").hexdigest()


def test_weights_sha256_follows_the_parameters():
    a, b = tiny_model("n"), tiny_model("n")
    assert C.weights_sha256(a) == C.weights_sha256(b)  # the same weights, another object
    assert re.fullmatch(r"[0-9a-f]{64}", C.weights_sha256(a))
    before = C.weights_sha256(a)
    saved = a.conv2.bias.detach().clone()
    with torch.no_grad():
        a.conv2.bias[0] += 1e-3
    assert C.weights_sha256(a) != before
    with torch.no_grad():
        a.conv2.bias.copy_(saved)
    assert C.weights_sha256(a) == before  # the digest is of the values, not of the history
    assert C.weights_sha256(tiny_model("n", seed=1)) != before
    assert C.weights_sha256(tiny_model("k")) != before


# ------------------------------------------------------------------------------------------------ TensorRT


def test_tensorrt_cache_dir_per_gpu_and_versions(tmp_path):
    base = ("NVIDIA Jetson AGX Orin", (8, 7), "10.3.0", "1.19.2")
    path = C.tensorrt_cache_dir(*base, root=tmp_path)
    assert path == C.tensorrt_cache_dir(*base, root=tmp_path)
    assert path.parent == tmp_path / "tensorrt"
    variants = {
        "gpu": ("NVIDIA GeForce RTX 4090", (8, 7), "10.3.0", "1.19.2"),
        "compute capability": ("NVIDIA Jetson AGX Orin", (8, 9), "10.3.0", "1.19.2"),
        "tensorrt": ("NVIDIA Jetson AGX Orin", (8, 7), "8.6.2", "1.19.2"),
        "onnxruntime": ("NVIDIA Jetson AGX Orin", (8, 7), "10.3.0", "1.20.0"),
    }
    paths = {what: C.tensorrt_cache_dir(*args, root=tmp_path) for what, args in variants.items()}
    assert path not in paths.values(), paths
    assert len(set(paths.values())) == len(paths)
    assert all(p.parent == tmp_path / "tensorrt" for p in paths.values())


def test_tensorrt_cache_dir_is_one_safe_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    path = C.tensorrt_cache_dir("Orin (nvgpu)/integrated", (8, 7), "10.3.0+cuda12.6", "1.19.2")
    assert path.parent == Path(tmp_path) / "tensorrt"
    assert re.fullmatch(r"[a-z0-9._-]+", path.name), path.name
