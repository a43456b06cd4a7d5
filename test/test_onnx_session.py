"""onnxruntime sessions without a GPU: the provider options each rung asks for (TensorRT's engine and timing caches
keyed by GPU and versions, workspace, precision flags, torch's stream), a provider that onnxruntime silently dropped,
the progress lines while a session (a TensorRT build) is being created, and TensorRT's version from libnvinfer's
encoding. onnxruntime itself is replaced by a stand-in that records what it was asked."""

from __future__ import annotations

import time
import types
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from zoedepth_ros.engine.onnx import session as S

CUDA0 = torch.device("cuda", 0)


class FakeSession:
    created: ClassVar[list[dict]] = []
    delay = 0.0
    serves: str | None = None  # the provider it ends up on (None: the first asked for)

    def __init__(self, path, sess_options=None, providers=None) -> None:
        time.sleep(self.delay)
        FakeSession.created.append({"path": path, "providers": providers, "options": sess_options})
        first = providers[0]
        self._providers = [self.serves or (first if isinstance(first, str) else first[0])]

    def get_providers(self):
        return self._providers


def fake_ort(providers: list[str]):
    return types.SimpleNamespace(
        __version__="1.99.0",
        get_available_providers=lambda: list(providers),
        SessionOptions=lambda: types.SimpleNamespace(log_severity_level=0, intra_op_num_threads=0),
        InferenceSession=FakeSession,
    )


@pytest.fixture
def gpu(monkeypatch):
    """A pretend Orin: the CUDA queries the provider options make, and onnxruntime-gpu with TensorRT."""
    ort = fake_ort(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(S, "import_onnxruntime", lambda: ort)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Orin (nvgpu)")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (8, 7))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=12345))
    monkeypatch.setattr(S, "tensorrt_version", lambda: "10.3.0")
    FakeSession.created, FakeSession.delay, FakeSession.serves = [], 0.0, None
    return ort


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_tensorrt_rung_options(gpu, tmp_path, precision):
    settings = S.SessionSettings(workspace_gb=2.5, cache_root=tmp_path)
    (trt_name, trt), (cuda_name, cuda) = S.providers_for("ort_tensorrt", CUDA0, precision, settings)
    assert (trt_name, cuda_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    cache = tmp_path / "tensorrt" / "orin-nvgpu_sm87_trt10.3.0_ort1.99.0"
    assert cache.is_dir()
    assert trt["trt_engine_cache_enable"] and trt["trt_engine_cache_path"] == str(cache)
    assert trt["trt_timing_cache_enable"] and trt["trt_timing_cache_path"] == str(cache)
    assert trt["trt_max_workspace_size"] == int(2.5 * 2**30)
    assert trt["trt_fp16_enable"] is (precision == "fp16")
    assert trt.get("trt_bf16_enable", False) is (precision == "bf16")
    assert trt["user_compute_stream"] == cuda["user_compute_stream"] == "12345"  # torch's stream: no host wait
    assert trt["device_id"] == cuda["device_id"] == 0


def test_cuda_and_cpu_rungs_ask_for_their_provider_only(gpu, tmp_path):
    settings = S.SessionSettings(cache_root=tmp_path)
    assert S.providers_for("ort_cuda", CUDA0, "fp32", settings) == [
        ("CUDAExecutionProvider", {"device_id": 0, "user_compute_stream": "12345"})
    ]
    assert S.providers_for("ort_cpu", torch.device("cpu"), "fp32", settings) == ["CPUExecutionProvider"]
    assert not (tmp_path / "tensorrt").exists()
    with pytest.raises(ValueError, match="unknown onnxruntime mode"):
        S.providers_for("ort_rocm", CUDA0, "fp32", settings)


def test_a_provider_onnxruntime_dropped_is_a_failure_of_the_rung(gpu, tmp_path):
    FakeSession.serves = "CUDAExecutionProvider"  # e.g. TensorRT's libraries not found at session creation
    with pytest.raises(S.SessionError, match="fell back from TensorrtExecutionProvider to CUDAExecutionProvider"):
        S.open_session(Path("m.onnx"), "ort_tensorrt", CUDA0, "fp16", S.SessionSettings(cache_root=tmp_path))


def test_a_provider_this_onnxruntime_lacks_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(S, "import_onnxruntime", lambda: fake_ort(["CPUExecutionProvider"]))
    with pytest.raises(S.SessionError, match=r"has no TensorrtExecutionProvider; available: CPUExecutionProvider"):
        S.open_session(Path("m.onnx"), "ort_tensorrt", CUDA0, "fp32", S.SessionSettings(cache_root=tmp_path))


def test_a_slow_session_creation_logs_progress(gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "PROGRESS_SECONDS", 0.05)
    FakeSession.delay = 0.4
    lines: list[str] = []
    S.open_session(Path("m.onnx"), "ort_tensorrt", CUDA0, "fp16", S.SessionSettings(cache_root=tmp_path), lines.append)
    still = [line for line in lines if line.startswith("onnxruntime: still building or loading the TensorRT engine")]
    assert len(still) >= 2, lines  # generous: a loaded machine may run the ticker late
    assert lines[-1].startswith("onnxruntime: TensorrtExecutionProvider ready for m.onnx in ")


def test_onnxruntime_missing_is_a_session_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(S.SessionError, match="onnxruntime is not installed"):
        S.import_onnxruntime()
    assert S.available_modes() == []


@pytest.mark.parametrize(("encoded", "version"), [(8602, "8.6.2"), (100300, "10.3.0"), (101301, "10.13.1")])
def test_tensorrt_version_from_libnvinfer(monkeypatch, encoded, version):
    import ctypes
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no Python package: JetPack's system-wide TensorRT

    class Lib:
        def __init__(self) -> None:
            self.getInferLibVersion = lambda: encoded

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Lib())
    assert S.tensorrt_version() == version
