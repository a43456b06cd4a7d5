"""Camera frames in, depth images + clouds + routing out: the node's and the offline tools' work, without ROS.

Data flows one way: each raw pixel buffer is uploaded once (``transfer``), converted to RGB on the device, the
frames of a batch go through the model in one forward, and each frame's depth is masked, back-projected and
packed on the device; each output is copied to the host once. On CUDA ``submit_batch`` returns as soon as the work
is queued, and ``InFlight.results`` waits for the copies, so publishing one batch overlaps computing the next.

A batch holds frames that share a ``batch_key`` (image size and the model settings); each image gets the head its
own router picks, so a frame's outputs do not depend on what it was batched with. A batch of one is the
official single-image path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..model import InferenceResult, ZoeDepth
from ..model.router import ROUTING_TO_HEAD
from .cloud import POINT_STEP_XYZ, POINT_STEP_XYZRGB, depth_to_cloud
from .colormap import colorize_depth
from .encodings import ImageError, check_size, encoding_info, to_rgb, to_rgb8
from .intrinsics import CameraInfoError, Intrinsics
from .runtime import DepthRunner
from .transfer import HostBuffers, PinnedMemoryError, Transfers, host_payload, pinned_empty

__all__ = [
    "HEAD_TO_DOMAIN",
    "PER_IMAGE",
    "ROUTING_TO_HEAD",
    "DepthFrame",
    "DepthPipeline",
    "FrameError",
    "FrameInput",
    "InFlight",
    "PinnedMemoryError",
    "Settings",
    "batch_key",
    "check_frame",
    "pinned_empty",
]

HEAD_TO_DOMAIN = {"nyu": "indoor", "kitti": "outdoor"}
PER_IMAGE = True  # the frames of a batch come from independent cameras: each image is routed on its own


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


@dataclass(frozen=True)
class FrameInput:
    """One decoded camera frame and what to compute for it."""

    raw: np.ndarray  # (H, W, C) or (H, W) as decoded from the message
    encoding: str  # ROS encoding of ``raw``
    intrinsics: Intrinsics  # of ``raw``'s size
    settings: Settings


class FrameError(ValueError):
    """Frame ``index`` of a batch cannot be computed (bad image or intrinsics); the others can."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def batch_key(frame: FrameInput) -> tuple:
    """Frames with equal keys may share one forward: image size and the settings the model itself reads."""
    s = frame.settings
    return frame.raw.shape[0], frame.raw.shape[1], s.pad_input, s.flip_aug, s.routing


def check_frame(frame: FrameInput, index: int = 0) -> None:
    """Cheap host-side checks, so that one bad frame is turned away before it can fail a whole batch."""
    raw = frame.raw
    try:
        if not isinstance(raw, np.ndarray) or raw.ndim not in (2, 3):
            shape = getattr(raw, "shape", type(raw).__name__)
            raise ImageError(f"expected an (H, W, C) image array, got {shape}")
        info = encoding_info(frame.encoding)
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        if channels != info.channels:
            raise ImageError(f"{info.name} needs {info.channels} channel(s), the image has {channels}")
        check_size(raw.shape[1], raw.shape[0])
        frame.intrinsics.check_image(raw.shape[1], raw.shape[0])
    except (ImageError, CameraInfoError) as e:
        raise FrameError(index, str(e)) from None
    if frame.settings.routing not in ROUTING_TO_HEAD:
        raise FrameError(index, f"unknown routing {frame.settings.routing!r}; use one of {', '.join(ROUTING_TO_HEAD)}")


