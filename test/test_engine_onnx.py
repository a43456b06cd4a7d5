"""The onnxruntime backend in the engine's ladder, on the CPU with real exports and sessions (tiny model at a small
network size): it serves the torch model's depth, and every step that can fail - onnxruntime setup, ONNX export,
session creation, the accuracy guard, the speed check of backend auto, a warm-up or a frame at a new size - steps
down to the torch rungs with one warning naming the step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine import INTR, PROBE, SETTINGS, H, W, assert_depth, frame, small_model

from zoedepth_ros.engine import Engine
from zoedepth_ros.engine import engine as engine_module
from zoedepth_ros.engine.failures import FrameDropped, classify
from zoedepth_ros.engine.ladder import Rung, plan_ladder
from zoedepth_ros.engine.onnx import runner as runner_module
from zoedepth_ros.engine.onnx.export import ExportError
from zoedepth_ros.engine.onnx.runner import OrtRunner
from zoedepth_ros.engine.onnx.session import SessionError, SessionSettings
from zoedepth_ros.engine.pipeline import Settings

CPU = torch.device("cpu")
ORT_LADDER = [Rung("fp32", "ort_cpu", True), Rung("fp32", "eager")]


@pytest.fixture(scope="module")
def nk():
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime (the test extra has it)")
    pytest.importorskip("onnxscript", reason="exporting needs onnxscript (the test extra has it)")
    return small_model("nk", seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


class Built:
    """An engine on the ORT ladder with its warnings and log lines."""

    def __init__(self, model, cache, ladder=ORT_LADDER, **kwargs) -> None:
        self.warnings: list[str] = []
        self.info: list[str] = []
        self.engine = Engine.build(
            model,
            CPU,
            ladder=ladder,
            probe_size=PROBE,
            ort_settings=SessionSettings(cache_root=cache),
            warn=self.warnings.append,
            info=self.info.append,
            **kwargs,
        )


def test_plan_ladder_puts_onnxruntime_rungs_above_the_torch_ones():
    cpu = plan_ladder("auto", "auto", CPU, backend="onnxruntime")
    assert [str(r) for r in cpu] == ["fp32 ort_cpu", "fp32 eager"] and cpu[0].guarded and not cpu[1].guarded
    cuda = plan_ladder("auto", "auto", torch.device("cuda"), bf16_supported=True, backend="onnxruntime")
    assert [str(r) for r in cuda] == [
        "fp16 ort_tensorrt",
        "fp32 ort_tensorrt",
        "fp16 ort_cuda",
        "fp32 ort_cuda",
        "bf16 cuda_graph",
        "bf16 eager",
        "fp16 cuda_graph",
        "fp16 eager",
        "fp32 cuda_graph",
        "fp32 eager",
    ]
    fp32 = plan_ladder("fp32", "eager", torch.device("cuda"), backend="auto", ort_modes=["ort_cuda"])
    assert [str(r) for r in fp32] == ["fp32 ort_cuda", "fp32 eager"]  # auto: only providers that are present
    assert plan_ladder("fp32", "eager", CPU, backend="auto", ort_modes=[]) == [Rung("fp32", "eager")]
    assert plan_ladder("fp32", "eager", CPU) == [Rung("fp32", "eager")]  # torch: as before
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        plan_ladder("fp32", "eager", CPU, backend="tensorrt")
    assert Rung("fp16", "ort_cuda").family == "fp16 ort_cuda" and Rung("fp16", "eager").family == "fp16"


def test_classify_names_export_and_session_failures():
    assert classify(ExportError("ONNX export at 64x48 failed: x")) == "export"
    assert classify(SessionError("onnxruntime could not open a.onnx")) == "session"


def test_the_onnxruntime_rung_serves_the_torch_models_depth_and_reuses_its_cache(nk, cache, monkeypatch):
    b = Built(nk, cache)
    assert str(b.engine.rung) == "fp32 ort_cpu" and not b.warnings
    assert_depth(b.engine, nk, seed=0, atol=1e-4)
    assert_depth(b.engine, nk, seed=1, atol=1e-4)
    diag = b.engine.diagnostics()
    assert diag["backend"] == "onnxruntime (CPUExecutionProvider)" and diag["execution rung"] == "fp32 ort_cpu (1 of 2)"
    files = sorted(p.name for p in (cache / "onnx").glob("*.onnx"))
    assert [f.split("_")[1] for f in files] == [f"{W}x{H}"], files  # probe size = camera size here: one graph
    assert any("accuracy guard fp32 ort_cpu: passed" in line for line in b.info)

    exports = []
    monkeypatch.setattr(runner_module, "export_onnx", lambda *a, **k: exports.append(a) or pytest.fail("exported"))
    again = Built(nk, cache)  # a restart: the cached file is used, nothing is exported
    assert_depth(again.engine, nk, seed=2, atol=1e-4)
    assert not exports and not again.warnings


def test_a_failed_export_steps_down_to_torch_with_one_warning(nk, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ExportError("ONNX export at 64x48 failed: RuntimeError: unsupported operator")

    monkeypatch.setattr(runner_module, "export_onnx", broken)
    b = Built(nk, tmp_path)
    assert str(b.engine.rung) == "fp32 eager"
    assert b.warnings == [
        "fp32 ort_cpu: ONNX export failed during the accuracy guard (ExportError: ONNX export at 64x48 failed: "
        "RuntimeError: unsupported operator); falling back to fp32 eager"
    ]
    assert_depth(b.engine, nk, atol=1e-6)
    assert b.engine.status()["rejected"] == {"fp32 ort_cpu": b.warnings[0].split(": ", 1)[1].split("; falling")[0]}


def test_a_session_that_cannot_be_created_steps_down(nk, tmp_path, monkeypatch):
    def no_session(path, *args, **kwargs):
        raise SessionError(f"onnxruntime could not open {path.name} with CPUExecutionProvider: bad graph")

    monkeypatch.setattr(runner_module, "open_session", no_session)
    b = Built(nk, tmp_path)
    assert str(b.engine.rung) == "fp32 eager" and len(b.warnings) == 1
    assert b.warnings[0].startswith("fp32 ort_cpu: onnxruntime failed during the accuracy guard (SessionError: ")
    assert "bad graph" in b.warnings[0]


def test_onnxruntime_missing_steps_down_at_setup(nk, tmp_path):
    def missing(*args, **kwargs):
        raise SessionError("onnxruntime is not installed (pip install onnxruntime)")

    b = Built(nk, tmp_path, ort_factory=missing)
    assert str(b.engine.rung) == "fp32 eager"
    assert b.warnings == [
        "fp32 ort_cpu: onnxruntime failed during onnxruntime setup (SessionError: onnxruntime is not installed "
        "(pip install onnxruntime)); falling back to fp32 eager"
    ]


def test_a_guard_rejection_rules_out_that_rung_only(nk, cache, monkeypatch):
    real = OrtRunner.__call__

    def off_by_ten_percent(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.depth = result.depth * 1.1
        return result

    monkeypatch.setattr(OrtRunner, "__call__", off_by_ten_percent)
    b = Built(nk, cache, ladder=[Rung("fp32", "ort_cpu", True), Rung("fp32", "eager")])
    assert str(b.engine.rung) == "fp32 eager"  # the torch fp32 rung is not ruled out by the graph's rejection
    assert (
        len(b.warnings) == 1
        and "accuracy guard rejected fp32 ort_cpu (mean relative depth difference" in (b.warnings[0])
    )
    assert_depth(b.engine, nk, atol=1e-6)


@pytest.mark.parametrize("faster", [True, False])
def test_backend_auto_keeps_onnxruntime_only_where_it_is_faster(nk, cache, monkeypatch, faster):
    def timed(runner, image, pad_input, flip_aug, calls=3):
        ort = isinstance(runner, OrtRunner)
        return (0.01 if ort else 0.02) if faster else (0.03 if ort else 0.02)

    monkeypatch.setattr(engine_module, "seconds_per_call", timed)
    b = Built(nk, cache, backend="auto")
    if faster:
        assert str(b.engine.rung) == "fp32 ort_cpu" and not b.warnings
        assert any("speed check: fp32 ort_cpu 10.0 ms, fp32 eager 20.0 ms per frame" in line for line in b.info)
    else:
        assert str(b.engine.rung) == "fp32 eager"
        assert "not faster than fp32 eager (30.0 ms vs 20.0 ms per frame)" in b.warnings[0]


def test_a_warm_up_at_a_new_size_that_cannot_export_steps_down(nk, cache, monkeypatch):
    b = Built(nk, cache)
    assert str(b.engine.rung) == "fp32 ort_cpu"

    def broken(model, spec, *args, **kwargs):
        raise ExportError(f"ONNX export at {spec.width}x{spec.height} failed: boom")

    monkeypatch.setattr(runner_module, "export_onnx", broken)
    assert b.engine.warmup(40, 56, SETTINGS)
    assert str(b.engine.rung) == "fp32 eager"
    assert b.warnings[0].startswith("fp32 ort_cpu: ONNX export failed during warm-up at 56x40 (ExportError: ")


def test_a_frame_at_a_new_size_that_cannot_export_is_dropped_and_steps_down(nk, cache, monkeypatch):
    b = Built(nk, cache)

    def broken(model, spec, *args, **kwargs):
        raise ExportError(f"ONNX export at {spec.width}x{spec.height} failed: boom")

    monkeypatch.setattr(runner_module, "export_onnx", broken)
    with pytest.raises(FrameDropped) as info:
        b.engine.run(frame(0)[:40, :56], "rgb8", INTR.scaled(56, 40), SETTINGS)
    assert info.value.kind == "export"
    assert_depth(b.engine, nk, atol=1e-6)  # the next frame: stepped down at once, served by torch
    assert str(b.engine.rung) == "fp32 eager" and b.engine.status()["failures"] == {"export": 1}


def test_flip_and_forced_routing_frames_match_torch(nk, cache):
    b = Built(nk, cache)
    for settings in (Settings(points=False, flip_aug=True), Settings(points=False, routing="outdoor")):
        out = b.engine.run(frame(4), "rgb8", INTR, settings)
        rgb = torch.from_numpy(frame(4)).permute(2, 0, 1)[None].float() / 255
        head = {"auto": None, "outdoor": "kitti"}[settings.routing]
        ref = nk.predict(rgb, pad_input=settings.pad_input, flip_aug=settings.flip_aug, head=head)
        depth = np.frombuffer(out.depth, dtype="<f4").reshape(out.height, out.width)
        np.testing.assert_allclose(depth, ref.depth[0, 0].numpy(), rtol=0, atol=1e-4)
        assert out.head == ref.heads[0]
    assert str(b.engine.rung) == "fp32 ort_cpu" and not b.warnings
