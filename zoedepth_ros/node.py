"""The zoedepth_ros node: camera image + CameraInfo in; metric depth, camera info, cloud and routing out.

Thin glue: callbacks validate and file the newest frame into a one-slot mailbox; an inference thread submits it
to the pipeline (on CUDA that only queues the work), and a publisher thread waits for its host copies and
publishes, so publishing one frame overlaps computing the next; a timer publishes /diagnostics. Bad frames are
dropped with a throttled log line naming the problem and counted; the next good frame is processed.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from . import messages
from .accuracy import select_fast_mode
from .device import resolve_device
from .encodings import ImageError, decode_compressed, image_array_from_msg
from .geometry import CameraInfoError, Intrinsics
from .latest import LatestSlot
from .model import CheckpointError, ZoeDepth, load, set_precision
from .params import PARAMS, validate
from .pipeline import ROUTING_TO_DOMAIN, DepthPipeline, InFlight, Settings
from .runtime import DepthRunner, default_mode
from .weights import WeightsError, resolve_checkpoint

LOG_THROTTLE_S = 5.0
CAMERA_INFO_HISTORY = 30


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing checkpoint); the message says what to do."""


@dataclass
class PendingFrame:
    raw: np.ndarray
    encoding: str
    header: Any
    info: CameraInfo
    intrinsics: Intrinsics
    received: float


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _descriptor(p) -> ParameterDescriptor:
    allowed = f" One of: {', '.join(p.choices)}." if p.choices else ""
    d = ParameterDescriptor(description=p.description + allowed, read_only=not p.runtime)
    if p.low is not None and isinstance(p.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high), step=0.0)]
    elif p.low is not None and isinstance(p.default, int):
        d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
    return d


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST, depth=depth, durability=QoSDurabilityPolicy.VOLATILE,
        reliability=(QoSReliabilityPolicy.RELIABLE if reliability == "reliable" else QoSReliabilityPolicy.BEST_EFFORT),
    )


class ZoeDepthNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("zoedepth", **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, _descriptor(p))
        self.values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        reasons = validate(self.values)
        if reasons:
            raise StartupError("invalid parameters: " + "; ".join(reasons))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        try:
            self.device = resolve_device(self.values["device"])
        except ValueError as e:
            raise StartupError(str(e)) from None
        try:
            path = resolve_checkpoint(self.values["checkpoint"])
            model = load(path, device=self.device)
        except (WeightsError, CheckpointError) as e:
            raise StartupError(str(e)) from None
        self.checkpoint_path = str(path)
        self.variant = model.config.variant
        runner = self._runner(model)
        self.pipeline = DepthPipeline(runner, self.device)
        self.get_logger().info(f"loaded ZoeD_{self.variant.upper()} from {path} on {self.device} "
                               f"({runner.describe()})")

        out_qos = _qos(self.values["qos.output_reliability"], self.values["qos.output_depth"])
        in_qos = _qos(self.values["qos.input_reliability"], self.values["qos.input_depth"])
        self.pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_points = self.create_publisher(PointCloud2, "points", out_qos)
        self.pub_colormap = self.create_publisher(Image, "depth/colormap", out_qos)
        self.pub_routing = self.create_publisher(messages.routing_type(), "routing", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.outputs = (self.pub_depth, self.pub_info, self.pub_points, self.pub_colormap, self.pub_routing)

        self.camera_infos: deque[CameraInfo] = deque(maxlen=CAMERA_INFO_HISTORY)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)
        if self.values["input_transport"] == "compressed":
            topic = self.resolve_topic_name("image") + "/compressed"
            self.create_subscription(CompressedImage, topic, self._on_compressed, in_qos)
        else:
            self.create_subscription(Image, "image", self._on_image, in_qos)

        self.warmup_size: tuple[int, int] | None = None  # set by the first CameraInfo, consumed by the worker
        self.warmed: set[tuple[int, int]] = set()
        self.slot: LatestSlot[PendingFrame] = LatestSlot()
        self.to_publish: queue.Queue[tuple[InFlight, PendingFrame, Settings] | None] = queue.Queue(maxsize=1)
        self.drops: Counter[str] = Counter()
        self.processed = 0
        self.skipped_idle = 0
        self.latencies: deque[float] = deque(maxlen=100)
        self.done_times: deque[float] = deque(maxlen=100)
        self.last_domain = ""
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()
        self.worker = threading.Thread(target=self._work, name="zoedepth-inference", daemon=True)
        self.publisher = threading.Thread(target=self._publish_loop, name="zoedepth-publish", daemon=True)
        self.worker.start()
        self.publisher.start()
        self.create_timer(1.0, self._publish_diagnostics)

    def _runner(self, model: ZoeDepth) -> DepthRunner:
        """Precision and execution mode from the parameters; "auto" precision keeps only what passes the guard."""
        mode = self.values["execution"]
        mode = default_mode(self.device) if mode == "auto" else mode
        if mode == "cuda_graph" and self.device.type != "cuda":
            raise StartupError(f"execution cuda_graph needs a CUDA device; the node runs on {self.device}")
        channels_last = self.values["channels_last"]
        precision = self.values["precision"]
        if precision == "auto":
            if self.device.type != "cuda":
                return DepthRunner(model, self.device, mode, channels_last)
            candidates = ("bf16", "fp16") if torch.cuda.is_bf16_supported() else ("fp16",)
            runner, reports = select_fast_mode(model, self.device, candidates, mode, channels_last,
                                               pad_input=self.values["pad_input"], flip_aug=self.values["flip_aug"])
            for r in reports:
                self.get_logger().info(f"accuracy guard {r.mode}: {'passed' if r.passed else 'failed'} "
                                       f"(mean relative depth difference {r.mean_rel_diff:.2e}, routing "
                                       f"{'identical' if r.routing_identical else 'differs'}) {r.reason}")
            return runner
        return DepthRunner(set_precision(model, precision), self.device, mode, channels_last)

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, params) -> SetParametersResult:
        updates = {p.name: p.value for p in params if p.name in self.values}
        reasons = validate({**self.values, **updates})
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        with self._lock:
            self.values.update(updates)
        return SetParametersResult(successful=True)

    def settings(self) -> Settings:
        with self._lock:
            v = dict(self.values)
        return Settings(routing=v["routing"], pad_input=v["pad_input"], flip_aug=v["flip_aug"],
                        min_depth=v["min_depth"], max_depth=v["max_depth"], output_scale=v["output_scale"],
                        points=v["publish_points"] and self.pub_points.get_subscription_count() > 0,
                        color=v["point_cloud.color"], decimation=v["point_cloud.decimation"],
                        colormap=self.pub_colormap.get_subscription_count() > 0)

    # ------------------------------------------------------------------ input

    def _drop(self, reason: str, message: str) -> None:
        self.drops[reason] += 1
        now = time.monotonic()
        if now - self._last_log.get(reason, -1e9) >= LOG_THROTTLE_S:
            self._last_log[reason] = now
            self.get_logger().warn(f"dropped frame: {message} (dropped {self.drops[reason]} so far)")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_infos.append(msg)
        if self.values["warmup"] and self.warmup_size is None and msg.width > 0 and msg.height > 0:
            self.warmup_size = (msg.height, msg.width)

    def _match_camera_info(self, header) -> CameraInfo | None:
        if not self.camera_infos:
            self._drop("no_camera_info", f"no CameraInfo received yet on {self.resolve_topic_name('camera_info')}")
            return None
        stamp = _stamp_ns(header)
        for info in reversed(self.camera_infos):
            if _stamp_ns(info.header) == stamp:
                return info
        latest = self.camera_infos[-1]
        gap = abs(stamp - _stamp_ns(latest.header)) * 1e-9
        if gap > self.values["camera_info_tolerance"]:
            self._drop("camera_info_late", f"no CameraInfo within {self.values['camera_info_tolerance']} s of the "
                       f"image (closest is {gap:.3f} s away)")
            return None
        return latest

    def _wanted(self) -> bool:
        if any(p.get_subscription_count() > 0 for p in self.outputs):
            return True
        self.skipped_idle += 1
        return False

    def _accept(self, raw: np.ndarray, encoding: str, header) -> None:
        info = self._match_camera_info(header)
        if info is None:
            return
        try:
            intrinsics = Intrinsics.from_camera_info(info)
            intrinsics.check_image(raw.shape[1], raw.shape[0])
        except CameraInfoError as e:
            self._drop("bad_camera_info", str(e))
            return
        self.slot.put(PendingFrame(raw, encoding, header, info, intrinsics, time.monotonic()))

    def _on_image(self, msg: Image) -> None:
        if not self._wanted():
            return
        try:
            raw = image_array_from_msg(msg)
        except ImageError as e:
            self._drop("bad_image", str(e))
            return
        self._accept(raw, msg.encoding, msg.header)

    def _on_compressed(self, msg: CompressedImage) -> None:
        if not self._wanted():
            return
        try:
            raw = decode_compressed(msg.format, msg.data)
        except ImageError as e:
            self._drop("bad_compressed", str(e))
            return
        self._accept(raw, "rgb8", msg.header)

    # ------------------------------------------------------------------ work

    def _work(self) -> None:
        """Inference thread: submit the newest frame; the publisher thread waits for its results."""
        while not self.slot.closed:
            self._maybe_warm_up()
            frame = self.slot.take(timeout=0.2)
            if frame is None:
                continue
            with self._frame_errors(frame):
                settings = self.settings()
                inflight = self.pipeline.submit(frame.raw, frame.encoding, frame.intrinsics, settings)
                self.warmed.add(frame.raw.shape[:2])
                self.to_publish.put((inflight, frame, settings))
        self.to_publish.put(None)

    def _maybe_warm_up(self) -> None:
        size = self.warmup_size
        if size is None or size in self.warmed:
            return
        self.warmed.add(size)
        s = self.settings()
        t0 = time.monotonic()
        try:
            self.pipeline.runner.warmup(*size, pad_input=s.pad_input, flip_aug=s.flip_aug,
                                        domain=ROUTING_TO_DOMAIN[s.routing])
        except Exception as e:  # a failed warm-up must not stop the node; the first frame will try again
            self.get_logger().warn(f"warm-up at {size[1]}x{size[0]} failed: {type(e).__name__}: {e}")
            return
        self.get_logger().info(f"warmed up for {size[1]}x{size[0]} ({self.pipeline.runner.describe()}) "
                               f"in {time.monotonic() - t0:.1f} s")

    def _publish_loop(self) -> None:
        """Publisher thread: wait for a submitted frame's host copies, build messages, publish."""
        while True:
            item = self.to_publish.get()
            if item is None:
                return
            inflight, frame, settings = item
            with self._frame_errors(frame):
                self._publish(inflight.result(), frame, settings)

    @contextmanager
    def _frame_errors(self, frame: PendingFrame) -> Iterator[None]:
        """Turns whatever one frame raises into a counted, throttled drop, so the threads survive anything."""
        try:
            yield
        except (ImageError, CameraInfoError, ValueError) as e:
            self._drop("bad_frame", str(e))
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._drop("out_of_memory", f"out of memory on {self.device} for a {frame.raw.shape[1]}x"
                       f"{frame.raw.shape[0]} image; consider output_scale or precision")
        except Exception as e:
            self._drop("error", f"{type(e).__name__}: {e}")
            self.get_logger().debug(traceback.format_exc())

    def _publish(self, result, frame: PendingFrame, settings: Settings) -> None:
        header = frame.header
        if self.pub_depth.get_subscription_count() > 0:
            self.pub_depth.publish(messages.depth_image(result, header))
        self.pub_info.publish(messages.depth_camera_info(result, header, frame.info))
        if result.cloud is not None:
            self.pub_points.publish(messages.point_cloud(result, header, settings.color))
        if result.colormap is not None:
            self.pub_colormap.publish(messages.colormap_image(result, header))
        self.pub_routing.publish(messages.routing(result, header))
        now = time.monotonic()
        self.processed += 1
        self.latencies.append(now - frame.received)
        self.done_times.append(now)
        self.last_domain = result.domain

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        rate = 0.0
        if len(self.done_times) >= 2 and self.done_times[-1] > self.done_times[0]:
            rate = (len(self.done_times) - 1) / (self.done_times[-1] - self.done_times[0])
        lat = sorted(self.latencies)
        values = {
            "frames processed": self.processed,
            "rate (Hz)": f"{rate:.2f}",
            "latency p50 (ms)": f"{1e3 * lat[len(lat) // 2]:.1f}" if lat else "",
            "latency max (ms)": f"{1e3 * lat[-1]:.1f}" if lat else "",
            "dropped (newer frame arrived)": self.slot.replaced,
            "skipped (no subscribers)": self.skipped_idle,
            **{f"dropped ({reason})": n for reason, n in sorted(self.drops.items())},
            "model": f"ZoeD_{self.variant.upper()}",
            "checkpoint": self.checkpoint_path,
            "device": str(self.device),
            "precision": self.pipeline.runner.precision,
            "execution": self.pipeline.runner.mode,
            "routing": self.values["routing"],
            "domain": self.last_domain,
        }
        errors = sum(n for r, n in self.drops.items() if r in ("error", "out_of_memory"))
        level = DiagnosticStatus.WARN if errors or self.drops else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: ZoeDepth", hardware_id=str(self.device),
            message=f"{self.processed} frames, {rate:.1f} Hz" + (", frames dropped" if self.drops else ""),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def shutdown(self) -> None:
        self.slot.close()
        self.worker.join(timeout=10.0)
        self.publisher.join(timeout=10.0)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = ZoeDepthNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except StartupError as e:
        print(f"zoedepth_node: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

