"""The zoedepth_ros node: one model for every camera; per camera image + CameraInfo in, depth, cloud and routing out.

A managed (lifecycle) node, as Nav2 stacks expect: configure loads the checkpoint and builds the engine, activate
starts the subscriptions and the worker threads, deactivate stops all model work, cleanup frees the model.
Started without ``--managed`` it configures and activates itself at once (a plain node to its users).

Thin glue: each camera (``cameras``; one on ``image`` / ``camera_info`` when empty) is a ``CameraUnit`` with its
own subscriptions, pairing, publishers, counters and diagnostics; its checked frames go to the worker's per-camera
mailbox (``batching``): the inference thread submits a batch of same-size frames to the engine (on CUDA that only
queues the work) and the publisher thread hands each camera its results. A timer publishes /diagnostics: one
status per camera and one for the engine. Bad frames are dropped with a throttled log line naming the problem and
counted for their camera; the next good frame is processed.
"""

from __future__ import annotations

import gc
import time
import traceback
from typing import Any

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from ..engine import Engine, FrameDropped, open_engine
from ..engine.encodings import ImageError
from ..engine.intrinsics import CameraInfoError
from ..engine.onnx.session import SessionSettings
from ..engine.pipeline import InFlight, Settings, batch_key
from ..errors import StartupError
from . import qos
from .batching import Waiting, submit_good, warmup_plan
from .camera_unit import DIAGNOSTIC_NAME, CameraUnit, PendingFrame
from .cameras import CameraSpec, parse_cameras
from .params import BY_NAME, PARAMS, camera_list, validate
from .signals import StopSignals
from .worker import FrameWorker

LOG_THROTTLE_S = 5.0
PAIRING_POLL_S = 0.02  # how often waiting images are checked against camera_info_wait
STOP_TIMEOUT_S = 1.5  # how long shutdown waits for a frame still in the model before exiting without it
CAMERA_INFO_DEPTH = 10  # CameraInfos are tiny: a deeper queue keeps a busy executor from losing one before pairing
ROS_OWN_PARAMS = ("use_sim_time", "start_type_description_service")  # declared by rclpy itself

Job = tuple[Engine, InFlight, list[Waiting[PendingFrame]]]


def _descriptor(p, managed: bool) -> ParameterDescriptor:
    """Start-up parameters are read-only, except on a managed node: there they may change while unconfigured."""
    allowed = f" One of: {', '.join(p.choices)}." if p.choices else ""
    d = ParameterDescriptor(description=p.description + allowed, read_only=not (p.runtime or managed))
    if isinstance(p.default, tuple):
        d.dynamic_typing = True  # an empty list has no ROS type (`[]` arrives unset); Param.check types it
    elif p.low is not None and isinstance(p.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high), step=0.0)]
    elif p.low is not None and isinstance(p.default, int):
        d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
    return d


