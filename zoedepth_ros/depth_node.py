"""The zoedepth_ros node: camera image + CameraInfo in; metric depth, camera info, cloud and routing out.

A managed (lifecycle) node, as Nav2 stacks expect: configure loads the checkpoint and builds the runner, activate
starts the subscriptions and the worker threads, deactivate stops all model work, cleanup frees the model.
Started without ``--managed`` it configures and activates itself at once (a plain node to its users).

Thin glue: callbacks validate frames and pair each image with its CameraInfo (``pairing``), the paired frame goes
to the worker's latest-frame mailbox (``worker``): an inference thread submits it to the pipeline (on CUDA that
only queues the work) and a publisher thread publishes the results; a timer publishes /diagnostics. Bad frames
are dropped with a throttled log line naming the problem and counted; the next good frame is processed.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from . import messages, qos
from .device import resolve_device
from .encodings import ImageError, check_size, decode_compressed, image_array_from_msg
from .engine import DROPPED_KINDS, Engine, EngineError, FrameDropped
from .errors import StartupError
from .intrinsics import CameraInfoError, Intrinsics
from .model import CheckpointError, load
from .pairing import Paired, StampPairer, Unpaired
from .params import BY_NAME, PARAMS, validate
from .pipeline import InFlight, Settings
from .signals import StopSignals
from .weights import WeightsError, ensure_checkpoint
from .worker import FrameWorker

LOG_THROTTLE_S = 5.0
PAIRING_POLL_S = 0.02  # how often waiting images are checked against camera_info_wait
STOP_TIMEOUT_S = 1.5  # how long shutdown waits for a frame still in the model before exiting without it
RATE_WINDOW = 50
CAMERA_INFO_DEPTH = 10  # CameraInfos are tiny: a deeper queue keeps a busy executor from losing one before pairing
ROS_OWN_PARAMS = ("use_sim_time", "start_type_description_service")  # declared by rclpy itself


@dataclass
class PendingFrame:
    raw: np.ndarray
    encoding: str
    header: Any
    info: CameraInfo
    intrinsics: Intrinsics
    received: float


@dataclass
class RawImage:
    raw: np.ndarray
    encoding: str
    header: Any
    received: float


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _descriptor(p, managed: bool) -> ParameterDescriptor:
    """Start-up parameters are read-only, except on a managed node: there they may change while unconfigured."""
    allowed = f" One of: {', '.join(p.choices)}." if p.choices else ""
    d = ParameterDescriptor(description=p.description + allowed, read_only=not (p.runtime or managed))
    if p.low is not None and isinstance(p.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high), step=0.0)]
    elif p.low is not None and isinstance(p.default, int):
        d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
    return d


def _rate(times: deque[float]) -> float:
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


class ZoeDepthNode(LifecycleNode):
    """Args:
    managed: a lifecycle manager drives the transitions (else ``start()`` configures and activates at once).
    stop: the executable's signal state, so that a signal aborts a long configure (download, loading).
    """

    def __init__(self, *, managed: bool = False, stop: StopSignals | None = None, **kwargs) -> None:
        super().__init__("zoedepth", **kwargs)
        self.managed = managed
        self._stop = stop or StopSignals()
        self.values = self._declare_parameters()
        reasons = validate(self.values)
        if reasons:
            raise StartupError("invalid parameters: " + "; ".join(reasons))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.engine: Engine | None = None
        self.device: torch.device | None = None
        self.checkpoint_path = ""
        self.variant = ""
        self.last_error = ""
        self.outputs: tuple = ()
        self._subscriptions: list = []
        self._pairing_timer = None
        self.worker: FrameWorker[PendingFrame, tuple[Engine, InFlight, PendingFrame, Settings]] | None = None
        self.pairer: StampPairer[RawImage, CameraInfo] = StampPairer()
        self.warmup_size: tuple[int, int] | None = None  # set by the first valid CameraInfo, used by the worker
        self.drops: Counter[str] = Counter()
        self.processed = 0
        self.skipped_idle = 0
        self.replaced_before = 0  # latest-frame replacements of workers already stopped
        self.latencies: deque[float] = deque(maxlen=100)
        self.done_times: deque[float] = deque(maxlen=100)
        self.input_times: dict[str, deque[float]] = {
            "image": deque(maxlen=RATE_WINDOW),
            "camera_info": deque(maxlen=RATE_WINDOW),
        }
        self.received: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()  # messages the middleware reported lost, per input topic
        self.incompatible: Counter[str] = Counter()  # publishers whose QoS cannot match our subscription
        self.no_valid_depth = 0  # frames whose depth is NaN everywhere
        self._missing_warned = 0
        self.last_domain = ""
        self._last_log: dict[str, float] = {}
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> dict[str, Any]:
        """Declare the table's parameters; a bad override (``-p``, a params file) is one StartupError line.

        rclpy would raise a multi-line InvalidParameterValue/TypeException, and refuse an integer for a float
        parameter (``max_depth:=5``), which we accept.
        """
        overrides = self._parameter_overrides  # rclpy keeps the -p / params-file values here until declared
        reasons = []
        for p in PARAMS:
            given = overrides.get(p.name)
            if given is None:
                continue
            reason = p.check(given.value)
            if reason is not None:
                reasons.append(reason)
            elif isinstance(p.default, float) and type(given.value) is int:
                overrides[p.name] = Parameter(p.name, Parameter.Type.DOUBLE, float(given.value))
        if reasons:
            raise StartupError("invalid parameters: " + "; ".join(reasons))
        unknown = sorted(
            n for n in overrides if n not in BY_NAME and n not in ROS_OWN_PARAMS and not n.startswith("qos_overrides.")
        )
        if unknown:
            self.get_logger().warn(
                f"ignoring unknown parameters: {', '.join(unknown)} (see config/zoedepth.yaml for the known ones)"
            )
        for p in PARAMS:
            try:
                self.declare_parameter(p.name, p.default, _descriptor(p, self.managed))
            except (InvalidParameterValueException, InvalidParameterTypeException) as e:  # pragma: no cover
                raise StartupError(f"invalid parameter {p.name}: {str(e).splitlines()[0]}") from None
        return {p.name: self.get_parameter(p.name).value for p in PARAMS}

    def _on_set_parameters(self, params) -> SetParametersResult:
        updates = {p.name: p.value for p in params if p.name in self.values}
        state = self._state_machine.current_state[1]
        frozen = [n for n in updates if not BY_NAME[n].runtime and updates[n] != self.values[n]]
        if frozen and state != "unconfigured":
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(frozen)} can change only while the "
                f"node is unconfigured (it is {state}: cleanup first)",
            )
        reasons = validate({**self.values, **updates})
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        self.values = {**self.values, **updates}  # one assignment: the threads read a consistent snapshot
        return SetParametersResult(successful=True)

    def settings(self) -> Settings:
        v = self.values
        outputs = self.outputs
        if not outputs:  # not configured (or cleaned up while a frame was in flight)
            return Settings(routing=v["routing"], pad_input=v["pad_input"], flip_aug=v["flip_aug"])
        pub_points, pub_colormap = outputs[2], outputs[3]
        return Settings(
            routing=v["routing"],
            pad_input=v["pad_input"],
            flip_aug=v["flip_aug"],
            min_depth=v["min_depth"],
            max_depth=v["max_depth"],
            output_scale=v["output_scale"],
            points=v["publish_points"] and pub_points.get_subscription_count() > 0,
            color=v["point_cloud.color"],
            decimation=v["point_cloud.decimation"],
            colormap=pub_colormap.get_subscription_count() > 0,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Unmanaged start: configure, then activate; a failure raises StartupError with its one-line reason."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise StartupError(self.last_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise StartupError(self.last_error or "activate failed")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            with self._stop.interruptible():
                self._configure()
        except StartupError as e:
            self._release()
            self.last_error = str(e)
            if self.managed:  # unmanaged, main() prints it once and exits
                self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.last_error = ""
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        v = self.values
        try:
            self.device = resolve_device(v["device"])
        except ValueError as e:
            raise StartupError(str(e)) from None
        try:
            path = ensure_checkpoint(v["checkpoint"], download=v["download"], log=self.get_logger().info)
            model = load(path, device=self.device)
        except (WeightsError, CheckpointError) as e:
            raise StartupError(str(e)) from None
        self.checkpoint_path = str(path)
        self.variant = model.config.variant
        logger = self.get_logger()
        try:  # precision, execution mode, accuracy guard and the fallback ladder (engine.py)
            self.engine = Engine.build(
                model,
                self.device,
                v["precision"],
                v["execution"],
                channels_last=v["channels_last"],
                pad_input=v["pad_input"],
                flip_aug=v["flip_aug"],
                warn=logger.warn,
                info=logger.info,
            )
        except (ValueError, EngineError) as e:
            raise StartupError(str(e)) from None
        logger.info(f"loaded ZoeD_{self.variant.upper()} from {path} on {self.device} ({self.engine.describe()})")
        out_qos = qos.profile(v["qos.output_reliability"], v["qos.output_depth"])
        self.outputs = (
            self.create_publisher(Image, "depth/image", out_qos),
            self.create_publisher(CameraInfo, "depth/camera_info", out_qos),
            self.create_publisher(PointCloud2, "points", out_qos),
            self.create_publisher(Image, "depth/colormap", out_qos),
            self.create_publisher(messages.routing_type(), "routing", out_qos),
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        in_qos = qos.profile(self.values["qos.input_reliability"], self.values["qos.input_depth"])
        self.pairer.clear()
        info_qos = qos.profile(
            self.values["qos.input_reliability"], max(self.values["qos.input_depth"], CAMERA_INFO_DEPTH)
        )
        self._subscriptions = [
            self.create_subscription(
                CameraInfo,
                "camera_info",
                self._on_camera_info,
                info_qos,
                event_callbacks=self._transport_events("camera_info"),
            )
        ]
        if self.values["input_transport"] == "compressed":
            topic = self.resolve_topic_name("image") + "/compressed"
            self._subscriptions.append(
                self.create_subscription(
                    CompressedImage, topic, self._on_compressed, in_qos, event_callbacks=self._transport_events("image")
                )
            )
        else:
            self._subscriptions.append(
                self.create_subscription(
                    Image, "image", self._on_image, in_qos, event_callbacks=self._transport_events("image")
                )
            )
        self._pairing_timer = self.create_timer(PAIRING_POLL_S, self._expire_pairs)
        self.worker = FrameWorker(self._submit, self._publish_job, idle=self._maybe_warm_up).start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_work(STOP_TIMEOUT_S)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_work(STOP_TIMEOUT_S)
        self._release()
        self._stop.request()  # the process ends after a shutdown transition
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error during a transition from {state.label}; back to unconfigured")
        self._stop_work(STOP_TIMEOUT_S)
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_work(self, timeout: float) -> bool:
        """Stop the subscriptions and the worker threads; False if a frame is still in the model."""
        for sub in self._subscriptions:
            self.destroy_subscription(sub)
        self._subscriptions = []
        if self._pairing_timer is not None:
            self.destroy_timer(self._pairing_timer)
            self._pairing_timer = None
        self.pairer.clear()
        worker, self.worker = self.worker, None
        if worker is None:
            return True
        self.replaced_before += worker.replaced
        finished = worker.stop(timeout)
        if not finished:
            self.get_logger().warn(f"a frame was still in the model after {timeout:g} s; not waiting for it")
        return finished

    def _release(self) -> None:
        """Free the model and the publishers (device memory goes back to the driver)."""
        for pub in self.outputs:
            self.destroy_publisher(pub)
        self.outputs = ()
        cuda = self.device is not None and self.device.type == "cuda" and self.engine is not None
        self.engine = None
        self.warmup_size = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    def close(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """End everything for process exit; False if a worker thread did not finish within ``timeout``."""
        finished = self._stop_work(timeout)
        if finished:
            self._release()
        return finished

    # ------------------------------------------------------------------ input

    def _transport_events(self, topic: str) -> SubscriptionEventCallbacks:
        """Make what the middleware loses visible: a count in diagnostics and a throttled warning."""

        def lost(event) -> None:
            self.lost[topic] += event.total_count_change
            self._warn_throttled(
                f"lost_{topic}",
                (
                    f"the middleware lost {self.lost[topic]} {topic} message(s) so far on "
                    f"{self.resolve_topic_name(topic)}; large images need the Fast DDS profile "
                    "config/fastdds_large_shm.xml in every process, the camera driver's included (README: large images)"
                ),
            )

        def incompatible(event) -> None:
            self.incompatible[topic] = event.total_count
            self._warn_throttled(
                f"qos_{topic}",
                (
                    f"a publisher on {self.resolve_topic_name(topic)} has QoS incompatible with this subscription "
                    f"({qos_policy_name_from_kind(event.last_policy_kind)}); nothing from it arrives. Set "
                    "qos.input_reliability to what the camera offers (best_effort receives from every publisher)"
                ),
            )

        return SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)

    def _drop(self, reason: str, message: str) -> None:
        self.drops[reason] += 1
        self._warn_throttled(reason, f"dropped frame: {message} (dropped {self.drops[reason]} so far)")

    def _warn_throttled(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= LOG_THROTTLE_S:
            self._last_log[key] = now
            self.get_logger().warn(message)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        now = time.monotonic()
        self.input_times["camera_info"].append(now)
        self.received["camera_info"] += 1
        if self.values["warmup"] and self.warmup_size is None:
            self._set_warmup_size(msg)
        v = self.values
        watch = any(p.get_subscription_count() > 0 for p in self.outputs)
        self._settle(self.pairer.add_info(_stamp_ns(msg.header), msg, now, v["camera_info_tolerance"], watch))

    def _set_warmup_size(self, msg: CameraInfo) -> None:
        """Warm up at the size of the images this CameraInfo describes (binning and ROI applied), if it is valid."""
        try:
            intrinsics = Intrinsics.from_camera_info(msg)
            check_size(intrinsics.width, intrinsics.height)
        except (CameraInfoError, ImageError) as e:
            self._warn_throttled("warmup", f"not warming up for this CameraInfo: {e}")
            return
        self.warmup_size = (intrinsics.height, intrinsics.width)

    def _expire_pairs(self) -> None:
        v = self.values
        self._settle(self.pairer.expire(time.monotonic(), v["camera_info_wait"], v["camera_info_tolerance"]))
        missing = self.pairer.stats.infos_without_image
        if missing > self._missing_warned:
            self._missing_warned = missing
            self._warn_throttled(
                "missing_image",
                (
                    f"{missing} CameraInfo(s) so far on {self.resolve_topic_name('camera_info')} came without their "
                    f"image on {self.resolve_topic_name('image')}: images too large for the transport are lost "
                    "(README: large images), or the image topic is not the CameraInfo's"
                ),
            )

    def _wanted(self) -> bool:
        if any(p.get_subscription_count() > 0 for p in self.outputs):
            return True
        self.skipped_idle += 1
        return False

    def _pair_image(self, image: RawImage) -> None:
        v = self.values
        self._settle(
            self.pairer.add_image(
                _stamp_ns(image.header), image, image.received, v["camera_info_wait"], v["camera_info_tolerance"]
            )
        )

    def _settle(self, results: list[Paired[RawImage, CameraInfo] | Unpaired[RawImage]]) -> None:
        for r in results:
            if isinstance(r, Paired):
                self._accept(r.image, r.info)
            elif r.reason != "superseded":  # the latest-frame rule, counted by the pairer
                topic = self.resolve_topic_name("camera_info")
                self._drop(r.reason, f"{r.message} on {topic}")

    def _accept(self, image: RawImage, info: CameraInfo) -> None:
        try:
            intrinsics = Intrinsics.from_camera_info(info)
            intrinsics.check_image(image.raw.shape[1], image.raw.shape[0])
        except CameraInfoError as e:
            self._drop("bad_camera_info", str(e))
            return
        worker = self.worker
        if worker is not None:
            worker.put(PendingFrame(image.raw, image.encoding, image.header, info, intrinsics, image.received))

    def _on_image(self, msg: Image) -> None:
        self._receive(msg.header, "bad_image", lambda: (image_array_from_msg(msg), msg.encoding))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._receive(msg.header, "bad_compressed", lambda: (decode_compressed(msg.format, msg.data), "rgb8"))

    def _receive(self, header, reason: str, decode: Callable[[], tuple[np.ndarray, str]]) -> None:
        """Count an arriving image; decode it (``reason`` names the drop if that fails) only if it is wanted."""
        now = time.monotonic()
        self.input_times["image"].append(now)
        self.received["image"] += 1
        if not self._wanted():
            return
        try:
            raw, encoding = decode()
        except ImageError as e:
            self._drop(reason, str(e))
            return
        self._pair_image(RawImage(raw, encoding, header, now))

    # ------------------------------------------------------------------ work (worker threads)

    def _submit(self, frame: PendingFrame) -> tuple[Engine, InFlight, PendingFrame, Settings] | None:
        engine = self.engine  # the job carries it: a cleanup may clear self.engine while the frame is in flight
        if engine is None:
            return None
        with self._frame_errors(frame):
            settings = self.settings()
            return engine, engine.submit(frame.raw, frame.encoding, frame.intrinsics, settings), frame, settings
        return None

    def _maybe_warm_up(self) -> None:
        """Idle work of the inference thread: warm up (capture) at the CameraInfo's size; cheap once done."""
        size, engine = self.warmup_size, self.engine
        if size is not None and engine is not None and self.outputs:
            engine.warmup(*size, self.settings())  # logs itself; a device failure steps down the ladder

    def _publish_job(self, job: tuple[Engine, InFlight, PendingFrame, Settings]) -> None:
        engine, inflight, frame, settings = job
        with self._frame_errors(frame):
            self._publish(engine.result(inflight), frame, settings)

    @contextmanager
    def _frame_errors(self, frame: PendingFrame) -> Iterator[None]:
        """Turns whatever one frame raises into a counted, throttled drop, so the threads survive anything."""
        try:
            yield
        except FrameDropped as e:  # a device failure: the engine has counted it, freed memory, maybe stepped down
            self._drop(e.kind, f"{e} ({frame.raw.shape[1]}x{frame.raw.shape[0]} image)")
        except (ImageError, CameraInfoError, ValueError) as e:
            self._drop("bad_frame", str(e))
        except Exception as e:
            self._drop("error", f"{type(e).__name__}: {e}")
            self.get_logger().debug(traceback.format_exc())

    def _publish(self, result, frame: PendingFrame, settings: Settings) -> None:
        outputs = self.outputs
        if not outputs:  # cleaned up meanwhile
            return
        pub_depth, pub_info, pub_points, pub_colormap, pub_routing = outputs
        header = frame.header
        if not np.isfinite(np.frombuffer(result.depth, dtype=np.float32)).any():
            self.no_valid_depth += 1
            self._warn_throttled(
                "no_valid_depth",
                (
                    f"no valid depth in {self.no_valid_depth} frame(s) so far: the model's output was not finite or "
                    f"all outside min_depth..max_depth ({settings.min_depth:g}..{settings.max_depth:g} m)"
                ),
            )
        if pub_depth.get_subscription_count() > 0:
            pub_depth.publish(messages.depth_image(result, header))
        pub_info.publish(messages.depth_camera_info(result, header, frame.info))
        if result.cloud is not None:
            pub_points.publish(messages.point_cloud(result, header, settings.color))
        if result.colormap is not None:
            pub_colormap.publish(messages.colormap_image(result, header))
        pub_routing.publish(messages.routing(result, header))
        now = time.monotonic()
        self.processed += 1
        self.latencies.append(now - frame.received)
        self.done_times.append(now)
        self.last_domain = result.domain

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        rate = _rate(self.done_times)
        lat = sorted(self.latencies)
        pairing = self.pairer.stats
        worker = self.worker
        replaced = self.replaced_before + (worker.replaced if worker is not None else 0)
        state = self._state_machine.current_state[1]
        values = {
            "state": state,
            "frames processed": self.processed,
            "rate (Hz)": f"{rate:.2f}",
            "images received": self.received["image"],
            "lost in transport (image)": self.lost["image"],
            "lost in transport (camera_info)": self.lost["camera_info"],
            "incompatible QoS publishers (image)": self.incompatible["image"],
            "incompatible QoS publishers (camera_info)": self.incompatible["camera_info"],
            "frames with no valid depth": self.no_valid_depth,
            "camera_infos received": self.received["camera_info"],
            "input rate image (Hz)": f"{_rate(self.input_times['image']):.2f}",
            "input rate camera_info (Hz)": f"{_rate(self.input_times['camera_info']):.2f}",
            "latency p50 (ms)": f"{1e3 * lat[len(lat) // 2]:.1f}" if lat else "",
            "latency max (ms)": f"{1e3 * lat[-1]:.1f}" if lat else "",
            "dropped (newer frame arrived)": replaced + pairing.dropped.get("superseded", 0),
            "skipped (no subscribers)": self.skipped_idle,
            **{f"dropped ({reason})": n for reason, n in sorted(self.drops.items())},
            "pairing exact": pairing.exact,
            "pairing by tolerance": pairing.tolerance,
            "pairing waited for camera_info": pairing.waited,
            "pairing max wait (ms)": f"{1e3 * pairing.max_wait:.1f}",
            "pairing waiting now": self.pairer.waiting,
            "camera_info without its image": pairing.infos_without_image,
            "model": f"ZoeD_{self.variant.upper()}" if self.variant else "",
            "checkpoint": self.checkpoint_path,
            "device": str(self.device) if self.device is not None else "",
            "precision": "",
            "execution": "",
            "routing": self.values["routing"],
            "domain": self.last_domain,
            **self._device_memory(),
        }
        engine = self.engine
        if engine is not None:
            values.update(engine.diagnostics())  # precision, execution, the rung in use and why, device failures
        if self.last_error:
            values["last error"] = self.last_error
        errors = sum(n for r, n in self.drops.items() if r in ("error", *DROPPED_KINDS))
        errors += int(engine is not None and engine.degraded)
        errors += sum(self.lost.values()) + sum(self.incompatible.values()) + self.no_valid_depth
        errors += pairing.infos_without_image
        if state != "active":
            level, message = DiagnosticStatus.WARN, f"{state}" + (f": {self.last_error}" if self.last_error else "")
        else:
            level = DiagnosticStatus.WARN if errors or self.drops else DiagnosticStatus.OK
            message = f"{self.processed} frames, {rate:.1f} Hz" + (", frames dropped" if self.drops else "")
            message += ", messages lost in transport" if sum(self.lost.values()) else ""
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: ZoeDepth",
            hardware_id=str(self.device or ""),
            message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def _device_memory(self) -> dict[str, str]:
        if self.device is None or self.device.type != "cuda":
            return {}
        mib = 1 << 20
        return {
            "device memory allocated (MiB)": f"{torch.cuda.memory_allocated(self.device) / mib:.0f}",
            "device memory reserved (MiB)": f"{torch.cuda.memory_reserved(self.device) / mib:.0f}",
            "device memory peak (MiB)": f"{torch.cuda.max_memory_allocated(self.device) / mib:.0f}",
        }
