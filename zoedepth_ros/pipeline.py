"""One camera frame in, depth image + cloud + routing out: the node's per-frame work, without ROS.

Data flows one way: the raw pixel buffer is staged in pinned memory and uploaded once, converted to RGB on the
device, run through the model, masked, back-projected and packed on the device; each output is copied to the
host once. On CUDA those copies run on a copy stream into pinned buffers: ``submit`` returns as soon as the work
is queued, and ``InFlight.result`` waits for the copies, so publishing one frame overlaps computing the next.

Pinned memory can be unavailable (locked-memory limits, some containers and drivers): every pinned allocation
goes through ``pinned_empty``, which raises ``PinnedMemoryError``, and ``DepthPipeline(..., pinned=False)`` runs
on CUDA without pinned buffers or the copy stream: synchronous uploads and ``.cpu()`` copies, as on the CPU.
"""

from __future__ import annotations

import math
import queue
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .cloud import POINT_STEP_XYZ, POINT_STEP_XYZRGB, depth_to_cloud
from .colormap import colorize_depth
from .encodings import array_to_tensor, to_rgb, to_rgb8
from .intrinsics import Intrinsics
from .model import InferenceResult, ZoeDepth
from .runtime import DepthRunner

ROUTING_TO_DOMAIN = {"auto": None, "indoor": "nyu", "outdoor": "kitti"}
HEAD_TO_DOMAIN = {"nyu": "indoor", "kitti": "outdoor"}
IN_FLIGHT = 2  # frames whose host buffers may be in use at once: one being published, one being computed
PINNED_PROBE_BYTES = 1 << 20  # ``check_pinned``: a start-up allocation that fails where pinned memory is unusable


class PinnedMemoryError(RuntimeError):
    """A pinned (page-locked) host allocation failed; the pipeline can run without pinned memory instead."""