def _value(name: str, value: Any) -> Any:
    """A parameter's value as the node keeps it (lists as tuples, an unset list as the empty one)."""
    return camera_list(value) if isinstance(BY_NAME[name].default, tuple) else value


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
        self.units: list[CameraUnit] = []
        self._by_name: dict[str, CameraUnit] = {}
        self._pairing_timer = None
        self.worker: FrameWorker[PendingFrame, Job] | None = None
        self._warmup_planned: tuple | None = None  # what the engine was last told to expect
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
            self.get_logger().warning(
                f"ignoring unknown parameters: {', '.join(unknown)} (see config/zoedepth.yaml for the known ones)"
            )
        for p in PARAMS:
            try:
                default = list(p.default) if isinstance(p.default, tuple) else p.default
                self.declare_parameter(p.name, default, _descriptor(p, self.managed))
            except (InvalidParameterValueException, InvalidParameterTypeException) as e:  # pragma: no cover
                raise StartupError(f"invalid parameter {p.name}: {str(e).splitlines()[0]}") from None
        return {p.name: _value(p.name, self.get_parameter(p.name).value) for p in PARAMS}

    def _on_set_parameters(self, params) -> SetParametersResult:
        updates = {p.name: _value(p.name, p.value) for p in params if p.name in self.values}
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

    def model_settings(self) -> Settings:
        """The settings the model itself reads (equal for every camera): routing, padding, flip averaging."""
        v = self.values
        return Settings(routing=v["routing"], pad_input=v["pad_input"], flip_aug=v["flip_aug"])

    def cameras(self) -> list[CameraSpec]:
        return parse_cameras(self.values["cameras"], self.values["input_transport"])  # validated already

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
        logger = self.get_logger()
        # the weights (downloaded on first use), precision, execution mode, accuracy guard, fallback ladder
        self.engine = open_engine(
            v["checkpoint"],
            v["device"],
            v["precision"],
            v["execution"],
            download=v["download"],
            channels_last=v["channels_last"],
            pad_input=v["pad_input"],
            flip_aug=v["flip_aug"],
            info=logger.info,
            warn=logger.warning,
            backend=v["backend"],
            ort_settings=SessionSettings(workspace_gb=v["tensorrt_workspace_gb"]),
        )
        self.device = self.engine.device
        self.checkpoint_path = self.engine.source
        self.variant = self.engine.variant
        out_qos = qos.profile(v["qos.output_reliability"], v["qos.output_depth"])
        self.units = [CameraUnit(self, spec, self._deliver, self._warn_throttled) for spec in self.cameras()]
        self._by_name = {u.name: u for u in self.units}
        for unit in self.units:
            unit.create_publishers(out_qos)
        if len(self.units) > 1 or self.units[0].name:
            logger.info(
                f"serving {len(self.units)} camera(s) with one model: "
                + ", ".join(f"{u.image_topic()} -> {u.topic('depth/image')}" for u in self.units)
            )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self.values
        image_qos = qos.profile(v["qos.input_reliability"], v["qos.input_depth"])
        info_qos = qos.profile(v["qos.input_reliability"], max(v["qos.input_depth"], CAMERA_INFO_DEPTH))
        self.worker = FrameWorker(
            [u.name for u in self.units], v["max_batch"], self._submit, self._publish_job, idle=self._idle
        ).start()
        for unit in self.units:
            unit.subscribe(image_qos, info_qos)
        self._pairing_timer = self.create_timer(PAIRING_POLL_S, self._expire_pairs)
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
        """Stop the subscriptions and the worker threads; False if a batch is still in the model."""
        for unit in self.units:
            unit.unsubscribe()
        if self._pairing_timer is not None:
            self.destroy_timer(self._pairing_timer)
            self._pairing_timer = None
        worker, self.worker = self.worker, None
        if worker is None:
            return True
        for unit in self.units:
            unit.replaced_before += worker.replaced(unit.name)
        finished = worker.stop(timeout)
        if not finished:
            self.get_logger().warning(f"a frame was still in the model after {timeout:g} s; not waiting for it")
        return finished

    def _release(self) -> None:
        """Free the model and the publishers (device memory goes back to the driver)."""
        for unit in self.units:
            unit.destroy_publishers()
        self.units, self._by_name = [], {}
        cuda = self.device is not None and self.device.type == "cuda" and self.engine is not None
        self.engine = None
        self._warmup_planned = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    def close(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """End everything for process exit; False if a worker thread did not finish within ``timeout``."""
        finished = self._stop_work(timeout)
        if finished:
            self._release()
        return finished

    # ------------------------------------------------------------------ input (executor thread)

    def _warn_throttled(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= LOG_THROTTLE_S:
            self._last_log[key] = now
            self.get_logger().warning(message)

    def _expire_pairs(self) -> None:
        now = time.monotonic()
        for unit in self.units:
            unit.expire(now)

    def _deliver(self, frame: PendingFrame) -> None:
        """A camera's checked frame into its place in the mailbox (replacing its waiting one)."""
        worker = self.worker
        if worker is not None:
            worker.put(frame.camera, frame, batch_key(frame.input))

    # ------------------------------------------------------------------ work (worker threads)

    def _idle(self) -> None:
        """Idle work of the inference thread: warm up (capture) each camera size and batch size; cheap once done."""
        engine = self.engine  # the thread's own reference: a cleanup may clear self.engine meanwhile
        if engine is None or not self.values["warmup"]:
            return
        try:
            settings = self.model_settings()
            sizes = [u.warmup_size for u in list(self.units) if u.warmup_size is not None]
            plan = warmup_plan(sizes, self.values["max_batch"])
            if (plan, settings) != self._warmup_planned:
                for (height, width), batches in plan.items():
                    engine.expect(height, width, settings, batches)
                self._warmup_planned = (plan, settings)
            engine.warm_up_next()  # logs itself; a device failure steps down the ladder
        except Exception as e:  # never let warm-up end the inference thread
            self._warn_throttled("warmup_error", f"warm-up failed: {type(e).__name__}: {e}")
            self.get_logger().debug(traceback.format_exc())

    def _submit(self, batch: list[Waiting[PendingFrame]]) -> Job | None:
        """One forward for the batch; a frame the engine turns away is dropped for its camera, the rest resubmitted."""
        engine = self.engine  # the job carries it: a cleanup may clear self.engine while the batch is in flight
        if engine is None:
            return None
        try:
            submitted = submit_good(
                lambda frames: engine.submit_batch([w.frame.input for w in frames]),
                batch,
                lambda bad, e: self._unit_drop(bad, "bad_frame", str(e)),
            )
        except Exception as e:
            self._drop_all(batch, e)
            return None
        if submitted is None:
            return None
        inflight, frames = submitted
        return engine, inflight, frames

    def _publish_job(self, job: Job) -> None:
        engine, inflight, frames = job
        try:
            results = engine.results(inflight)
        except Exception as e:
            self._drop_all(frames, e)
            return
        shared = len(frames) > 1
        for waiting, result in zip(frames, results, strict=True):
            unit = self._by_name.get(waiting.camera)
            if unit is None:  # cleaned up meanwhile
                continue
            try:
                unit.publish(result, waiting.frame, shared)
            except Exception as e:
                self._drop_all([waiting], e)

    def _drop_all(self, frames: list[Waiting[PendingFrame]], e: Exception) -> None:
        """Whatever a batch raises becomes a counted, throttled drop for each of its cameras: the threads survive."""
        if isinstance(e, FrameDropped):  # a device failure: the engine has counted it, freed memory, maybe stepped
            reason, text = e.kind, str(e)
        elif isinstance(e, ImageError | CameraInfoError | ValueError):
            reason, text = "bad_frame", str(e)
        else:
            reason, text = "error", f"{type(e).__name__}: {e}"
            self.get_logger().debug(traceback.format_exc())
        for waiting in frames:
            raw = waiting.frame.input.raw
            size = (
                f" ({raw.shape[1]}x{raw.shape[0]} image{', batch of ' + str(len(frames)) if len(frames) > 1 else ''})"
            )
            self._unit_drop(waiting, reason, text + size)

    def _unit_drop(self, waiting: Waiting[PendingFrame], reason: str, message: str) -> None:
        unit = self._by_name.get(waiting.camera)
        if unit is not None:
            unit.drop(reason, message)

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        name = self.get_name()
        hardware_id = str(self.device or "")
        worker = self.worker
        statuses = [
            unit.status(name, worker.replaced(unit.name) if worker is not None else 0, hardware_id)
            for unit in self.units
        ]
        statuses.append(self._engine_status(name, hardware_id))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def _engine_status(self, name: str, hardware_id: str) -> DiagnosticStatus:
        """The node's own status: lifecycle state, the cameras, the model and how it runs, device memory."""
        state = self._state_machine.current_state[1]
        engine = self.engine
        values = {
            "state": state,
            "cameras": ", ".join(u.spec.label for u in self.units),
            "max batch": self.values["max_batch"],
            "model": f"ZoeD_{self.variant.upper()}" if self.variant else "",
            "checkpoint": self.checkpoint_path,
            "device": str(self.device) if self.device is not None else "",
            "precision": "",
            "execution": "",
            "routing": self.values["routing"],
            **self._device_memory(),
        }
        if engine is not None:  # precision, execution, the rung in use and why, device failures, batch sizes seen
            values.update(engine.diagnostics())
        if self.last_error:
            values["last error"] = self.last_error
        if state != "active":
            level, message = DiagnosticStatus.WARN, state + (f": {self.last_error}" if self.last_error else "")
        else:
            degraded = engine is not None and engine.degraded
            level = DiagnosticStatus.WARN if degraded else DiagnosticStatus.OK
            message = f"{len(self.units)} camera(s), {values.get('execution rung', '')}".rstrip(", ")
            message += ", degraded (see fallbacks)" if degraded else ""
        return DiagnosticStatus(
            level=level,
            name=f"{name}: {DIAGNOSTIC_NAME} engine",
            hardware_id=hardware_id,
            message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )

    def _device_memory(self) -> dict[str, str]:
        if self.device is None or self.device.type != "cuda":
            return {}
        mib = 1 << 20
        return {
            "device memory allocated (MiB)": f"{torch.cuda.memory_allocated(self.device) / mib:.0f}",
            "device memory reserved (MiB)": f"{torch.cuda.memory_reserved(self.device) / mib:.0f}",
            "device memory peak (MiB)": f"{torch.cuda.max_memory_allocated(self.device) / mib:.0f}",
        }