@dataclass
class InFlight:
    """A submitted batch: ``results()`` waits for its copies and returns one host-side frame per input (once)."""

    transfers: Transfers
    buffers: HostBuffers | None
    outputs: dict[str, torch.Tensor]  # host tensors (pinned on CUDA), filled when the copies land
    metas: list[dict]  # per frame
    timings_ms: dict[str, float]
    meta: dict = field(default_factory=dict)  # the caller's bookkeeping (the engine's sequence numbers)
    _frames: list[DepthFrame] | None = None

    def __len__(self) -> int:
        return len(self.metas)

    def results(self) -> list[DepthFrame]:
        if self._frames is not None:
            return self._frames
        t0 = time.perf_counter()
        try:
            self.transfers.wait(self.buffers)
            frames = host_frames(self.outputs, self.metas)
        finally:
            self.transfers.release(self.buffers)
            self.buffers = None
        wait = 1e3 * (time.perf_counter() - t0)
        for frame in frames:
            frame.timings_ms.update(self.timings_ms, wait=wait)
        self._frames = frames
        return frames

    def result(self) -> DepthFrame:
        """The one frame of a batch of one."""
        frames = self.results()
        if len(frames) != 1:
            raise ValueError(f"result() is for a batch of one; this batch has {len(frames)} frames: use results()")
        return frames[0]


