"""``OrtRunner``: the engine's runner for the onnxruntime backend, a drop-in for ``runtime.DepthRunner``.

Each (size, batch, pad, flip, routing) is its own static graph: exported on first use into the cache (or found
there), opened in onnxruntime on the rung's provider, and kept. On CUDA a frame's tensors are bound to the session
where they lie (I/O binding on torch's stream): no host round trip; the pipeline's pre- and post-processing stay
in torch. Failures are ``ExportError`` / ``SessionError`` (see ``failures.classify``), so the engine can step down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...model import InferenceResult, ZoeDepth
from ...model.router import HEADS
from ..runtime import call_on_ramp
from .cache import GraphKey, graph_path
from .export import export_onnx
from .graph import ROUTINGS, ExportSpec, output_names
from .session import ORT_MODES, SessionSettings, import_onnxruntime, open_session

HEAD_TO_ROUTING = {head: routing for routing, head in ROUTINGS.items()}

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    spec: ExportSpec
    session: object  # onnxruntime.InferenceSession
    outputs: tuple[str, ...]
    stream: int = 0  # the CUDA stream the session computes on (torch's when it was opened)


class OrtRunner:
    """Runs exported graphs of ``model`` in onnxruntime; the call signature of ``DepthRunner``.

    Args:
        model: the fp32 model (exports are made from it; a reduced precision converts a copy at export time).
        device: where frames lie; the provider must be on it (CPU provider for a CPU device).
        mode: an ``ORT_MODES`` key. precision: the graph's precision ("fp32", "fp16", "bf16").
        weights_id: the weights' SHA-256 (a callable, so that hashing happens only when a graph is needed).
    """

    uses_graphs = False

    def __init__(
        self,
        model: ZoeDepth,
        device: torch.device,
        *,
        mode: str,
        precision: str = "fp32",
        weights_id: Callable[[], str],
        settings: SessionSettings | None = None,
        info: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in ORT_MODES:
            raise ValueError(f"unknown onnxruntime mode {mode!r}; use one of {', '.join(ORT_MODES)}")
        if (mode == "ort_cpu") != (device.type == "cpu"):
            raise ValueError(f"{mode} cannot serve frames on {device}")
        import_onnxruntime()  # SessionError now, at construction, when it is missing
        self.model = model
        self.device = device
        self.mode = mode
        self._precision = precision
        self._weights_id = weights_id
        self.settings = settings or SessionSettings()
        self._info = info or log.info
        self._graphs: dict[ExportSpec, _Graph] = {}
        self._lock = threading.Lock()
        self.last_key: ExportSpec | None = None

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def channels_last(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self._precision} {self.mode}"

    def spec_for(self, rgb_shape, pad_input: bool, flip_aug: bool, head: str | None) -> ExportSpec:
        batch, _, height, width = rgb_shape
        return ExportSpec(height, width, batch, pad_input, flip_aug, HEAD_TO_ROUTING[head], self._precision)

    def graph_file(self, spec: ExportSpec):
        """The cached ONNX file for ``spec``, exported now if it is not there yet."""
        key = GraphKey.of(self.model.config.variant, self._weights_id(), spec)
        path = graph_path(key, self.settings.cache_root)
        if not path.exists():
            self._info(f"exporting the ONNX graph for {spec.tag()} (first use; cached as {path})")
            result = export_onnx(self.model, spec, path, key.weights_sha256)
            self._info(f"exported {path.name} in {result.seconds:.0f} s ({result.bytes / 1e6:.0f} MB)")
        return path

    def _graph(self, spec: ExportSpec) -> _Graph:
        with self._lock:
            graph = self._graphs.get(spec)
            if graph is None:
                path = self.graph_file(spec)
                session = open_session(path, self.mode, self.device, self._precision, self.settings, self._info)
                stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
                graph = self._graphs[spec] = _Graph(spec, session, output_names(self.model), stream)
            return graph

    @torch.inference_mode()
    def __call__(
        self,
        rgb: torch.Tensor,
        pad_input: bool = True,
        flip_aug: bool = False,
        head: str | None = None,
        per_image: bool = False,
    ) -> InferenceResult:
        """As ``DepthRunner.__call__``. The graphs route each image on its own: a batch of NK images with
        ``per_image=False`` (one shared decision, upstream's batch routing) is refused rather than answered
        differently."""
        model = self.model
        model._check_input(rgb)
        head = model.resolve_head(head)
        if not per_image and head is None and rgb.shape[0] > 1 and model.config.router is not None:
            raise ValueError("the onnxruntime backend routes each image of a batch on its own (per_image=True)")
        spec = self.last_key = self.spec_for(tuple(rgb.shape), pad_input, flip_aug, head)
        graph = self._graph(spec)
        x = rgb.to(self.device, torch.float32).contiguous()
        outputs = self._run_cuda(graph, x) if self.device.type == "cuda" else self._run_cpu(graph, x)
        depth, heads = outputs[0], outputs[1]
        logits = tuple(outputs[2].unbind(0)) if len(outputs) > 2 else ()
        if model.config.router is None:
            heads = torch.zeros_like(heads)  # an index into model.heads, as the torch runner reports
        names = HEADS if model.config.router is not None else model.heads
        return InferenceResult(depth, heads, logits, head is not None, names)

    def _run_cpu(self, graph: _Graph, x: torch.Tensor) -> list[torch.Tensor]:
        results = graph.session.run(list(graph.outputs), {"image": x.numpy()})
        return [torch.from_numpy(np.ascontiguousarray(r)) for r in results]

    def _run_cuda(self, graph: _Graph, x: torch.Tensor) -> list[torch.Tensor]:
        """I/O binding: the session reads ``x`` and writes torch tensors in place, on the GPU."""
        s = graph.spec
        index = self.device.index or 0
        shapes = {
            "depth": ((s.batch, 1, s.height, s.width), torch.float32, np.float32),
            "head": ((s.passes, s.batch), torch.int64, np.int64),
            "head_logits": ((s.passes, s.batch, 2), torch.float32, np.float32),
        }
        binding = graph.session.io_binding()
        binding.bind_input("image", "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        outputs = []
        for name in graph.outputs:
            shape, dtype, np_dtype = shapes[name]
            out = torch.empty(shape, dtype=dtype, device=self.device)
            binding.bind_output(name, "cuda", index, np_dtype, shape, out.data_ptr())
            outputs.append(out)
        current = torch.cuda.current_stream(self.device)
        if current.cuda_stream != graph.stream:  # the session runs on another stream than the one that wrote x
            current.synchronize()
        graph.session.run_with_iobinding(binding)
        return outputs

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
        """Export (first time), open the session (TensorRT: build or load the engine) and run it once or more."""
        call_on_ramp(self, self.device, height, width, batch, calls, pad_input, flip_aug, head, per_image)

    def drop_graphs(self, keep: ExportSpec | None = None) -> int:
        """Close the sessions (their device memory goes back), except ``keep``'s; how many."""
        with self._lock:
            dropped = [k for k in self._graphs if k != keep]
            for k in dropped:
                del self._graphs[k]
        return len(dropped)