def pinned_empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised pinned host tensor; every failure is one PinnedMemoryError naming what was asked for."""
    try:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise PinnedMemoryError(
            f"pinned allocation of {tuple(shape)} {dtype} failed: {type(e).__name__}: {lines[0] if lines else ''}"
        ) from e


@dataclass(frozen=True)
class Settings:
    """Per-frame knobs (a snapshot of the run-time parameters)."""

    routing: str = "auto"
    pad_input: bool = True
    flip_aug: bool = False
    min_depth: float = 0.001
    max_depth: float = 80.0
    output_scale: float = 1.0
    points: bool = True
    color: bool = False
    decimation: int = 1
    colormap: bool = False


@dataclass
class DepthFrame:
    """Host-side results, ready to be put into messages."""

    depth: bytes  # float32 (height, width), NaN where invalid
    height: int
    width: int
    intrinsics: Intrinsics  # of the depth image
    head: str  # metric head of the (first) pass
    domain: str  # "indoor" / "outdoor"
    probability: float  # router probability of the head; NaN for single-head models
    logits: list[float]  # router logits of the (first) pass; empty for single-head models
    forced: bool
    cloud: bytes | None = None
    cloud_height: int = 0
    cloud_width: int = 0
    colormap: bytes | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def host_payload(tensor: torch.Tensor) -> bytes:
    """The bytes of a host tensor (one memcpy out of the pinned landing buffer, which the next frame reuses)."""
    return tensor.numpy().tobytes()


class _Slot:
    """Pinned host memory for one frame in flight: the staged input and each output's landing buffer."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.done: torch.cuda.Event | None = None

    def host(self, name: str, like: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self.buffers[name] = pinned_empty(like.shape, like.dtype)
        return buf


@dataclass
class InFlight:
    """A submitted frame: ``result()`` waits for its copies and returns the host-side frame (once)."""

    pipeline: DepthPipeline
    slot: _Slot | None
    outputs: dict[str, torch.Tensor]  # host tensors (pinned on CUDA), filled when ``done`` fires
    meta: dict
    _frame: DepthFrame | None = None

    def result(self) -> DepthFrame:
        if self._frame is not None:
            return self._frame
        t0 = time.perf_counter()
        try:
            if self.slot is not None and self.slot.done is not None:
                self.slot.done.synchronize()
            frame = self.pipeline._host_frame(self.outputs, self.meta)
        finally:
            if self.slot is not None:
                self.pipeline._free.put(self.slot)
                self.slot = None
        frame.timings_ms.update(self.meta["timings_ms"], wait=1e3 * (time.perf_counter() - t0))
        self._frame = frame
        return frame


class DepthPipeline:
    """Runs a loaded ZoeDepth on raw camera buffers.

    Args:
        runner: a ``DepthRunner`` (or a bare ``ZoeDepth``, run eagerly).
        device: where the model runs.
        pinned: stage through pinned host buffers (and, on CUDA, copy on a copy stream); default: on CUDA only.
            Without them every copy is synchronous and ``submit`` returns a finished frame.
    """

    def __init__(self, runner: DepthRunner | ZoeDepth, device: torch.device, pinned: bool | None = None) -> None:
        if isinstance(runner, ZoeDepth):
            runner = DepthRunner(runner, device)
        self.runner = runner
        self.device = device
        self.cuda = device.type == "cuda"
        self.pinned = self.cuda if pinned is None else pinned
        self._cloud_buffer: torch.Tensor | None = None  # CPU: reused; a fresh 10 MB buffer costs page faults
        self._free: queue.Queue[_Slot] = queue.Queue()
        for _ in range(IN_FLIGHT if self.pinned else 0):
            self._free.put(_Slot())
        self._copy_stream = torch.cuda.Stream(device) if self.pinned and self.cuda else None

    def check_pinned(self) -> None:
        """Raise PinnedMemoryError now, at start-up, where pinned memory cannot be had at all."""
        if self.pinned:
            pinned_empty((PINNED_PROBE_BYTES,), torch.uint8)  # freed at once (into the host allocator's cache)

    @property
    def model(self) -> ZoeDepth:
        return self.runner.model

    def upload(self, raw: np.ndarray, slot: _Slot | None) -> torch.Tensor:
        """The raw image on the device: one copy, staged in pinned memory on CUDA so it can be asynchronous."""
        pixels = array_to_tensor(raw)
        if slot is None:
            return pixels.to(self.device)
        staged = slot.host("input", pixels)
        staged.copy_(pixels)
        return staged.to(self.device, non_blocking=True)

    def run(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> DepthFrame:
        """Depth (and cloud) for one (H, W, C) raw image whose geometry is ``intrinsics``; waits for it."""
        return self.submit(raw, encoding, intrinsics, settings).result()

    @torch.inference_mode()
    def submit(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> InFlight:
        """Queue one frame's work; on CUDA this returns before the device has finished it.

        At most ``IN_FLIGHT`` frames may be awaiting ``result()``; a further submit waits for one of them.
        """
        slot = self._free.get() if self.pinned else None
        try:
            return self._submit(raw, encoding, intrinsics, settings, slot)
        except BaseException:
            if slot is not None:
                self._free.put(slot)
            raise

    def _submit(self, raw, encoding, intrinsics, settings, slot) -> InFlight:
        t0 = time.perf_counter()
        pixels = self.upload(raw, slot)
        rgb = to_rgb(pixels, encoding)
        t1 = time.perf_counter()
        result = self.runner(
            rgb, pad_input=settings.pad_input, flip_aug=settings.flip_aug, domain=ROUTING_TO_DOMAIN[settings.routing]
        )
        t2 = time.perf_counter()
        depth = result.depth[0, 0]
        height, width = output_size(depth.shape[0], depth.shape[1], settings.output_scale)
        out_intrinsics = intrinsics
        if (height, width) != tuple(depth.shape):
            depth = F.interpolate(depth[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            out_intrinsics = intrinsics.scaled(width, height)
        invalid = ~torch.isfinite(depth) | (depth < settings.min_depth) | (depth > settings.max_depth)
        depth = depth.masked_fill(invalid, float("nan")).contiguous()
        device_out = {"depth": depth, **self._routing_tensors(result)}
        meta = {
            "height": height,
            "width": width,
            "intrinsics": out_intrinsics,
            "forced": result.forced,
            "head_names": result.head_names,
        }
        if settings.points:
            colors = None
            if settings.color:
                colors = to_rgb8(pixels, encoding)
                if colors.shape[:2] != (height, width):
                    colors = (
                        F.interpolate(colors.permute(2, 0, 1)[None].float(), size=(height, width), mode="nearest")[0]
                        .permute(1, 2, 0)
                        .to(torch.uint8)
                    )
            rows, cols = -(-height // settings.decimation), -(-width // settings.decimation)
            shape = (rows, cols * (POINT_STEP_XYZRGB if colors is not None else POINT_STEP_XYZ))
            buffer = None
            if not self.cuda and self._cloud_buffer is not None and tuple(self._cloud_buffer.shape) == shape:
                buffer = self._cloud_buffer  # CPU only: the previous frame's bytes were already copied out
            packed = depth_to_cloud(depth, out_intrinsics, colors, settings.decimation, out=buffer)
            if not self.cuda:
                self._cloud_buffer = packed
            device_out["cloud"] = packed
            meta.update(cloud_height=rows, cloud_width=cols)
        if settings.colormap:
            device_out["colormap"] = colorize_depth(depth, settings.min_depth, settings.max_depth)
        outputs = self._to_host(device_out, slot)
        t3 = time.perf_counter()
        meta["timings_ms"] = {
            "preprocess": 1e3 * (t1 - t0),
            "inference": 1e3 * (t2 - t1),
            "postprocess": 1e3 * (t3 - t2),
        }
        inflight = InFlight(self, slot, outputs, meta)
        if slot is None:
            inflight.result()  # CPU: already computed; take the bytes before the next frame reuses the buffers
        return inflight

    def _to_host(self, device_out: dict[str, torch.Tensor], slot: _Slot | None) -> dict[str, torch.Tensor]:
        """One device-to-host copy per output; on CUDA queued on the copy stream into the slot's pinned buffers."""
        if slot is None:
            return {name: t.cpu() for name, t in device_out.items()}
        if self._copy_stream is None:  # pinned staging without a device (tests): plain synchronous copies
            outputs = {}
            for name, t in device_out.items():
                outputs[name] = slot.host(name, t)
                outputs[name].copy_(t)
            slot.done = None
            return outputs
        compute = torch.cuda.current_stream(self.device)
        self._copy_stream.wait_stream(compute)
        outputs = {}
        with torch.cuda.stream(self._copy_stream):
            for name, t in device_out.items():
                host = slot.host(name, t)
                host.copy_(t, non_blocking=True)
                t.record_stream(self._copy_stream)  # its memory is not reused before the copy is done
                outputs[name] = host
            slot.done = torch.cuda.Event()
            slot.done.record(self._copy_stream)
        return outputs

    @staticmethod
    def _routing_tensors(result: InferenceResult) -> dict[str, torch.Tensor]:
        """The first pass's head index and batch-summed logits (the batch decision; a batch of one here)."""
        out = {"head_index": result.domain_indices[:1].clone()}  # graph outputs are overwritten by the next replay
        if result.domain_logits:
            out["logits"] = result.domain_logits[0].float().sum(dim=0)
        return out

    @staticmethod
    def _host_frame(outputs: dict[str, torch.Tensor], meta: dict) -> DepthFrame:
        head = meta["head_names"][int(outputs["head_index"][0])]
        logits: list[float] = []
        probability = math.nan
        if "logits" in outputs:
            logits = [float(v) for v in outputs["logits"]]
            probability = float(torch.softmax(outputs["logits"], dim=-1)[0 if head == "nyu" else 1])
        frame = DepthFrame(
            host_payload(outputs["depth"]),
            meta["height"],
            meta["width"],
            meta["intrinsics"],
            head=head,
            domain=HEAD_TO_DOMAIN[head],
            probability=probability,
            logits=logits,
            forced=meta["forced"],
        )
        if "cloud" in outputs:
            frame.cloud = host_payload(outputs["cloud"])
            frame.cloud_height, frame.cloud_width = meta["cloud_height"], meta["cloud_width"]
        if "colormap" in outputs:
            frame.colormap = host_payload(outputs["colormap"])
        return frame
