"""How a loaded ZoeDepth is executed: eager, replayed CUDA graphs, or torch.compile, per input size.

``DepthRunner`` is what the pipeline and the benchmark call. In the graph modes the model routes on the device
(both NK heads run; the router's choice is selected without a host sync), so a whole ``predict`` - reflect pad,
resize, normalise, encoder, decoder, heads, bicubic restore, flip averaging - is one captured CUDA graph,
recorded once per (input shape, pad, flip, forced head) at warm-up and replayed for every frame. Precision is set
on the model beforehand (``model.set_precision``); the runner only executes it.

A failure of the capture itself raises ``CaptureError`` and a failure of torch.compile's first call for a size
raises ``CompileError`` (the original exception is the cause), so that ``engine.Engine`` can tell a mode that
cannot work here from an out-of-memory or a bad input, and step down to a safer mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..model import InferenceResult, ZoeDepth, precision_of
from ..model.torch_compat import OutOfMemoryError

MODES = ("eager", "cuda_graph", "compile")
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuDNN / cuBLAS pick their kernels)

log = logging.getLogger(__name__)


class CaptureError(RuntimeError):
    """Recording a CUDA graph failed (the mode cannot run here; eager may)."""


class CompileError(RuntimeError):
    """torch.compile could not compile (or run its first call for) an input size."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass(frozen=True)
