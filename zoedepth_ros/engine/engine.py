"""The GPU path fails safe: a ladder of execution rungs that the node steps down instead of stopping.

A rung is a (precision, execution mode) pair. ``plan_ladder`` orders them from fastest to safest; the engine
starts at the top and moves down only, one warning line per step, naming the rung, the step and the exception::

    bf16 cuda_graph: CUDA-graph capture failed during warm-up at 640x480 (RuntimeError: ...); falling back to
    bf16 eager

The ladder (precision outer, execution mode inner)::

    precision  auto on CUDA:  bf16 (if the GPU has it), fp16, fp32 - bf16/fp16 only if they pass the accuracy guard
               auto on CPU:   fp32
               bf16 / fp16:   the one asked for, then fp32
               fp32:          fp32
    execution  auto:          cuda_graph, eager on CUDA; eager on the CPU
               compile:       compile, cuda_graph, eager on CUDA; compile, eager on the CPU
               cuda_graph:    cuda_graph, eager (CUDA only: on the CPU it is a configuration error)
               eager:         eager

    e.g. auto on an Ampere+ GPU: bf16 cuda_graph > bf16 eager > fp16 cuda_graph > fp16 eager > fp32 cuda_graph
         > fp32 eager. Everything stays on the configured device.

At start-up (``Engine.build``) each rung is opened in steps: reduced-precision conversion (of a copy: the fp32
weights stay intact for the rungs below), runner construction (torch.compile is set up here), and, for a guarded
precision, the accuracy guard against fp32 eager (which runs the rung's own mode, so a capture or compile failure
shows here too). A conversion failure or a guard rejection skips every rung of that precision; any other failure
goes one rung down. ``Engine.warmup`` (at the camera size) captures / compiles; a device failure there (capture,
compile, out of memory, CUDA error) also goes one rung down and warms the next one.

Two switches sit beside the ladder and are turned off once, with one warning, without changing the rung: pinned
host memory (a failed pinned allocation, at start-up or for a frame: pageable, synchronous copies from then on;
that frame is retried, not dropped) and cuDNN autotuning (a cuDNN error: autotuning off, then the same rung is
retried at start-up, or the failure is counted at run time).

At run time a device failure of a frame (``classify``) drops that frame (``FrameDropped``), frees what it can
(``torch.cuda.empty_cache``; captured graphs of other sizes after an out-of-memory, all of them after a CUDA error)
and is counted by kind. An out-of-memory or CUDA / cuDNN error moves one rung down after
``FAILURES_BEFORE_STEP_DOWN`` consecutive failures (a finished frame resets the count); a capture or compile
failure (a new size, a routing or flip change) moves down at once, since retrying it cannot help. On the last rung
frames keep being dropped and counted. Anything else - a bad frame, a programming error - is not a device failure:
the engine re-raises it unchanged and counts nothing. ``Engine.status`` / ``diagnostics`` say which rung is in use,
why, every fallback with its reason and the failures by kind.

Threads: ``submit`` and ``warmup`` belong to one inference thread (they are the only ones that change the runner);
``result`` may run on a publisher thread, ``status`` / ``diagnostics`` anywhere. A failure seen by ``result`` is
counted at once, and acted on (freeing, stepping down) by the next ``submit`` or ``warmup``.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import numpy as np
import torch

from ..errors import StartupError
from ..model import CheckpointError, ZoeDepth, load, precision_of, set_precision
from ..weights import WeightsError, ensure_checkpoint
from .accuracy import MAX_MEAN_REL_DIFF, PROBE_SIZE, GuardReport, guard, probe_images, reference_results, settled
from .device import resolve_device
from .failures import (
    DROPPED_KINDS,
    IMMEDIATE_KINDS,
    KIND_TEXT,
    FrameDropped,
    classify,
    failure_text,
    summary,
)
from .intrinsics import Intrinsics
from .ladder import Fallback, Rung, plan_ladder
from .onnx.cache import checkpoint_sha256, weights_sha256
from .onnx.runner import OrtRunner
from .onnx.session import ORT_MODES, SessionSettings
from .pipeline import (
    PER_IMAGE,
    ROUTING_TO_HEAD,
    DepthFrame,
    DepthPipeline,
    FrameInput,
    InFlight,
    PinnedMemoryError,
    Settings,
)
from .runtime import DepthRunner, seconds_per_call

__all__ = [  # FrameDropped and DROPPED_KINDS are what callers of submit / results catch and count
    "DROPPED_KINDS",
    "FAILURES_BEFORE_STEP_DOWN",
    "Engine",
    "EngineError",
    "FrameDropped",
    "open_engine",
]

FAILURES_BEFORE_STEP_DOWN = 3  # consecutive out-of-memory / CUDA errors on one rung before the next one down

log = logging.getLogger(__name__)

RunnerFactory = Callable[..., DepthRunner]  # (model, device, *, mode, channels_last, cudnn_benchmark) -> runner


class EngineError(RuntimeError):
    """No rung of the ladder could start (every reason is in the message)."""


class _RungFailed(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step)
        self.step, self.cause = step, cause


class _GuardRejected(Exception):
    def __init__(self, report: GuardReport) -> None:
        super().__init__(report.reason)
        self.report = report


class _ReferenceFailed(Exception):
    pass


class Engine:
    """Owns the fp32 model, the runner and pipeline of the rung in use, and the way down the ladder.

    Build it with ``Engine.build``; then ``warmup`` at the camera size, ``submit`` frames (``result`` for the
    host frame) and read ``status`` / ``diagnostics``.
    """

    def __init__(
        self,
        model: ZoeDepth,
        device: torch.device,
        ladder: Sequence[Rung],
        *,
        channels_last: bool = False,
        pad_input: bool = True,
        flip_aug: bool = False,
        pinned: bool | None = None,
        probe_size: tuple[int, int] = PROBE_SIZE,
        max_mean_rel_diff: float = MAX_MEAN_REL_DIFF,
        runner_factory: RunnerFactory = DepthRunner,
        ort_factory: Callable[..., OrtRunner] = OrtRunner,
        ort_settings: SessionSettings | None = None,
        backend: str = "torch",
        warn: Callable[[str], None] | None = None,
        info: Callable[[str], None] | None = None,
        source: str = "",
    ) -> None:
        if not ladder:
            raise ValueError("an empty ladder")
        if precision_of(model) != "fp32" or any(p.dtype != torch.float32 for p in model.parameters()):
            raise ValueError("the engine needs the fp32 model (the rungs below a reduced precision run it)")
        self.master = model
        self.source = source  # where the weights came from (a checkpoint path), for diagnostics and summaries
        self.device = device
        self.ladder = tuple(ladder)
        self.channels_last = channels_last
        self.pad_input, self.flip_aug = pad_input, flip_aug
        self.probe_size, self.max_mean_rel_diff = probe_size, max_mean_rel_diff
        self.runner_factory = runner_factory
        self.ort_factory = ort_factory
        self.ort_settings = ort_settings or SessionSettings()
        self.backend = backend  # "auto": an onnxruntime rung must also be faster than torch to serve
        self._weights_sha: str | None = None
        self._warn = warn or log.warning
        self._info = info or log.info
        self.pinned = device.type == "cuda" if pinned is None else pinned
        self.cudnn_benchmark = True
        self.index = -1
        self.runner: DepthRunner | None = None
        self.pipeline: DepthPipeline | None = None
        self.fallbacks: list[Fallback] = []
        self.guard_reports: list[GuardReport] = []
        self.failures: Counter[str] = Counter()
        self.consecutive = 0
        self.last_failure = ""
        self._models: dict[str, ZoeDepth] = {"fp32": model}
        self._rejected: dict[str, str] = {}  # rung family (see Rung.family) -> why none of its rungs may be used
        self._passed: set[str] = set()  # guarded rung families that passed the guard
        self._probe: tuple[list[torch.Tensor], list] | None = None
        self._ready: dict[tuple, bool] = {}  # (batch, h, w, pad, flip, head) -> warmed on this rung (False: failed)
        self._expected: list[tuple[int, int, int, Settings]] = []  # (batch, h, w, settings) to warm when idle
        self.batch_sizes: Counter[int] = Counter()  # batches run, by size
        self._lock = threading.Lock()
        self._seq = 0
        self._generation = 0  # bumped on every rung change: failures of older frames do not count against it
        self._last_failure_seq = 0
        self._pending_free: set[str] = set()
        self._pending_step: str | None = None
        self._bottom_warned = False
        self._exhausted = False  # nothing below the rung in use would open: stop trying

    # ------------------------------------------------------------------ start-up

    @classmethod
    def build(
        cls,
        model: ZoeDepth,
        device: torch.device,
        precision: str = "auto",
        execution: str = "auto",
        *,
        ladder: Sequence[Rung] | None = None,
        auto_precisions: Sequence[str] | None = None,
        backend: str = "torch",
        ort_modes: Sequence[str] | None = None,
        **kwargs,
    ) -> Engine:
        """Plan the ladder (or take ``ladder``) and start on the first rung that opens; see ``Engine`` for kwargs.

        Raises ValueError for settings that can never run and EngineError when no rung opens.
        """
        rungs = (
            ladder
            if ladder is not None
            else plan_ladder(
                precision, execution, device, auto_precisions=auto_precisions, backend=backend, ort_modes=ort_modes
            )
        )
        engine = cls(model, device, rungs, backend=backend, **kwargs)
        engine.start()
        return engine

    def start(self) -> None:
        index, runner = self._open_from(0, "start-up")
        self._install(index, runner)
        self.pipeline = self._new_pipeline(runner, "start-up")
        self._probe = None  # the guard's images and fp32 reference are not needed on this rung any more

    def _open_from(self, start: int, phase: str) -> tuple[int, DepthRunner]:
        """The first rung at or below ``start`` that opens, warning once per rung that does not."""
        i: int | None = self._usable(start)
        while i is not None:
            rung = self.ladder[i]
            try:
                return i, self._open(rung)
            except _RungFailed as failed:
                e, text = failed.cause, ""
                if classify(e) == "cudnn" and self.cudnn_benchmark:
                    self._autotuning_off(e, phase)
                    continue  # the same rung again, without autotuning
                if isinstance(e, _GuardRejected):
                    text = self._rejected[rung.family] = f"accuracy guard rejected {rung.family} ({e.report.reason})"
                elif isinstance(e, _ReferenceFailed):
                    text = f"accuracy guard could not compute its fp32 reference ({summary(e.__cause__ or e)})"
                    for r in self.ladder:
                        if r.guarded:
                            self._rejected[r.family] = text
                else:
                    text = failure_text(failed.step, e)
                    if failed.step.endswith("conversion") or rung.onnxruntime:
                        self._rejected[rung.family] = text
                nxt = self._usable(i + 1)
                self._fell(rung, nxt, phase, text)
                self._free_memory(self._reachable(nxt) if nxt is not None else None)
                i = nxt
        rungs = {str(r) for r in self.ladder}
        reasons = "; ".join(f"{f.failed}: {f.reason}" for f in self.fallbacks if f.failed in rungs)
        raise EngineError(f"no way to run the model on {self.device} worked: {reasons}")

    def _open(self, rung: Rung) -> DepthRunner:
        """Conversion, runner, guard: every failure is a _RungFailed naming its step."""
        if rung.onnxruntime:
            return self._open_ort(rung)
        step = f"{rung.precision} conversion"
        try:
            model = self._model_for(rung.precision)
            step = "torch.compile setup" if rung.mode == "compile" else "runner construction"
            runner = self._torch_runner(model, rung.mode)
            if rung.guarded:
                step = "the accuracy guard"
                self._guard(rung, runner)
        except Exception as e:
            raise _RungFailed(step, e) from e
        return runner

    def _torch_runner(self, model: ZoeDepth, mode: str) -> DepthRunner:
        return self.runner_factory(
            model, self.device, mode=mode, channels_last=self.channels_last, cudnn_benchmark=self.cudnn_benchmark
        )

    def _open_ort(self, rung: Rung) -> OrtRunner:
        """onnxruntime setup, then the guard (which exports at the probe size and opens its session)."""
        step = "onnxruntime setup"
        try:
            runner = self.ort_factory(
                self.master,
                self.device,
                mode=rung.mode,
                precision=rung.precision,
                weights_id=self.weights_sha256,
                settings=self.ort_settings,
                info=self._info,
            )
            if rung.guarded:
                step = "the accuracy guard"
                self._guard(rung, runner)
        except Exception as e:
            raise _RungFailed(step, e) from e
        return runner

    def weights_sha256(self) -> str:
        """The checkpoint's SHA-256 (of the weights themselves for a model built in memory); what keys exports."""
        if self._weights_sha is None:
            self._weights_sha = checkpoint_sha256(self.source) if self.source else weights_sha256(self.master)
        return self._weights_sha

    def _model_for(self, precision: str) -> ZoeDepth:
        """The model in ``precision``: the fp32 master itself, or a converted copy (kept for the next rungs)."""
        model = self._models.get(precision)
        if model is None:
            model = self._models[precision] = set_precision(copy.deepcopy(self.master), precision)
        return model

    def _guard(self, rung: Rung, runner: DepthRunner) -> None:
        """Accuracy is a property of the precision: checked once per precision, with the first rung's runner."""
        if rung.family in self._passed:
            return
        if self._probe is None:
            try:
                images = probe_images(*self.probe_size, device=self.device)
                with torch.inference_mode():
                    self._probe = images, reference_results(self.master, images, self.pad_input, self.flip_aug)
            except Exception as e:
                raise _ReferenceFailed(str(e)) from e
        images, reference = self._probe
        report = guard(
            reference,
            lambda x: settled(runner(x, pad_input=self.pad_input, flip_aug=self.flip_aug)),
            images,
            runner.describe(),
            self.max_mean_rel_diff,
        )
        if report.passed and self.backend == "auto" and rung.onnxruntime:
            report = self._speed_check(report, runner, images[0])
        self.guard_reports.append(report)
        self._info(
            f"accuracy guard {report.mode}: {'passed' if report.passed else 'failed'} (mean relative depth "
            f"difference {report.mean_rel_diff:.2e}, routing "
            f"{'identical' if report.routing_identical else 'differs'}) {report.reason}".rstrip()
        )
        if not report.passed:
            raise _GuardRejected(report)
        self._passed.add(rung.family)

    def _speed_check(self, report: GuardReport, runner: OrtRunner, image: torch.Tensor) -> GuardReport:
        """backend auto: the onnxruntime rung serves only if it is faster than the first torch rung here."""
        torch_rung = next((r for r in self.ladder if not r.onnxruntime), None)
        if torch_rung is None:
            return report
        try:
            competitor = self._torch_runner(self._model_for(torch_rung.precision), torch_rung.mode)
            torch_ms = seconds_per_call(competitor, image, self.pad_input, self.flip_aug) * 1e3
            competitor.drop_graphs()
            del competitor
        except Exception as e:  # the torch rung's own troubles show when it is opened; compare with fp32 eager
            self._info(f"speed check: {torch_rung} did not run ({summary(e)}); comparing with fp32 eager")
            torch_rung = Rung("fp32", "eager")
            torch_ms = seconds_per_call(DepthRunner(self.master, self.device), image, self.pad_input, self.flip_aug)
            torch_ms *= 1e3
        ort_ms = seconds_per_call(runner, image, self.pad_input, self.flip_aug) * 1e3
        self._info(f"speed check: {runner.describe()} {ort_ms:.1f} ms, {torch_rung} {torch_ms:.1f} ms per frame")
        if ort_ms < torch_ms:
            return report
        reason = f"not faster than {torch_rung} ({ort_ms:.1f} ms vs {torch_ms:.1f} ms per frame)"
        return replace(report, passed=False, reason="; ".join(filter(None, [report.reason, reason])))

    def _new_pipeline(self, runner: DepthRunner, phase: str) -> DepthPipeline:
        if self.pinned:
            pipeline = DepthPipeline(runner, self.device, pinned=True)
            try:
                pipeline.check_pinned()
                return pipeline
            except PinnedMemoryError as e:
                self._unpin_switch(e, phase)
        return DepthPipeline(runner, self.device, pinned=False)

    # ------------------------------------------------------------------ moving down

    def _usable(self, start: int) -> int | None:
        """The first rung at or after ``start`` whose precision has not been ruled out."""
        return next((j for j in range(start, len(self.ladder)) if self.ladder[j].family not in self._rejected), None)

    def _below(self) -> int | None:
        """The rung a step down would open, None at the bottom (or when nothing below opened last time)."""
        return None if self._exhausted else self._usable(self.index + 1)

    def _reachable(self, index: int) -> set[str]:
        return {r.precision for r in self.ladder[index:] if r.family not in self._rejected and not r.onnxruntime} | {
            "fp32"
        }

    def _fell(self, rung: Rung, nxt: int | None, phase: str, text: str) -> None:
        now = str(self.ladder[nxt]) if nxt is not None else ""
        with self._lock:
            self.fallbacks.append(Fallback(str(rung), now, phase, text))
        self._warn(f"{rung}: {text}; " + (f"falling back to {now}" if now else "no rung below it"))

    def _install(self, index: int, runner: DepthRunner) -> None:
        with self._lock:
            self.index, self.runner = index, runner
            self._generation += 1
            self.consecutive = 0
            self._ready = {}
            if self.pipeline is not None:
                self.pipeline.runner = runner
        self._free_memory(self._reachable(index))

    def _step_down(self, phase: str, text: str) -> None:
        """One rung down from the one in use (run time / warm-up); stays put when nothing below opens."""
        rung = self.ladder[self.index]
        nxt = self._below()
        if nxt is None:
            with self._lock:
                self.consecutive = 0
                first = not self._bottom_warned
                self._bottom_warned = True
            if first:
                self._fell(rung, None, phase, text + " (frames that fail keep being dropped)")
            return
        self.runner.drop_graphs()  # its graph memory is better spent on the next rung
        self._fell(rung, nxt, phase, text)
        try:
            index, runner = self._open_from(nxt, phase)
        except EngineError:
            self._warn(f"no rung below {rung} opened; staying on it (frames that fail keep being dropped)")
            with self._lock:
                self.consecutive = 0
                self._exhausted = True
            return
        self._install(index, runner)
        self._probe = None

    def _unpin_switch(self, exc: BaseException, phase: str) -> None:
        with self._lock:
            self.pinned = False
            self.fallbacks.append(Fallback("pinned host memory", "pageable copies", phase, summary(exc)))
        self._warn(
            f"pinned host memory unavailable ({summary(exc)}); using pageable, synchronous host copies "
            "(slower transfers, no copy overlap)"
        )

    def _autotuning_off(self, exc: BaseException, phase: str) -> None:
        with self._lock:
            if not self.cudnn_benchmark:  # the publisher thread may have got here first
                return
            self.cudnn_benchmark = False
            self.fallbacks.append(Fallback("cuDNN autotuning", "off", phase, summary(exc)))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False
        self._warn(f"cuDNN autotuning failed ({summary(exc)}); continuing without it")

    def _free_memory(self, keep_precisions: set[str] | None = None) -> None:
        """Drop converted models no rung below can use; give cached device memory back."""
        if keep_precisions is not None:
            for p in [p for p in self._models if p not in keep_precisions]:
                del self._models[p]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ run time

    @property
    def rung(self) -> Rung:
        return self.ladder[self.index]

    @property
    def degraded(self) -> bool:
        """True once anything fell back or a device failure was seen (diagnostics level WARN)."""
        return bool(self.fallbacks or self.failures)

    def describe(self) -> str:
        """What runs now, e.g. "bf16 cuda_graph channels-last" (+ ", pageable copies" when pinning failed)."""
        text = self.runner.describe()
        return text + (", pageable copies" if self.device.type == "cuda" and not self.pinned else "")

    @property
    def variant(self) -> str:
        """ "n", "k" or "nk"."""
        return self.master.config.variant

    def submit(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> InFlight:
        """``submit_batch`` of one frame."""
        return self.submit_batch([FrameInput(raw, encoding, intrinsics, settings)])

    def submit_batch(self, frames: Sequence[FrameInput]) -> InFlight:
        """``DepthPipeline.submit_batch`` on the rung in use (one forward for all ``frames``).

        Raises FrameError for a bad frame (nothing is counted; the others may be resubmitted), FrameDropped for a
        device failure (counted; maybe a rung down already); re-raises anything else.
        """
        self._apply_pending()
        with self._lock:
            self._seq += 1
            seq, generation = self._seq, self._generation
        try:
            inflight = self._submit_once(frames, seq, generation)
        except PinnedMemoryError as e:  # the batch is retried, not dropped
            self._unpin_switch(e, "run time")
            self.pipeline = DepthPipeline(self.runner, self.device, pinned=False)
            inflight = self._submit_once(frames, seq, generation)
        first = frames[0]
        self._ready[self._key(len(frames), first.raw.shape[0], first.raw.shape[1], first.settings)] = True
        with self._lock:
            self.batch_sizes[len(frames)] += 1
        return inflight

    def _submit_once(self, frames: Sequence[FrameInput], seq: int, generation: int) -> InFlight:
        pipeline = self.pipeline
        try:
            inflight = pipeline.submit_batch(frames)
        except (PinnedMemoryError, ValueError):  # FrameError and other bad input are the caller's
            raise
        except Exception as e:
            kind, message = self._report(e, seq, generation, frames[0].raw.shape, len(frames))
            if kind is None:
                raise
            self._apply_pending()
            raise FrameDropped(kind, message) from e
        inflight.meta["engine"] = (seq, generation)
        if not pipeline.pinned:  # the frames are finished already
            self._succeeded(seq, generation)
        return inflight

    def results(self, inflight: InFlight) -> list[DepthFrame]:
        """``inflight.results()``; a device failure surfacing here (asynchronous CUDA errors) is FrameDropped too."""
        seq, generation = inflight.meta.get("engine", (0, -1))
        try:
            frames = inflight.results()
        except Exception as e:
            kind, message = self._report(e, seq, generation, None)
            if kind is None:
                raise
            raise FrameDropped(kind, message) from e
        self._succeeded(seq, generation)
        return frames

    def result(self, inflight: InFlight) -> DepthFrame:
        """The one frame of a batch of one (``results`` for a batch)."""
        self.results(inflight)  # device failures become FrameDropped here
        return inflight.result()

    def run(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> DepthFrame:
        """Submit one frame and wait (tools, tests)."""
        return self.result(self.submit(raw, encoding, intrinsics, settings))

    def run_batch(self, frames: Sequence[FrameInput]) -> list[DepthFrame]:
        """Submit a batch and wait."""
        return self.results(self.submit_batch(frames))

    def report_failure(self, exc: BaseException) -> str | None:
        """Count a device failure seen elsewhere (thread-safe); its kind, or None if it is not one.

        Freeing and stepping down happen on the inference thread, at its next ``submit`` / ``warmup``.
        """
        with self._lock:
            generation = self._generation
        return self._report(exc, 0, generation, None)[0]

    def _report(self, exc: BaseException, seq: int, generation: int, shape, batch: int = 1) -> tuple[str | None, str]:
        kind = classify(exc)
        if kind is None or kind == "pinned_memory":
            return None, ""
        with self._lock:
            self.failures[kind] += 1
            self.last_failure = f"{kind}: {summary(exc)}"
            rung = self.ladder[self.index]
            current = generation == self._generation
            note = f"on {rung}" if current else f"on an earlier rung; {rung} now"
            if current:
                self._last_failure_seq = max(self._last_failure_seq, seq or self._seq)
                self.consecutive += 1
                self._pending_free.add(kind)
                if kind in IMMEDIATE_KINDS or self.consecutive >= FAILURES_BEFORE_STEP_DOWN:
                    what = (
                        f"{KIND_TEXT[kind]} for a frame ({summary(exc)})"
                        if kind in IMMEDIATE_KINDS
                        else f"{self.consecutive} device failures in a row (last: {summary(exc)})"
                    )
                    self._pending_step = self._pending_step or what
                    note += ", stepping down"
                else:
                    note += f", {self.consecutive} of {FAILURES_BEFORE_STEP_DOWN} in a row before stepping down"
        if kind == "cudnn" and self.cudnn_benchmark:
            self._autotuning_off(exc, "run time")
        size = ""
        if shape is not None:
            size = f" for a {shape[1]}x{shape[0]} image" if batch == 1 else f" for {batch} {shape[1]}x{shape[0]} images"
        advice = "; consider output_scale or precision" if kind == "out_of_memory" else ""
        return kind, f"{KIND_TEXT[kind]} on {self.device}{size} ({note}): {summary(exc)}{advice}"

    def _succeeded(self, seq: int, generation: int) -> None:
        with self._lock:
            if generation == self._generation and seq > self._last_failure_seq:
                self.consecutive = 0

    def _apply_pending(self) -> None:
        """Free and step down as the failures reported so far asked (inference thread only)."""
        with self._lock:
            free, step = self._pending_free, self._pending_step
            self._pending_free, self._pending_step = set(), None
        if not free and step is None:
            return
        runner = self.runner
        if free & {"device_error", "cudnn"}:
            runner.drop_graphs()  # a graph whose replay failed is not trusted again; recaptured on demand
        elif "out_of_memory" in free:
            runner.drop_graphs(keep=runner.last_key)  # other sizes' graph pools
        if step is not None:
            self._step_down("run time", step)
        self._free_memory()

    # ------------------------------------------------------------------ warm-up

    @staticmethod
    def _key(batch: int, height: int, width: int, settings: Settings) -> tuple:
        return batch, height, width, settings.pad_input, settings.flip_aug, ROUTING_TO_HEAD[settings.routing]

    def expect(self, height: int, width: int, settings: Settings, batch_sizes: Sequence[int] = (1,)) -> None:
        """Plan warm-ups for inputs of this size (one per batch size); ``warm_up_next`` runs them when idle."""
        for batch in batch_sizes:
            item = (int(batch), int(height), int(width), settings)
            if item not in self._expected:
                self._expected.append(item)

    def warm_up_next(self) -> bool:
        """Warm one planned input that this rung has not tried yet; False when there was nothing to do.

        Eager on the CPU has nothing to capture, compile or autotune: there only batches of one are warmed (the
        first call's one-off costs), since warming a batch of four would cost four frames' time per call.
        """
        for batch, height, width, settings in self._expected:
            key = self._key(batch, height, width, settings)
            if key in self._ready:
                continue
            if batch > 1 and self.device.type == "cpu" and self.rung.mode == "eager":
                self._ready[key] = True
                continue
            self.warmup(height, width, settings, batch=batch)
            return True
        self._apply_pending()
        return False

    def warmup(self, height: int, width: int, settings: Settings | None = None, batch: int = 1) -> bool:
        """Run (and capture / compile) the rung in use at this size before frames arrive; True when it is ready.

        Cheap when already done on this rung (call it whenever idle). A device failure moves down a rung and
        warms that one; any other failure is logged once and left to the first frame.
        """
        self._apply_pending()
        settings = settings or Settings()
        key = self._key(batch, height, width, settings)
        what = f"{width}x{height}" + (f" x{batch}" if batch > 1 else "")
        while True:
            ready = self._ready.get(key)
            if ready is not None:
                return ready
            runner, t0 = self.runner, time.monotonic()
            try:
                runner.warmup(
                    height,
                    width,
                    pad_input=settings.pad_input,
                    flip_aug=settings.flip_aug,
                    head=key[-1],
                    batch=batch,
                    per_image=PER_IMAGE,  # as the pipeline runs it: the same graph
                )
            except Exception as e:
                kind = classify(e)
                if kind == "cudnn" and self.cudnn_benchmark:
                    self._autotuning_off(e, "warm-up")
                    runner.drop_graphs()
                    continue
                index = self.index
                if kind is not None and kind != "pinned_memory" and self._below() is not None:
                    self._step_down("warm-up", failure_text(f"warm-up at {what}", e))
                    if self.index != index:
                        continue  # warm the new rung
                self._ready[key] = False
                self._warn(f"{self.rung}: warm-up at {what} failed ({summary(e)}); the first frame will try again")
                return False
            self._ready[key] = True
            self._info(f"warmed up for {what} ({self.describe()}) in {time.monotonic() - t0:.1f} s")
            return True

    # ------------------------------------------------------------------ diagnostics

    def why(self) -> str:
        """Why the rung in use is the one in use: what failed just above it, or that it was the first choice."""
        now = str(self.ladder[self.index])
        last = next((f for f in reversed(self.fallbacks) if f.now == now), None)
        return f"{last.failed}: {last.reason}" if last is not None else "first choice"

    def status(self) -> dict:
        """Everything diagnostics may want, as plain data."""
        with self._lock:
            rung = self.ladder[self.index]
            return {
                "rung": str(rung),
                "precision": rung.precision,
                "execution": rung.mode,
                "backend": "onnxruntime" if rung.onnxruntime else "torch",
                "provider": ORT_MODES.get(rung.mode, ""),
                "position": self.index,
                "ladder": [str(r) for r in self.ladder],
                "why": self.why(),
                "pinned": self.pinned,
                "cudnn_autotuning": self.cudnn_benchmark,
                "fallbacks": [asdict(f) for f in self.fallbacks],
                "rejected": dict(self._rejected),
                "failures": dict(self.failures),
                "consecutive_failures": self.consecutive,
                "last_failure": self.last_failure,
                "guard": [r.as_dict() for r in self.guard_reports],
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
            }

    def diagnostics(self) -> dict[str, str]:
        """Flat key/value strings for /diagnostics."""
        s = self.status()
        values = {
            "precision": s["precision"],
            "execution": s["execution"],
            "backend": s["backend"] + (f" ({s['provider']})" if s["provider"] else ""),
            "execution rung": f"{s['rung']} ({s['position'] + 1} of {len(s['ladder'])})",
            "execution rung reason": s["why"],
            "execution ladder": " > ".join(s["ladder"]),
            "fallbacks": str(len(s["fallbacks"])),
            "batch sizes seen": ", ".join(f"{b} ({n})" for b, n in s["batch_sizes"].items()) or "none yet",
        }
        if self.device.type == "cuda":
            values["host copies"] = "pinned, copy stream" if s["pinned"] else "pageable, synchronous"
            values["cuDNN autotuning"] = "on" if s["cudnn_autotuning"] else "off"
        for kind in DROPPED_KINDS:
            if s["failures"].get(kind):
                values[f"device failures ({kind})"] = str(s["failures"][kind])
        if s["last_failure"]:
            values["last device failure"] = s["last_failure"]
        return values


def open_engine(
    checkpoint: str,
    device: str = "auto",
    precision: str = "auto",
    execution: str = "auto",
    *,
    download: bool = True,
    channels_last: bool = False,
    pad_input: bool = True,
    flip_aug: bool = False,
    info: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    backend: str = "torch",
    ort_settings: SessionSettings | None = None,
) -> Engine:
    """The weights (fetched on first use when ``download``), loaded on the device, on the first rung that opens.

    What the node's configure and the offline tools both call. Every failure is a StartupError with one line
    saying what to do (a bad device, a missing or corrupt checkpoint, settings that cannot run).
    """
    info = info or log.info
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise StartupError(str(e)) from None
    try:
        path = ensure_checkpoint(checkpoint, download=download, log=info)
        model = load(path, device=dev)
    except (WeightsError, CheckpointError) as e:
        raise StartupError(str(e)) from None
    try:
        engine = Engine.build(
            model,
            dev,
            precision,
            execution,
            channels_last=channels_last,
            pad_input=pad_input,
            flip_aug=flip_aug,
            warn=warn,
            info=info,
            source=str(path),
            backend=backend,
            ort_settings=ort_settings,
        )
    except (ValueError, EngineError) as e:
        raise StartupError(str(e)) from None
    info(f"loaded ZoeD_{engine.variant.upper()} from {path} on {dev} ({engine.describe()})")
    return engine
