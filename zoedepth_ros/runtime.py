"""How a loaded ZoeDepth is executed: eager, replayed CUDA graphs, or torch.compile, per input size.

``DepthRunner`` is what the pipeline and the benchmark call. In the graph modes the model routes on the device
(both NK heads run; the router's choice is selected without a host sync), so a whole ``predict`` - reflect pad,
resize, normalise, encoder, decoder, heads, bicubic restore, flip averaging - is one captured CUDA graph,
recorded once per (input shape, pad, flip, forced head) at warm-up and replayed for every frame. Precision is set
on the model beforehand (``model.set_precision``); the runner only executes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .model import InferenceResult, ZoeDepth, precision_of

MODES = ("eager", "cuda_graph", "compile")
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuDNN / cuBLAS pick their kernels)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallKey:
    """What a captured graph or compiled specialisation depends on."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    pad_input: bool
    flip_aug: bool
    domain: str | None


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
    """

    def __init__(self, model: ZoeDepth, device: torch.device, mode: str = "eager", channels_last: bool = False,
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
            torch.backends.cudnn.benchmark = True  # input sizes are fixed per camera: let cuDNN pick per size
        self._graphs: dict[CallKey, _Captured] = {}
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

    def _predict_tensors(self, x: torch.Tensor, pad_input: bool, flip_aug: bool, domain: str | None,
                         ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        r = self.model.predict(x, pad_input=pad_input, flip_aug=flip_aug, domain=domain, route_on_device=True)
        return r.depth, r.domain_indices, r.domain_logits

    def _result(self, tensors, domain: str | None) -> InferenceResult:
        depth, indices, logits = tensors
        return InferenceResult(depth, indices, tuple(logits), domain is not None, self.model.domains)

    @torch.inference_mode()
    def __call__(self, rgb: torch.Tensor, pad_input: bool = True, flip_aug: bool = False,
                 domain: str | None = None) -> InferenceResult:
        """Depth for a (B, 3, H, W) float RGB batch in [0, 1] on ``device``.

        In the graph modes the returned tensors are the graph's static outputs: read them (or enqueue their
        copies) before the next call with the same key.
        """
        if self.mode == "eager":
            return self.model.predict(rgb, pad_input=pad_input, flip_aug=flip_aug, domain=domain)
        if not self.uses_graphs:  # compile on the CPU
            return self._result(self._compiled(rgb, pad_input, flip_aug, domain), domain)
        key = CallKey(tuple(rgb.shape), rgb.dtype, pad_input, flip_aug, domain)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(key, rgb)
        captured.static_input.copy_(rgb, non_blocking=True)
        captured.graph.replay()
        return captured.result

    def _capture(self, key: CallKey, example: torch.Tensor) -> _Captured:
        """Warm up on a side stream, then record one call into a CUDA graph (the documented recipe)."""
        fn = self._compiled or self._predict_tensors
        static_input = example.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                fn(static_input, key.pad_input, key.flip_aug, key.domain)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fn(static_input, key.pad_input, key.flip_aug, key.domain)
        log.info("captured a CUDA graph for %s (%s)", key, self.describe())
        return _Captured(graph, static_input, self._result(outputs, key.domain))

    def warmup(self, height: int, width: int, pad_input: bool = True, flip_aug: bool = False,
               domain: str | None = None, calls: int = 2) -> None:
        """Run (and in the graph modes capture) the model for one camera size before frames arrive."""
        rgb = torch.linspace(0, 1, height * width * 3, device=self.device).reshape(1, 3, height, width)
        for _ in range(calls):
            self(rgb, pad_input=pad_input, flip_aug=flip_aug, domain=domain)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
