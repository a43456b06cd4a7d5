"""One camera frame in, depth image + cloud + routing out: the node's per-frame work, without ROS.

Data flows one way: the raw pixel buffer is uploaded once, converted to RGB on the device, run through the
model, masked, back-projected and packed on the device; each output is copied to the host once, as bytes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .encodings import array_to_tensor, to_rgb, to_rgb8
from .geometry import POINT_STEP_XYZ, POINT_STEP_XYZRGB, Intrinsics, colorize_depth, depth_to_cloud
from .model import ZoeDepth

ROUTING_TO_DOMAIN = {"auto": None, "indoor": "nyu", "outdoor": "kitti"}
HEAD_TO_DOMAIN = {"nyu": "indoor", "kitti": "outdoor"}


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


class DepthPipeline:
    """Runs a loaded ZoeDepth on raw camera buffers."""

    def __init__(self, model: ZoeDepth, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._cloud_buffer: torch.Tensor | None = None  # reused: a fresh 10 MB buffer per frame costs page faults

    def upload(self, raw: np.ndarray) -> torch.Tensor:
        return array_to_tensor(raw).to(self.device, non_blocking=True)

    @torch.inference_mode()
    def run(self, raw: np.ndarray, encoding: str, intrinsics: Intrinsics, settings: Settings) -> DepthFrame:
        """Depth (and cloud) for one (H, W, C) raw image whose geometry is ``intrinsics``."""
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        pixels = self.upload(raw)
        rgb = to_rgb(pixels, encoding)
        t1 = time.perf_counter()
        result = self.model.predict(rgb, pad_input=settings.pad_input, flip_aug=settings.flip_aug,
                                    domain=ROUTING_TO_DOMAIN[settings.routing])
        depth = result.depth[0, 0]
        t2 = time.perf_counter()
        height, width = output_size(depth.shape[0], depth.shape[1], settings.output_scale)
        out_intrinsics = intrinsics
        if (height, width) != tuple(depth.shape):
            depth = F.interpolate(depth[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            out_intrinsics = intrinsics.scaled(width, height)
        invalid = ~torch.isfinite(depth) | (depth < settings.min_depth) | (depth > settings.max_depth)
        depth = depth.masked_fill(invalid, float("nan")).contiguous()
        frame = DepthFrame(depth.cpu().numpy().tobytes(), height, width, out_intrinsics, **self._routing(result))
        if settings.points:
            colors = None
            if settings.color:
                colors = to_rgb8(pixels, encoding)
                if colors.shape[:2] != (height, width):
                    colors = F.interpolate(colors.permute(2, 0, 1)[None].float(), size=(height, width),
                                           mode="nearest")[0].permute(1, 2, 0).to(torch.uint8)
            rows, cols = -(-height // settings.decimation), -(-width // settings.decimation)
            shape = (rows, cols * (POINT_STEP_XYZRGB if colors is not None else POINT_STEP_XYZ))
            buffer = self._cloud_buffer
            reuse = buffer is not None and tuple(buffer.shape) == shape and buffer.device == depth.device
            packed = depth_to_cloud(depth, out_intrinsics, colors, settings.decimation, out=buffer if reuse else None)
            self._cloud_buffer = packed
            frame.cloud = packed.cpu().numpy().tobytes()
            frame.cloud_height, frame.cloud_width = rows, cols
        if settings.colormap:
            frame.colormap = colorize_depth(depth, settings.min_depth, settings.max_depth).cpu().numpy().tobytes()
        t3 = time.perf_counter()
        times.update(preprocess=1e3 * (t1 - t0), inference=1e3 * (t2 - t1), postprocess=1e3 * (t3 - t2))
        frame.timings_ms = times
        return frame

    @staticmethod
    def _routing(result) -> dict:
        """DepthFrame's routing fields from the first pass (the batch decision; a batch of one here)."""
        head = result.domains[0]
        logits: list[float] = []
        probability = math.nan
        if result.domain_logits:
            summed = result.domain_logits[0].float().sum(dim=0)
            logits = [float(v) for v in summed]
            probability = float(torch.softmax(summed, dim=-1)[0 if head == "nyu" else 1])
        return {"head": head, "domain": HEAD_TO_DOMAIN[head], "probability": probability, "logits": logits,
                "forced": result.forced}