class DepthPipeline:
    """Runs a loaded ZoeDepth on raw camera buffers, a batch at a time.

    Args:
        runner: a ``DepthRunner`` (or a bare ``ZoeDepth``, run eagerly).
        device: where the model runs.
        pinned: stage through pinned host buffers (and, on CUDA, copy on a copy stream); default: on CUDA only.
            Without them every copy is synchronous and ``submit_batch`` returns finished frames.
    """

    def __init__(self, runner: DepthRunner | ZoeDepth, device: torch.device, pinned: bool | None = None) -> None:
        if isinstance(runner, ZoeDepth):
            runner = DepthRunner(runner, device)
        self.runner = runner
        self.device = device
        self.cuda = device.type == "cuda"
        self.transfers = Transfers(device, pinned)
        self._cloud_buffers: dict[int, torch.Tensor] = {}  # CPU, per batch position: a fresh 10 MB costs page faults

    @property
    def pinned(self) -> bool:
        return self.transfers.pinned

    def check_pinned(self) -> None:
        """Raise PinnedMemoryError now, at start-up, where pinned memory cannot be had at all."""
        self.transfers.check_pinned()

    @property
    def model(self) -> ZoeDepth:
        return self.runner.model

    def run(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> DepthFrame:
        """Depth (and cloud) for one raw image whose size ``intrinsics`` describes; waits for it."""
        return self.submit(raw, encoding, intrinsics, settings).result()

    def submit(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> InFlight:
        """``submit_batch`` of one frame."""
        return self.submit_batch([FrameInput(raw, encoding, intrinsics, settings)])

    def run_batch(self, frames: Sequence[FrameInput]) -> list[DepthFrame]:
        return self.submit_batch(frames).results()

    @torch.inference_mode()
    def submit_batch(self, frames: Sequence[FrameInput]) -> InFlight:
        """Queue one forward for ``frames`` (all with one ``batch_key``); on CUDA this returns before the device
        has finished. A bad frame raises FrameError naming its index, before any device work.

        At most ``transfer.IN_FLIGHT`` batches may be awaiting ``results()``; a further submit waits for one.
        """
        if not frames:
            raise ValueError("an empty batch")
        for i, frame in enumerate(frames):
            check_frame(frame, i)
        keys = {batch_key(f) for f in frames}
        if len(keys) > 1:
            raise ValueError(f"frames of one batch must share image size and model settings, got {sorted(keys)}")
        buffers = self.transfers.acquire()
        try:
            return self._submit(frames, buffers)
        except BaseException:
            self.transfers.release(buffers)
            raise

    def _submit(self, frames: Sequence[FrameInput], buffers: HostBuffers | None) -> InFlight:
        t0 = time.perf_counter()
        pixels = [self.transfers.upload(f.raw, buffers, f"input{i}") for i, f in enumerate(frames)]
        parts = [to_rgb(p, f.encoding) for p, f in zip(pixels, frames, strict=True)]
        rgb = parts[0] if len(parts) == 1 else torch.cat(parts)
        t1 = time.perf_counter()
        first = frames[0].settings
        result = self.runner(
            rgb,
            pad_input=first.pad_input,
            flip_aug=first.flip_aug,
            head=ROUTING_TO_HEAD[first.routing],
            per_image=PER_IMAGE,
        )
        t2 = time.perf_counter()
        device_out = self._routing_tensors(result)
        metas = []
        for i, (frame, p) in enumerate(zip(frames, pixels, strict=True)):
            out, meta = self._frame_outputs(i, result.depth[i, 0], frame, p)
            meta["head_names"] = result.head_names
            meta["forced"] = result.forced
            device_out.update({f"{name}{i}": t for name, t in out.items()})
            metas.append(meta)
        outputs = self.transfers.to_host(device_out, buffers)
        t3 = time.perf_counter()
        timings = {"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1), "postprocess": 1e3 * (t3 - t2)}
        inflight = InFlight(self.transfers, buffers, outputs, metas, timings)
        if buffers is None:
            inflight.results()  # already computed; take the bytes before the next batch reuses the CPU buffers
        return inflight

    def _frame_outputs(
        self, index: int, depth: torch.Tensor, frame: FrameInput, pixels: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """One frame's depth (scaled, masked), cloud and colour map on the device, and what describes them."""
        settings, intrinsics = frame.settings, frame.intrinsics
        height, width = output_size(depth.shape[0], depth.shape[1], settings.output_scale)
        if (height, width) != tuple(depth.shape):
            depth = F.interpolate(depth[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            intrinsics = intrinsics.scaled(width, height)
        invalid = ~torch.isfinite(depth) | (depth < settings.min_depth) | (depth > settings.max_depth)
        depth = depth.masked_fill(invalid, float("nan")).contiguous()
        out = {"depth": depth}
        meta = {"index": index, "height": height, "width": width, "intrinsics": intrinsics}
        if settings.points:
            colors = None
            if settings.color:
                colors = to_rgb8(pixels, frame.encoding)
                if colors.shape[:2] != (height, width):
                    colors = (
                        F.interpolate(colors.permute(2, 0, 1)[None].float(), size=(height, width), mode="nearest")[0]
                        .permute(1, 2, 0)
                        .to(torch.uint8)
                    )
            rows, cols = -(-height // settings.decimation), -(-width // settings.decimation)
            shape = (rows, cols * (POINT_STEP_XYZRGB if colors is not None else POINT_STEP_XYZ))
            buffer = self._cloud_buffers.get(index)
            if self.cuda or buffer is None or tuple(buffer.shape) != shape:
                buffer = None  # CPU only: the previous batch's bytes were already copied out
            packed = depth_to_cloud(depth, intrinsics, colors, settings.decimation, out=buffer)
            if not self.cuda:
                self._cloud_buffers[index] = packed
            out["cloud"] = packed
            meta.update(cloud_height=rows, cloud_width=cols)
        if settings.colormap:
            out["colormap"] = colorize_depth(depth, settings.min_depth, settings.max_depth)
        return out, meta

    @staticmethod
    def _routing_tensors(result: InferenceResult) -> dict[str, torch.Tensor]:
        """The first pass's head and router logits of every image."""
        out = {"head_index": result.head_indices[0].clone()}  # graph outputs are overwritten by the next replay
        if result.head_logits:
            out["logits"] = result.head_logits[0].float().clone()
        return out


def host_frames(outputs: dict[str, torch.Tensor], metas: list[dict]) -> list[DepthFrame]:
    """The host-side frames of a batch whose copies have landed in ``outputs``."""
    frames = []
    for meta in metas:
        i = meta["index"]
        head = meta["head_names"][int(outputs["head_index"][i])]
        logits: list[float] = []
        probability = math.nan
        if "logits" in outputs:
            row = outputs["logits"][i]
            logits = [float(v) for v in row]
            probability = float(torch.softmax(row, dim=-1)[0 if head == "nyu" else 1])
        frame = DepthFrame(
            host_payload(outputs[f"depth{i}"]),
            meta["height"],
            meta["width"],
            meta["intrinsics"],
            head=head,
            domain=HEAD_TO_DOMAIN[head],
            probability=probability,
            logits=logits,
            forced=meta["forced"],
        )
        if f"cloud{i}" in outputs:
            frame.cloud = host_payload(outputs[f"cloud{i}"])
            frame.cloud_height, frame.cloud_width = meta["cloud_height"], meta["cloud_width"]
        if f"colormap{i}" in outputs:
            frame.colormap = host_payload(outputs[f"colormap{i}"])
        frames.append(frame)
    return frames