class CallKey:
    """What a captured graph or compiled specialisation depends on."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    pad_input: bool
    flip_aug: bool
    head: str | None
    per_image: bool


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_input: torch.Tensor
    result: InferenceResult


def default_mode(device: torch.device) -> str:
    return "cuda_graph" if device.type == "cuda" else "eager"


class DepthRunner:
    """Runs ``model.predict`` on device-resident RGB in one execution mode.

    Args:
        model: a loaded ZoeDepth already on ``device`` (and in its precision).
        device: where inputs and the model live.
        mode: "eager" (plain PyTorch), "cuda_graph" (capture the eager kernels once per input size, then replay)
            or "compile" (torch.compile with inductor; on CUDA its kernels are captured in a CUDA graph too).
        channels_last: store convolution weights channels-last (CUDA; lets cuDNN skip layout transposes).
        cudnn_benchmark: let cuDNN autotune its kernels per input size (CUDA); off after autotuning has failed.
    """

    def __init__(
        self,
        model: ZoeDepth,
        device: torch.device,
        mode: str = "eager",
        channels_last: bool = False,
        cudnn_benchmark: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown execution mode {mode!r}; use one of {', '.join(MODES)}")
        if mode == "cuda_graph" and device.type != "cuda":
            raise ValueError(f"execution mode 'cuda_graph' needs a CUDA device, not {device}")
        self.model = model
        self.device = device
        self.mode = mode
        self.channels_last = channels_last and device.type == "cuda"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = cudnn_benchmark  # sizes are fixed per camera: let cuDNN pick per size
        self._graphs: dict[CallKey, _Captured] = {}
        self._compiled_keys: set[CallKey] = set()  # compile on the CPU: sizes whose first call succeeded
        self.last_key: CallKey | None = None
        self._compiled = None
        if mode == "compile":
            self._compiled = torch.compile(self._predict_tensors, dynamic=False, fullgraph=True)

    @property
    def precision(self) -> str:
        return precision_of(self.model)

    @property
    def uses_graphs(self) -> bool:
        return self.device.type == "cuda" and self.mode in ("cuda_graph", "compile")

    def describe(self) -> str:
        return f"{self.precision} {self.mode}" + (" channels-last" if self.channels_last else "")

    def _predict_tensors(
        self,
        x: torch.Tensor,
        pad_input: bool,
        flip_aug: bool,
        head: str | None,
        per_image: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        r = self.model.predict(
            x, pad_input=pad_input, flip_aug=flip_aug, head=head, route_on_device=True, per_image=per_image
        )
        return r.depth, r.head_indices, r.head_logits

    def _result(self, tensors, head: str | None) -> InferenceResult:
        depth, indices, logits = tensors
        return InferenceResult(depth, indices, tuple(logits), head is not None, self.model.heads)

    @torch.inference_mode()
    def __call__(
        self,
        rgb: torch.Tensor,
        pad_input: bool = True,
        flip_aug: bool = False,
        head: str | None = None,
        per_image: bool = False,
    ) -> InferenceResult:
        """Depth for a (B, 3, H, W) float RGB batch in [0, 1] on ``device``; ``per_image``: see ZoeDepth.forward.

        In the graph modes the returned tensors are the graph's static outputs: read them (or enqueue their
        copies) before the next call with the same key. Graphs are captured per key, so per batch size too.
        """
        if self.mode == "eager":
            return self.model.predict(rgb, pad_input=pad_input, flip_aug=flip_aug, head=head, per_image=per_image)
        # Bad inputs raise their ValueError here, before anything is compiled or captured, so that they are
        # never mistaken for a CaptureError / CompileError (a mode that cannot work).
        self.model._check_input(rgb)
        self.model.resolve_head(head)
        key = self.last_key = CallKey(tuple(rgb.shape), rgb.dtype, pad_input, flip_aug, head, per_image)
        args = (rgb, pad_input, flip_aug, head, per_image)
        if not self.uses_graphs:  # compile on the CPU
            if key in self._compiled_keys:
                return self._result(self._compiled(*args), head)
            with self._compiling(key):
                result = self._result(self._compiled(*args), head)
            self._compiled_keys.add(key)
            return result
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(key, rgb)
        captured.static_input.copy_(rgb, non_blocking=True)
        captured.graph.replay()
        return captured.result

    @contextmanager
    def _compiling(self, key: CallKey) -> Iterator[None]:
        """Failures of torch.compile's first call for ``key`` become CompileError (out-of-memory stays itself)."""
        try:
            yield
        except (OutOfMemoryError, ValueError, TypeError):
            raise
        except Exception as e:
            raise CompileError(f"torch.compile failed for {key.shape}: {_one_line(e)}") from e

    def drop_graphs(self, keep: CallKey | None = None) -> int:
        """Forget captured graphs (their memory pools go back to the allocator), except ``keep``; how many."""
        dropped = [k for k in self._graphs if k != keep]
        for k in dropped:
            del self._graphs[k]
        return len(dropped)

    def _capture(self, key: CallKey, example: torch.Tensor) -> _Captured:
        """Warm up on a side stream, then record one call into a CUDA graph (the documented recipe).

        Only a failure of the recording itself is a CaptureError; the eager warm-up calls fail as themselves
        (under compile, as CompileError: that is where it compiles).
        """
        fn = self._compiled or self._predict_tensors
        static_input = example.clone()
        if self._compiled is not None:
            with self._compiling(key):
                self._warm_up_for_capture(fn, static_input, key)
        else:
            self._warm_up_for_capture(fn, static_input, key)
        try:
            graph, outputs = self._record(fn, static_input, key)
        except OutOfMemoryError:
            raise
        except Exception as e:
            raise CaptureError(f"CUDA-graph capture failed for {key.shape}: {_one_line(e)}") from e
        log.info("captured a CUDA graph for %s (%s)", key, self.describe())
        return _Captured(graph, static_input, self._result(outputs, key.head))

    def _warm_up_for_capture(self, fn, static_input: torch.Tensor, key: CallKey) -> None:
        """Eager calls on a side stream, so that cuDNN / cuBLAS (and inductor) settle before the recording."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                fn(static_input, key.pad_input, key.flip_aug, key.head, key.per_image)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _record(self, fn, static_input: torch.Tensor, key: CallKey):
        """One call recorded into a CUDA graph: (graph, its static outputs)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fn(static_input, key.pad_input, key.flip_aug, key.head, key.per_image)
        return graph, outputs

    def warmup(
        self,
        height: int,
        width: int,
        pad_input: bool = True,
        flip_aug: bool = False,
        head: str | None = None,
        calls: int = 2,
        batch: int = 1,
        per_image: bool = False,
    ) -> None:
        """Run (and in the graph modes capture) the model for one camera size and batch size before frames arrive."""
        call_on_ramp(self, self.device, height, width, batch, calls, pad_input, flip_aug, head, per_image)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def call_on_ramp(runner, device: torch.device, height: int, width: int, batch: int, calls: int, *settings) -> None:
    """``calls`` calls of ``runner(rgb, *settings)`` on a deterministic ramp image: what a warm-up runs."""
    rgb = torch.linspace(0, 1, batch * height * width * 3, device=device).reshape(batch, 3, height, width)
    for _ in range(calls):
        runner(rgb, *settings)


def seconds_per_call(runner, image: torch.Tensor, pad_input: bool, flip_aug: bool, calls: int = 3) -> float:
    """Median wall time of ``calls`` warm calls of a runner on one image (after one untimed call)."""
    times = []
    for i in range(calls + 1):
        t0 = time.perf_counter()
        runner(image, pad_input=pad_input, flip_aug=flip_aug).depth.sum().item()  # waits for the device
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
