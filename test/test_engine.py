"""The fail-safe ladder, on the CPU: every device failure is injected (capture, compile, guard, conversion, pinned
allocation, out-of-memory and replay errors raised from the runner), and the depth on the rung it falls back to is
checked against the eager model."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_fixtures import randomize_

try:
    from torch._inductor.exc import InductorError
except ImportError:  # older torch (the floor, 2.3, has none): a stand-in with its module and message

    class InductorError(RuntimeError):
        __module__ = "torch._inductor.exc"

        def __init__(self, inner: BaseException, _backtrace) -> None:
            super().__init__(f"{type(inner).__name__}: {inner}")


from zoedepth_ros.engine import FAILURES_BEFORE_STEP_DOWN, Engine, EngineError
from zoedepth_ros.engine import engine as engine_module
from zoedepth_ros.engine.accuracy import GuardReport
from zoedepth_ros.engine.failures import FrameDropped, classify
from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.ladder import Rung, plan_ladder
from zoedepth_ros.engine.pipeline import PinnedMemoryError, Settings
from zoedepth_ros.engine.runtime import CaptureError, CompileError, DepthRunner
from zoedepth_ros.engine.transfer import PINNED_PROBE_BYTES
from zoedepth_ros.model import ZoeDepth, set_precision, tiny_config

CPU = torch.device("cpu")
H, W = 48, 64
PROBE = (48, 64)
INTR = Intrinsics(fx=50.0, fy=52.0, cx=31.5, cy=23.5, width=W, height=H)
SETTINGS = Settings(points=False)
# CUDA errors have their own type in recent torch; a RuntimeError with the same text before
AcceleratorError = getattr(torch, "AcceleratorError", None) or type("AcceleratorError", (RuntimeError,), {})
OOM = "CUDA out of memory. Tried to allocate 20.00 MiB"
GRAPH_RUNGS = [Rung("fp32", "cuda_graph"), Rung("fp32", "eager")]


def frame(seed: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    return (255 * np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + seed)], axis=-1)).astype(np.uint8)


def expected(model, raw: np.ndarray, settings: Settings = SETTINGS) -> np.ndarray:
    rgb = torch.from_numpy(raw).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        depth = model.predict(rgb, pad_input=settings.pad_input, flip_aug=settings.flip_aug).depth[0, 0].numpy()
    return np.where((depth < settings.min_depth) | (depth > settings.max_depth), np.nan, depth)


def depth_of(out) -> np.ndarray:
    return np.frombuffer(out.depth, dtype="<f4").reshape(out.height, out.width)


def assert_depth(engine: Engine, model, seed: int = 0, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(
        depth_of(engine.run(frame(seed), "rgb8", INTR, SETTINGS)),
        expected(model, frame(seed)),
        rtol=0,
        atol=atol,
        equal_nan=True,
    )


# ---------------------------------------------------------------- the cuda_graph mode's semantics on the CPU


class FakeGraph:
    """Replay re-runs the recorded call into the captured output tensors, as a CUDA graph overwrites them."""

    def __init__(self, runner: GraphOnCpu, rerun, outputs) -> None:
        self.runner, self.rerun, self.outputs = runner, rerun, outputs

    def replay(self) -> None:
        if self.runner.replay_faults:
            exc = self.runner.replay_faults.pop(0)
            if exc is not None:
                raise exc
        depth, indices, logits = self.rerun()
        self.outputs[0].copy_(depth)
        self.outputs[1].copy_(indices)
        for dst, src in zip(self.outputs[2], logits, strict=True):
            dst.copy_(src)


class GraphOnCpu(DepthRunner):
    """A DepthRunner whose "cuda_graph" mode runs on the CPU: the real capture/replay code path, with the CUDA
    stream warm-up and the recording replaced. ``faults`` / ``replay_faults``: exceptions the next calls / replays
    raise (None: run normally), shared by every runner the engine builds."""

    faults: list
    replay_faults: list

    def __init__(self, model, device, mode="eager", channels_last=False, cudnn_benchmark=True) -> None:
        super().__init__(model, device, "eager" if mode == "cuda_graph" else mode, channels_last, cudnn_benchmark)
        self.mode = mode
        self.cudnn_benchmark = cudnn_benchmark
        self.captures = 0

    @property
    def uses_graphs(self) -> bool:
        return self.mode == "cuda_graph"

    def __call__(self, rgb, pad_input=True, flip_aug=False, head=None, per_image=False):
        if self.faults:
            exc = self.faults.pop(0)
            if exc is not None:
                raise exc
        return super().__call__(rgb, pad_input, flip_aug, head, per_image)

    def _warm_up_for_capture(self, fn, static_input, key) -> None:
        fn(static_input, key.pad_input, key.flip_aug, key.head, key.per_image)

    def _record(self, fn, static_input, key):
        outputs = fn(static_input, key.pad_input, key.flip_aug, key.head, key.per_image)
        self.captures += 1
        return FakeGraph(
            self, lambda: fn(static_input, key.pad_input, key.flip_aug, key.head, key.per_image), outputs
        ), outputs


class Harness:
    """An engine on the CPU with the fake-graph runners, its warnings, and the fault lists to fill."""

    def __init__(self, model, ladder, **kwargs) -> None:
        self.faults: list = []
        self.replay_faults: list = []
        self.warnings: list[str] = []
        self.built: list[GraphOnCpu] = []
        self.engine = Engine.build(
            model,
            CPU,
            ladder=ladder,
            runner_factory=self.factory,
            probe_size=PROBE,
            warn=self.warnings.append,
            info=lambda _: None,
            **kwargs,
        )

    def factory(self, model, device, *, mode, channels_last, cudnn_benchmark) -> GraphOnCpu:
        runner = GraphOnCpu(model, device, mode, channels_last, cudnn_benchmark)
        runner.faults, runner.replay_faults = self.faults, self.replay_faults
        self.built.append(runner)
        return runner

    def submit_dropped(self, kind: str, seed: int = 0) -> FrameDropped:
        with pytest.raises(FrameDropped) as info:
            self.engine.run(frame(seed), "rgb8", INTR, SETTINGS)
        assert info.value.kind == kind
        return info.value


def small_model(variant: str, seed: int) -> ZoeDepth:
    """The tiny random model at a 96x128 network size: the ladder logic does not need 384x512, the CPU time does."""
    torch.manual_seed(seed)
    return randomize_(ZoeDepth(replace(tiny_config(variant), net_size=(96, 128))), seed).eval()


@pytest.fixture(scope="module")
def nk():
    return small_model("nk", seed=3)


@pytest.fixture(scope="module")
def n1():
    return small_model("n", seed=1)  # one head (routing cannot differ): bf16 is within the guard's 1 %


def unchanged_fp32(model, reference_state) -> bool:
    state = model.state_dict()
    return all(p.dtype == torch.float32 for p in model.parameters()) and all(
        torch.equal(state[k], v) for k, v in reference_state.items()
    )


# ---------------------------------------------------------------- the ladder and the classifier


def test_plan_ladder_goes_from_fast_to_safe_on_the_same_device():
    cuda = torch.device("cuda")

    def names(rungs):
        return [str(r) for r in rungs]

    auto = plan_ladder("auto", "auto", cuda, bf16_supported=True)
    assert names(auto) == [
        "bf16 cuda_graph",
        "bf16 eager",
        "fp16 cuda_graph",
        "fp16 eager",
        "fp32 cuda_graph",
        "fp32 eager",
    ]
    assert [r.guarded for r in auto] == [True, True, True, True, False, False]
    assert names(plan_ladder("auto", "auto", cuda, bf16_supported=False)) == [
        "fp16 cuda_graph",
        "fp16 eager",
        "fp32 cuda_graph",
        "fp32 eager",
    ]
    explicit = plan_ladder("bf16", "compile", cuda)
    assert names(explicit) == [
        "bf16 compile",
        "bf16 cuda_graph",
        "bf16 eager",
        "fp32 compile",
        "fp32 cuda_graph",
        "fp32 eager",
    ]
    assert not any(r.guarded for r in explicit)  # asked for explicitly: no guard, as before
    assert names(plan_ladder("fp32", "eager", cuda)) == ["fp32 eager"]
    assert names(plan_ladder("auto", "auto", CPU)) == ["fp32 eager"]
    assert names(plan_ladder("bf16", "compile", CPU)) == ["bf16 compile", "bf16 eager", "fp32 compile", "fp32 eager"]
    assert names(plan_ladder("auto", "eager", CPU, auto_precisions=("bf16",))) == ["bf16 eager", "fp32 eager"]
    with pytest.raises(ValueError, match="execution cuda_graph needs a CUDA device"):
        plan_ladder("auto", "cuda_graph", CPU)  # a configuration error stops the node, it is not a fallback
    with pytest.raises(ValueError, match="unknown precision"):
        plan_ladder("int8", "auto", CPU)


@pytest.mark.parametrize(
    "exc, kind",
    [
        (torch.cuda.OutOfMemoryError(OOM), "out_of_memory"),
        (CaptureError("CUDA-graph capture failed"), "capture"),
        (CompileError("torch.compile failed"), "compile"),
        (InductorError(RuntimeError("C++ compile error"), None), "compile"),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), "device_error"),
        (AcceleratorError("CUDA error: unspecified launch failure"), "device_error"),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, ...)`"), "device_error"),
        (RuntimeError("cudaGraphLaunch failed"), "device_error"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), "cudnn"),
        (PinnedMemoryError("pinned allocation failed"), "pinned_memory"),
        # programming errors and bad frames are not device failures, even when they name a CUDA device or type
        (
            RuntimeError("The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1"),
            None,
        ),
        (
            RuntimeError(
                "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
            ),
            None,
        ),
        (RuntimeError("Input type (CUDABFloat16Type) and weight type (CUDAFloatType) should be the same"), None),
        (ValueError("expected an RGB batch of shape (B, 3, H, W), got (1, 4, 48, 64)"), None),
        (KeyError("routing"), None),
    ],
)
def test_classify_names_device_failures_only(exc, kind):
    assert classify(exc) == kind


# ---------------------------------------------------------------- start-up and warm-up


def test_a_working_graph_rung_replays_correct_depth_without_any_fallback(nk):
    h = Harness(nk, GRAPH_RUNGS)
    assert h.engine.warmup(H, W, SETTINGS) and h.built[-1].captures == 1
    assert h.engine.warmup(H, W, SETTINGS)  # already warm on this rung: nothing runs again
    first = h.engine.submit(frame(1), "rgb8", INTR, SETTINGS)
    second = h.engine.submit(frame(2), "rgb8", INTR, SETTINGS)  # replays into the same static outputs
    depths = [depth_of(h.engine.result(inflight)) for inflight in (first, second)]
    for depth, seed in zip(depths, (1, 2), strict=True):
        np.testing.assert_allclose(depth, expected(nk, frame(seed)), rtol=0, atol=1e-5, equal_nan=True)
    assert np.abs(depths[0] - depths[1]).max() > 1e-3  # the frames differ: the first kept its own result
    assert h.built[-1].captures == 1 and len(h.built) == 1
    assert h.warnings == [] and h.engine.status()["rung"] == "fp32 cuda_graph"
    assert h.engine.status()["why"] == "first choice" and not h.engine.degraded


@pytest.mark.parametrize(
    "how, text",
    [
        (
            "capture",
            "CUDA-graph capture failed during warm-up at 64x48 (RuntimeError: CUDA error: operation not "
            "permitted when stream is capturing)",
        ),
        ("oom", f"out of memory during warm-up at 64x48 (OutOfMemoryError: {OOM})"),
    ],
)
def test_a_warm_up_failure_falls_back_to_eager_in_the_same_precision(nk, monkeypatch, how, text):
    if how == "capture":

        def broken(self, fn, static_input, key):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

        monkeypatch.setattr(GraphOnCpu, "_record", broken)
    reference = copy.deepcopy(nk.state_dict())
    h = Harness(nk, [Rung("bf16", "cuda_graph"), Rung("bf16", "eager"), Rung("fp32", "eager")])
    if how == "oom":
        h.faults.append(torch.cuda.OutOfMemoryError(OOM))
    assert h.engine.warmup(H, W, SETTINGS)
    assert h.warnings == [f"bf16 cuda_graph: {text}; falling back to bf16 eager"]
    assert h.engine.rung == Rung("bf16", "eager") and h.engine.runner.precision == "bf16"
    assert_depth(h.engine, set_precision(copy.deepcopy(nk), "bf16"))
    assert unchanged_fp32(nk, reference)  # the bf16 rungs ran on a copy


def test_a_capture_failure_inside_the_accuracy_guard_goes_one_rung_down(n1, monkeypatch):
    def broken(self, fn, static_input, key):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphOnCpu, "_record", broken)
    h = Harness(n1, [Rung("bf16", "cuda_graph", True), Rung("bf16", "eager", True), Rung("fp32", "eager")])
    assert h.warnings == [
        "bf16 cuda_graph: CUDA-graph capture failed during the accuracy guard (RuntimeError: "
        "CUDA error: operation not permitted when stream is capturing); falling back to bf16 eager"
    ]
    assert h.engine.rung == Rung("bf16", "eager", True)
    assert [r.passed for r in h.engine.guard_reports] == [True]  # guarded on the rung that runs
    assert_depth(h.engine, set_precision(copy.deepcopy(n1), "bf16"))


def test_a_failing_warm_up_that_is_no_device_failure_keeps_the_rung(nk):
    h = Harness(nk, GRAPH_RUNGS)
    h.faults.append(ValueError("a bug"))
    assert not h.engine.warmup(H, W, SETTINGS)
    assert h.engine.rung == GRAPH_RUNGS[0] and len(h.warnings) == 1 and "warm-up at 64x48 failed" in h.warnings[0]
    assert not h.engine.warmup(H, W, SETTINGS) and len(h.warnings) == 1  # not retried every idle tick
    assert_depth(h.engine, nk)  # the first frame tries again (and captures)


def test_torch_compile_unavailable_falls_back_to_eager(nk, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unavailable)
    warnings: list[str] = []
    engine = Engine.build(nk, CPU, "fp32", "compile", warn=warnings.append, info=lambda _: None)
    assert warnings == [
        "fp32 compile: torch.compile setup failed (RuntimeError: Dynamo is not supported on "
        "Python 3.99+); falling back to fp32 eager"
    ]
    assert engine.rung == Rung("fp32", "eager") and engine.runner.model is nk
    assert_depth(engine, nk)


def compile_that_fails(*args, **kwargs):
    def compiled(*a, **k):
        raise InductorError(RuntimeError("C++ compile error: cc1plus not found"), None)

    return compiled


def test_a_compile_failure_at_warm_up_falls_back_to_eager(nk, monkeypatch):
    monkeypatch.setattr(torch, "compile", compile_that_fails)
    warnings: list[str] = []
    engine = Engine.build(nk, CPU, "fp32", "compile", warn=warnings.append, info=lambda _: None)
    assert engine.rung == Rung("fp32", "compile") and warnings == []  # nothing compiled yet
    assert engine.warmup(H, W, SETTINGS)
    assert warnings == [
        "fp32 compile: torch.compile failed during warm-up at 64x48 (InductorError: RuntimeError: "
        "C++ compile error: cc1plus not found); falling back to fp32 eager"
    ]
    assert engine.rung == Rung("fp32", "eager")
    assert_depth(engine, nk)


def test_a_compile_failure_on_a_frame_drops_it_and_steps_down_at_once(nk, monkeypatch):
    monkeypatch.setattr(torch, "compile", compile_that_fails)
    warnings: list[str] = []
    engine = Engine.build(nk, CPU, "fp32", "compile", warn=warnings.append, info=lambda _: None)
    with pytest.raises(FrameDropped) as info:
        engine.run(frame(0), "rgb8", INTR, SETTINGS)
    assert info.value.kind == "compile" and "stepping down" in str(info.value)
    assert engine.rung == Rung("fp32", "eager") and len(warnings) == 1
    assert warnings[0].startswith("fp32 compile: torch.compile failed for a frame (InductorError: RuntimeError: C++")
    assert_depth(engine, nk)


def test_an_accuracy_guard_rejection_skips_every_rung_of_that_precision(n1, monkeypatch):
    def rejects(reference, candidate, images, mode, max_mean_rel_diff):
        candidate(images[0])
        return GuardReport(mode, False, True, 0.05, (0.05,), "mean relative depth difference 0.0500 > 0.01")

    monkeypatch.setattr(engine_module, "guard", rejects)
    reference = copy.deepcopy(n1.state_dict())
    h = Harness(
        n1,
        [
            Rung("bf16", "cuda_graph", True),
            Rung("bf16", "eager", True),
            Rung("fp32", "cuda_graph"),
            Rung("fp32", "eager"),
        ],
    )
    assert h.warnings == [
        "bf16 cuda_graph: accuracy guard rejected bf16 (mean relative depth difference 0.0500 > "
        "0.01); falling back to fp32 cuda_graph"
    ]
    assert h.engine.rung == Rung("fp32", "cuda_graph") and h.engine.runner.model is n1
    assert "bf16" in h.engine.status()["rejected"]
    assert_depth(h.engine, n1)
    assert unchanged_fp32(n1, reference)


def test_an_accuracy_guard_that_raises_falls_back_to_fp32(n1, monkeypatch):
    def raises(*args, **kwargs):
        raise RuntimeError("probe images could not be made")

    monkeypatch.setattr(engine_module, "guard", raises)
    warnings: list[str] = []
    engine = Engine.build(
        n1, CPU, "auto", "auto", auto_precisions=("bf16",), probe_size=PROBE, warn=warnings.append, info=lambda _: None
    )
    assert warnings == [
        "bf16 eager: the accuracy guard failed (RuntimeError: probe images could not be made); "
        "falling back to fp32 eager"
    ]
    assert engine.rung == Rung("fp32", "eager") and engine.runner.model is n1
    assert_depth(engine, n1)


def test_the_real_guard_keeps_a_passing_precision_and_rejects_a_failing_one(n1):
    passing = Engine.build(n1, CPU, "auto", "auto", auto_precisions=("bf16",), probe_size=PROBE, info=lambda _: None)
    assert passing.rung == Rung("bf16", "eager", True) and passing.guard_reports[0].passed
    strict: list[str] = []
    failing = Engine.build(
        n1,
        CPU,
        "auto",
        "auto",
        auto_precisions=("bf16",),
        probe_size=PROBE,
        max_mean_rel_diff=1e-9,
        warn=strict.append,
        info=lambda _: None,
    )
    assert failing.rung == Rung("fp32", "eager") and len(strict) == 1 and "accuracy guard rejected bf16" in strict[0]


def test_a_precision_conversion_failure_falls_back_to_fp32(nk, monkeypatch):
    def no_memory(model, precision):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.20 GiB")

    monkeypatch.setattr(engine_module, "set_precision", no_memory)
    reference = copy.deepcopy(nk.state_dict())
    warnings: list[str] = []
    engine = Engine.build(nk, CPU, "bf16", "eager", warn=warnings.append, info=lambda _: None)
    assert warnings == [
        "bf16 eager: out of memory during bf16 conversion (OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 1.20 GiB); falling back to fp32 eager"
    ]
    assert engine.rung == Rung("fp32", "eager") and engine.runner.model is nk
    assert unchanged_fp32(nk, reference)
    assert_depth(engine, nk)


def test_no_rung_that_opens_is_one_error_with_every_reason(nk):
    def factory(model, device, *, mode, channels_last, cudnn_benchmark):
        raise RuntimeError(f"no {mode} here")

    with pytest.raises(
        EngineError,
        match=r"fp32 cuda_graph: runner construction failed .*no cuda_graph here.*"
        r"fp32 eager: runner construction failed .*no eager here",
    ):
        Engine.build(nk, CPU, ladder=GRAPH_RUNGS, runner_factory=factory, warn=lambda _: None)


def test_a_cudnn_failure_at_warm_up_turns_autotuning_off_and_keeps_the_rung(nk):
    h = Harness(nk, GRAPH_RUNGS)
    h.faults.append(RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"))
    assert h.engine.warmup(H, W, SETTINGS)
    assert h.warnings == [
        "cuDNN autotuning failed (RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR); continuing without it"
    ]
    assert h.engine.rung == GRAPH_RUNGS[0] and not h.engine.status()["cudnn_autotuning"]
    assert_depth(h.engine, nk)


def test_a_cudnn_failure_on_a_frame_is_counted_and_turns_autotuning_off_once(nk):
    h = Harness(nk, GRAPH_RUNGS)
    assert h.engine.warmup(H, W, SETTINGS)
    h.faults.extend([RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")] * FAILURES_BEFORE_STEP_DOWN)
    for _ in range(FAILURES_BEFORE_STEP_DOWN):
        h.submit_dropped("cudnn")
    assert [w.split(" (")[0] for w in h.warnings] == [
        "cuDNN autotuning failed",
        "fp32 cuda_graph: 3 device failures in a row",
    ]
    assert h.engine.rung == GRAPH_RUNGS[1] and h.built[-1].cudnn_benchmark is False  # the new rung starts without it
    assert h.engine.status()["failures"] == {"cudnn": FAILURES_BEFORE_STEP_DOWN}
    assert_depth(h.engine, nk)


# ---------------------------------------------------------------- pinned host memory


def pinned_is(monkeypatch, allowed) -> None:
    """torch.empty(pin_memory=True) succeeds (unpinned, on this CPU) where ``allowed(shape)``, else fails as
    cudaHostAlloc does."""
    real = torch.empty

    def empty(*args, pin_memory=False, **kwargs):
        if pin_memory and not allowed(tuple(args[0]) if args else ()):
            raise RuntimeError("CUDA error: out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)


def test_pinned_memory_unavailable_at_start_up_uses_pageable_copies(nk, monkeypatch):
    pinned_is(monkeypatch, lambda shape: False)
    warnings: list[str] = []
    engine = Engine.build(nk, CPU, "fp32", "eager", pinned=True, warn=warnings.append, info=lambda _: None)
    assert not engine.pinned and not engine.pipeline.pinned
    assert warnings == [
        "pinned host memory unavailable (RuntimeError: CUDA error: out of memory); using pageable, "
        "synchronous host copies (slower transfers, no copy overlap)"
    ]
    assert engine.rung == Rung("fp32", "eager")  # the rung is not given up for it
    assert_depth(engine, nk)


def test_pinned_staging_keeps_frames_in_flight_apart(nk, monkeypatch):
    pinned_is(monkeypatch, lambda shape: True)
    engine = Engine.build(nk, CPU, "fp32", "eager", pinned=True, warn=lambda _: None, info=lambda _: None)
    assert engine.pipeline.pinned
    first = engine.submit(frame(1), "rgb8", INTR, SETTINGS)
    second = engine.submit(frame(2), "rgb8", INTR, SETTINGS)  # the second slot's buffers
    for inflight, seed in ((first, 1), (second, 2)):
        np.testing.assert_allclose(
            depth_of(engine.result(inflight)), expected(nk, frame(seed)), rtol=0, atol=1e-5, equal_nan=True
        )


def test_a_pinned_allocation_failing_for_a_frame_retries_it_unpinned(nk, monkeypatch):
    pinned_is(monkeypatch, lambda shape: shape == (PINNED_PROBE_BYTES,))  # the start-up probe passes
    warnings: list[str] = []
    engine = Engine.build(nk, CPU, "fp32", "eager", pinned=True, warn=warnings.append, info=lambda _: None)
    assert engine.pipeline.pinned and warnings == []
    out = engine.run(frame(0), "rgb8", INTR, SETTINGS)  # not dropped
    np.testing.assert_allclose(depth_of(out), expected(nk, frame(0)), rtol=0, atol=1e-5, equal_nan=True)
    assert not engine.pinned and len(warnings) == 1 and "pinned host memory unavailable" in warnings[0]
    status = engine.status()
    assert status["failures"] == {} and status["fallbacks"][0]["failed"] == "pinned host memory"
    assert status["fallbacks"][0]["phase"] == "run time" and status["rung"] == "fp32 eager"


# ---------------------------------------------------------------- run time


def test_one_out_of_memory_drops_the_frame_and_keeps_the_rung(nk):
    h = Harness(nk, GRAPH_RUNGS)
    assert h.engine.warmup(H, W, SETTINGS)
    h.faults.append(torch.cuda.OutOfMemoryError(OOM))
    dropped = h.submit_dropped("out_of_memory")
    assert f"1 of {FAILURES_BEFORE_STEP_DOWN} in a row" in str(dropped) and "consider output_scale" in str(dropped)
    status = h.engine.status()
    assert status["rung"] == "fp32 cuda_graph" and status["failures"] == {"out_of_memory": 1}
    assert status["consecutive_failures"] == 1 and h.warnings == []
    assert_depth(h.engine, nk)
    assert h.engine.status()["consecutive_failures"] == 0  # a finished frame resets the count
    assert len(h.built) == 1 and h.built[0].captures == 1  # the graph in use was kept


def test_three_consecutive_out_of_memory_errors_move_one_rung_down(nk):
    h = Harness(nk, GRAPH_RUNGS)
    assert h.engine.warmup(H, W, SETTINGS)
    h.faults.extend(
        [torch.cuda.OutOfMemoryError(OOM), None, torch.cuda.OutOfMemoryError(OOM), torch.cuda.OutOfMemoryError(OOM)]
    )
    h.submit_dropped("out_of_memory")
    assert_depth(h.engine, nk)  # in between: not consecutive
    h.submit_dropped("out_of_memory")
    h.submit_dropped("out_of_memory")
    assert h.engine.rung == GRAPH_RUNGS[0] and h.warnings == []
    h.faults.extend([torch.cuda.OutOfMemoryError(OOM)] * FAILURES_BEFORE_STEP_DOWN)
    h.submit_dropped("out_of_memory")  # the third in a row
    assert h.engine.rung == GRAPH_RUNGS[1] and isinstance(h.engine.runner, GraphOnCpu)
    assert h.warnings == [
        f"fp32 cuda_graph: 3 device failures in a row (last: OutOfMemoryError: {OOM}); falling back to fp32 eager"
    ]
    h.faults.clear()
    assert_depth(h.engine, nk)
    assert h.engine.status()["failures"] == {"out_of_memory": 4}


def test_graph_replay_errors_drop_the_graphs_and_then_the_rung(nk):
    h = Harness(nk, GRAPH_RUNGS)
    assert h.engine.warmup(H, W, SETTINGS)
    graph_runner = h.built[0]
    h.replay_faults.extend([AcceleratorError("CUDA error: an illegal memory access was encountered")] * 3)
    h.submit_dropped("device_error")
    assert graph_runner._graphs == {}  # a graph whose replay failed is not replayed again
    h.submit_dropped("device_error")
    assert graph_runner.captures == 2  # recaptured for the second frame
    assert h.engine.rung == GRAPH_RUNGS[0]
    h.submit_dropped("device_error")
    assert h.engine.rung == GRAPH_RUNGS[1] and len(h.warnings) == 1
    assert "3 device failures in a row (last: AcceleratorError: CUDA error: an illegal memory access" in h.warnings[0]
    assert_depth(h.engine, nk)


def test_a_plain_bug_is_raised_as_itself_and_never_moves_the_rung(nk):
    h = Harness(nk, GRAPH_RUNGS)
    bugs = [
        ValueError("a bad frame"),
        RuntimeError("The size of tensor a (3) must match the size of tensor b (4)"),
        RuntimeError("Input type (CUDABFloat16Type) and weight type (CUDAFloatType) should be the same"),
        KeyError("routing"),
    ]
    h.faults.extend(bugs)
    for bug in bugs:
        with pytest.raises(type(bug)) as info:
            h.engine.run(frame(0), "rgb8", INTR, SETTINGS)
        assert info.value is bug and not isinstance(info.value, FrameDropped)
    status = h.engine.status()
    assert status["rung"] == "fp32 cuda_graph" and status["failures"] == {} and h.warnings == []
    assert_depth(h.engine, nk)


def test_the_last_rung_keeps_dropping_failed_frames_and_warns_once(nk):
    h = Harness(nk, [Rung("fp32", "eager")])
    h.faults.extend([torch.cuda.OutOfMemoryError(OOM)] * (2 * FAILURES_BEFORE_STEP_DOWN))
    for _ in range(2 * FAILURES_BEFORE_STEP_DOWN):
        h.submit_dropped("out_of_memory")
    assert h.engine.rung == Rung("fp32", "eager") and len(h.warnings) == 1 and "no rung below it" in h.warnings[0]
    assert h.engine.status()["failures"] == {"out_of_memory": 2 * FAILURES_BEFORE_STEP_DOWN}
    assert_depth(h.engine, nk)


def test_failures_reported_from_another_thread_step_down_at_the_next_submit(nk):
    h = Harness(nk, GRAPH_RUNGS)
    threads = [
        threading.Thread(target=h.engine.report_failure, args=(RuntimeError("CUDA error: unspecified launch failure"),))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
        t.join()
    assert h.engine.status()["consecutive_failures"] == 3 and h.engine.rung == GRAPH_RUNGS[0]  # not acted on yet
    assert h.engine.report_failure(ValueError("a bad frame")) is None
    assert_depth(h.engine, nk)  # the inference thread steps down first, then runs the frame on eager
    assert h.engine.rung == GRAPH_RUNGS[1] and len(h.warnings) == 1


def test_a_failure_of_a_frame_from_an_earlier_rung_does_not_count_against_the_new_one(nk, monkeypatch):
    pinned_is(monkeypatch, lambda shape: True)
    h = Harness(nk, GRAPH_RUNGS, pinned=True)
    assert h.engine.pipeline.pinned
    old = h.engine.submit(frame(0), "rgb8", INTR, SETTINGS)  # on the graph rung, result not read yet
    h.faults.extend([torch.cuda.OutOfMemoryError(OOM)] * FAILURES_BEFORE_STEP_DOWN)
    for seed in range(FAILURES_BEFORE_STEP_DOWN):
        h.submit_dropped("out_of_memory", seed)
    assert h.engine.rung == GRAPH_RUNGS[1]

    def late_failure():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(old, "results", late_failure)
    with pytest.raises(FrameDropped, match="earlier rung"):
        h.engine.result(old)
    status = h.engine.status()
    assert status["consecutive_failures"] == 0 and status["failures"]["device_error"] == 1


def test_status_and_diagnostics_name_the_rung_and_why(nk, monkeypatch):
    def broken(self, fn, static_input, key):
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    monkeypatch.setattr(GraphOnCpu, "_record", broken)
    h = Harness(nk, GRAPH_RUNGS)
    assert h.engine.warmup(H, W, SETTINGS)
    h.faults.append(torch.cuda.OutOfMemoryError(OOM))
    h.submit_dropped("out_of_memory")
    status = h.engine.status()
    assert status["rung"] == "fp32 eager" and status["ladder"] == ["fp32 cuda_graph", "fp32 eager"]
    assert status["precision"] == "fp32" and status["execution"] == "eager" and status["position"] == 1
    assert status["why"].startswith("fp32 cuda_graph: CUDA-graph capture failed during warm-up at 64x48")
    assert status["fallbacks"] == [
        {
            "failed": "fp32 cuda_graph",
            "now": "fp32 eager",
            "phase": "warm-up",
            "reason": "CUDA-graph capture failed during warm-up at 64x48 (RuntimeError: "
            "CUDA error: operation failed due to a previous error during capture)",
        }
    ]
    assert status["failures"] == {"out_of_memory": 1} and status["last_failure"].startswith("out_of_memory: ")
    diag = h.engine.diagnostics()
    assert diag["precision"] == "fp32" and diag["execution"] == "eager"
    assert diag["execution rung"] == "fp32 eager (2 of 2)"
    assert diag["execution ladder"] == "fp32 cuda_graph > fp32 eager"
    assert diag["execution rung reason"] == status["why"] and diag["device failures (out_of_memory)"] == "1"
    assert all(isinstance(v, str) for v in diag.values()) and h.engine.degraded
