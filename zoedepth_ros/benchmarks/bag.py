"""``zoedepth-ros-bench --sections bag``: zoedepth-ros-bag's frames per second against the engine's own, same run.

A synthetic bag (one camera, raw rgb8 images with their CameraInfos) is written with rosbags; then, on one engine:

- model only: the same frames, already decoded, through ``submit_batch`` / ``results`` with one batch in flight
  (the engine's best throughput at this batch size);
- the tool: ``BagJob`` from the bag file to a new bag (read, deserialise, pair, decode, infer, build, write).

The overhead share is (tool seconds - model-only seconds) / model-only seconds, the model-only time being the mean
of one run before and one after the tool: what reading, decoding, pairing and writing add to the model's own time
(target <= 10 %, ``targets.BAG_OVERHEAD``). ``host_outside_engine_s`` is the
time the tool spent outside engine calls; on CUDA much of it overlaps the device's work on the batch in flight.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine import Engine
from ..engine.intrinsics import Intrinsics
from ..engine.pipeline import FrameInput, Settings
from ..model import ZoeDepth
from ..offline.bag_job import BagJob, BagOptions
from ..offline.bag_reader import BagSource
from ..offline.bag_writer import BagOutput, output_typestore
from ..offline.common import Summary

DT_NS = 33_333_333  # 30 Hz
T0_NS = 1_700_000_000 * 10**9


def _image(seed: int, height: int, width: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    rgb = np.stack([xs, 0.5 + 0.5 * np.sin(6 * xs * ys + 0.3 * seed), 1 - ys], axis=-1)
    return np.round(255 * rgb).astype(np.uint8)


def _intrinsics(height: int, width: int) -> Intrinsics:
    f = 0.8 * width
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)


def write_synthetic_bag(path: Path, height: int, width: int, frames: int, storage: str = "mcap") -> list[np.ndarray]:
    """One camera (/cam/image_raw + /cam/camera_info, equal stamps); returns the images written."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = output_typestore()
    t = store.types
    intr = _intrinsics(height, width)
    images = [_image(i, height, width) for i in range(frames)]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        info_conn = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
        for i, rgb in enumerate(images):
            stamp = T0_NS + i * DT_NS
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
            )
            k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
            info = t["sensor_msgs/msg/CameraInfo"](
                header=header,
                height=height,
                width=width,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=np.array(k),
                r=np.eye(3).ravel(),
                p=np.array([*k[:3], 0.0, *k[3:6], 0.0, *k[6:], 0.0]),
                binning_x=0,
                binning_y=0,
                roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            image = t["sensor_msgs/msg/Image"](
                header=header,
                height=height,
                width=width,
                encoding="rgb8",
                is_bigendian=0,
                step=3 * width,
                data=rgb.reshape(-1),
            )
            writer.write(info_conn, stamp, store.serialize_cdr(info, info.__msgtype__))
            writer.write(image_conn, stamp + 1000, store.serialize_cdr(image, image.__msgtype__))
    return images


def _model_only(engine: Engine, frames: list[FrameInput], batch: int) -> float:
    """Seconds for all ``frames`` in batches, one batch in flight while the next is submitted."""
    t0 = time.perf_counter()
    previous = None
    for i in range(0, len(frames), batch):
        handle = engine.submit_batch(frames[i : i + batch])
        if previous is not None:
            engine.results(previous)
        previous = handle
    if previous is not None:
        engine.results(previous)
    return time.perf_counter() - t0


def measure_bag(
    model: ZoeDepth,
    device: torch.device,
    size: tuple[int, int],
    *,
    frames: int = 64,
    batch: int = 4,
    storage: str = "mcap",
    points: bool = False,
    channels_last: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Tool vs model-only frames per second on one engine (the ``precision``/``execution`` "auto" rung)."""
    height, width = size
    engine = Engine.build(model, device, "auto", "auto", channels_last=channels_last and device.type == "cuda")
    settings = Settings(points=points)
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "in"
        images = write_synthetic_bag(bag, height, width, frames, storage)
        intr = _intrinsics(height, width)
        inputs = [FrameInput(rgb, "rgb8", intr, settings) for rgb in images]
        if device.type == "cuda":  # capture / compile both batch sizes, settle the allocator and autotuning
            for b in sorted({batch, len(inputs) % batch} - {0}):
                engine.warmup(height, width, settings, batch=b)
            _model_only(engine, inputs[: 2 * batch], batch)
        else:
            engine.run_batch(inputs[:1])  # first-call costs (allocations, thread pools) count for neither side
        before = _model_only(engine, inputs, batch)
        summary = Summary("bench", str(bag), str(Path(tmp) / "out"))
        job = BagJob(engine, settings, BagOptions(batch=batch), summary, log=lambda line: None)
        t0 = time.perf_counter()
        with BagSource(bag) as source:
            job.run(source, BagOutput(Path(tmp) / "out", storage, output_typestore()))
        tool_s = time.perf_counter() - t0
        after = _model_only(engine, inputs, batch)  # before and after the tool: a drifting machine averages out
        model_s = (before + after) / 2
        log(f"  model only: {frames} frames at {width}x{height}, batch {batch}: {frames / model_s:.2f} frames/s")
        log(f"  zoedepth-ros-bag: {summary.frames_out} frames: {summary.frames_out / tool_s:.2f} frames/s")
    return {
        "width": width,
        "height": height,
        "frames": frames,
        "frames_out": summary.frames_out,
        "batch": batch,
        "storage": storage,
        "points": points,
        "rung": engine.describe(),
        "model_only_s": model_s,
        "tool_s": tool_s,
        "model_only_fps": frames / model_s,
        "tool_fps": summary.frames_out / tool_s,
        "overhead_share": (tool_s - model_s) / model_s,
        "host_outside_engine_s": tool_s - job.engine_seconds,
    }
