"""End-to-end latency and throughput of the node through real DDS: camera process -> node process -> this process.

Three processes, as in a deployment: a camera (``python -m zoedepth_ros.benchmarks.dds camera``) publishes
``image`` + ``camera_info`` on a precise wall-clock schedule, stamped with the wall-clock time of publishing;
the node runs as ``python -m zoedepth_ros.ros.node``; this process subscribes ``depth/image``, ``points`` and
``/diagnostics``. Latency is receive time minus header stamp (one host, one clock), so it covers the camera's
serialization, transport, the node's queueing, inference and publishing, and our deserialization.

Warm-up: the first inferences are slow (allocator, cuDNN autotuning, lazy initialization), so a frame counts only
if it was stamped in the measured window ``[first output + warmup_s, first output + warmup_s + duration_s)``,
where "first output" is when the first depth image or cloud of the run arrived here. The camera starts when the
node's subscription is matched and runs until that window has passed, so ``duration_s`` is the length of the
measured window, not of the whole run.

rclpy is imported only when a measurement runs; importing this module needs no ROS.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ros.compat import publisher_count
from ..ros.params import BY_NAME, validate
from .isolation import (
    applied_env,
    child_main,
    default_domain_id,
    isolated_ros_env,
    log_tail,
    start_node,
    start_python_module,
    stop_node,
    stop_via_stdin,
    stop_when_stdin_closes,
)
from .stats import json_safe, summarize

MODULE = "zoedepth_ros.benchmarks.dds"
SPIN_S = 0.0005  # the camera busy-waits this long before each tick; sleeping alone overshoots by ~0.1 ms+
DIAG_NAME_SUFFIX = ": ZoeDepth"
LATEST_FRAME_KEY = "dropped (newer frame arrived)"


class NodeStartError(RuntimeError):
    """The node exited (or never came up) before the benchmark could start; the message has its log tail."""


# ---------------------------------------------------------------------------------------------------- camera


def texture(width: int, height: int, bytes_per_pixel: int) -> bytes:
    """A deterministic textured frame (any byte pattern is a valid pixel for the 8/16-bit encodings).

    Structured rather than random so a real model gives a non-trivial depth map.
    """
    import numpy as np

    y = np.arange(height, dtype=np.float64)[:, None]
    x = np.arange(width * bytes_per_pixel, dtype=np.float64)[None, :]
    checker = ((x // (8 * bytes_per_pixel)) + (y // 8)) % 2
    values = 107.5 + 70.0 * np.sin(x / (7.0 * bytes_per_pixel)) * np.cos(y / 9.0) + 40.0 * checker
    return np.clip(values, 0, 255).astype(np.uint8).tobytes()


def pinhole(width: int, height: int, hfov_deg: float = 66.0) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of an ideal camera with a typical ~66 degree horizontal field of view and square pixels."""
    f = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
    return f, f, (width - 1) / 2.0, (height - 1) / 2.0


def pinhole_info(width: int, height: int):
    """A CameraInfo of the :func:`pinhole` camera (no distortion, identity rectification); header left empty."""
    from sensor_msgs.msg import CameraInfo

    fx, fy, cx, cy = pinhole(width, height)
    return CameraInfo(
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def camera_parser(module: str, *, match_timeout: float, max_duration: float) -> argparse.ArgumentParser:
    """The options every benchmark camera child takes: its size and rate, how long it waits for subscribers and
    runs at most, and where it writes its result (``module``'s ``camera`` command)."""
    ap = argparse.ArgumentParser(prog=f"python -m {module} camera")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--match-timeout", type=float, default=match_timeout)
    ap.add_argument("--max-duration", type=float, default=max_duration, help="stop by itself after this long (s)")
    ap.add_argument("--result", type=Path, required=True)
    return ap


def camera_argv(result: Path, **options: Any) -> list[str]:
    """A camera child's command line: ``camera``, ``options`` in their order (``match_timeout=60`` is
    ``--match-timeout 60``), then ``--result RESULT``."""
    argv = ["camera"]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return [*argv, "--result", str(result)]


def _qos_profile(reliability: str, depth: int):
    from ..ros.qos import profile

    return profile(reliability, depth)


def camera_main(argv: Sequence[str]) -> int:
    """The camera process: wait for the node's subscription, then publish on a fixed schedule until told to stop.

    Writes ``{"published", "stamps_ns", "late", "first_publish_ns"}`` as JSON to ``--result``.
    """
    ap = camera_parser(MODULE, match_timeout=120.0, max_duration=600.0)
    ap.add_argument("--encoding", default="rgb8")
    ap.add_argument("--bytes-per-pixel", type=int, default=3)
    ap.add_argument("--reliability", default="best_effort", choices=("best_effort", "reliable"))
    ap.add_argument("--depth", type=int, default=1)
    args = ap.parse_args(argv)

    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    stop = stop_when_stdin_closes()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node("zoedepth_bench_camera", context=context)
    stamps: list[int] = []
    late = 0
    status = 0
    try:
        qos = _qos_profile(args.reliability, args.depth)
        pub_image = node.create_publisher(Image, "image", qos)
        pub_info = node.create_publisher(CameraInfo, "camera_info", qos)
        w, h = args.width, args.height
        image = Image(height=h, width=w, encoding=args.encoding, is_bigendian=0, step=w * args.bytes_per_pixel)
        image.data = _payload(texture(w, h, args.bytes_per_pixel))  # built once; only the stamp changes
        image.header.frame_id = "camera_optical_frame"
        info = pinhole_info(w, h)
        info.header.frame_id = image.header.frame_id

        deadline = time.monotonic() + args.match_timeout
        while pub_image.get_subscription_count() == 0 or pub_info.get_subscription_count() == 0:
            if stop.is_set() or time.monotonic() > deadline:
                print(f"camera: no subscriber on image/camera_info after {args.match_timeout} s", file=sys.stderr)
                return 2
            time.sleep(0.01)

        period = 1.0 / args.rate
        start = tick = time.perf_counter()
        while not stop.is_set() and time.perf_counter() - start < args.max_duration:
            wait = tick - time.perf_counter() - SPIN_S
            if wait > 0 and stop.wait(wait):
                break
            while time.perf_counter() < tick:
                pass
            stamp = time.time_ns()
            sec, nanosec = divmod(stamp, 1_000_000_000)
            for msg in (info, image):  # info first, so the node usually finds the exact-stamp match
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            pub_info.publish(info)
            pub_image.publish(image)
            stamps.append(stamp)
            tick += period
            if time.perf_counter() - tick > period:  # a whole period behind: resynchronise instead of bursting
                late += 1
                tick = time.perf_counter()
    except KeyboardInterrupt:
        status = 130
    finally:
        args.result.write_text(
            json.dumps(
                {
                    "published": len(stamps),
                    "stamps_ns": stamps,
                    "late": late,
                    "first_publish_ns": stamps[0] if stamps else None,
                }
            )
        )
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return status


def _payload(data: bytes):
    """array.array('B'): rosidl's fast path (numpy arrays or memoryviews are ~100x slower to assign)."""
    import array

    out = array.array("B")
    out.frombytes(data)
    return out


# ---------------------------------------------------------------------------------------------------- harness


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _topic_stats(samples: list[tuple[int, int]], start_ns: int, end_ns: int) -> dict[str, Any]:
    """Latency summary, count and achieved rate of the frames stamped in [start_ns, end_ns)."""
    measured = [(s, r) for s, r in samples if start_ns <= s < end_ns]
    latencies = [(r - s) / 1e6 for s, r in measured]
    rate = math.nan
    if len(measured) >= 2:
        first, last = min(r for _, r in measured), max(r for _, r in measured)
        if last > first:
            rate = (len(measured) - 1) / ((last - first) / 1e9)  # n arrivals span n - 1 intervals
    return {**summarize(latencies), "received": len(measured), "received_total": len(samples), "rate_hz": rate}


def _drops(values: dict[str, str] | None) -> tuple[dict[str, Any], int | None]:
    """The node's cumulative drop counters (whole run, warm-up included) and its processed-frame count."""
    if values is None:
        return {"latest_frame_rule": None, "other": {}}, None
    other = {
        k: int(v)
        for k, v in values.items()
        if (k.startswith("dropped (") or k.startswith("skipped (")) and k != LATEST_FRAME_KEY
    }
    processed = values.get("frames processed")
    return (
        {"latest_frame_rule": int(values.get(LATEST_FRAME_KEY, 0)), "other": other},
        int(processed) if processed is not None else None,
    )


def node_parameters(checkpoint: str, node_params: dict[str, Any], color: bool) -> dict[str, Any]:
    """The node's parameters for the run, checked against the parameter table before anything starts."""
    params = {"checkpoint": str(checkpoint), "point_cloud.color": bool(color), **node_params}
    unknown = sorted(set(params) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown node parameter(s): {', '.join(unknown)}")
    reasons = validate(params)
    if reasons:
        raise ValueError("invalid node parameters: " + "; ".join(reasons))
    return params


def _param(params: dict[str, Any], name: str) -> Any:
    return params.get(name, BY_NAME[name].default)


@dataclass(frozen=True)
class EndToEndConfig:
    """What one end-to-end run sends and for how long; checked when built, before anything starts.

    ``duration_s`` is the measured window after ``warmup_s`` (see the module doc); ``timeout_s`` bounds each wait:
    the node coming up, its first output, and the final outputs and diagnostics after the camera stops.
    ``domain_id`` defaults to :func:`default_domain_id`.
    """

    width: int
    height: int
    rate_hz: float
    duration_s: float
    encoding: str = "rgb8"
    color: bool = False
    warmup_s: float = 2.0
    timeout_s: float = 180.0
    domain_id: int | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.rate_hz <= 0 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError(
                f"need positive width, height, rate_hz and duration_s: {self.width}x{self.height} @ {self.rate_hz} "
                f"Hz for {self.duration_s} s (warm-up {self.warmup_s} s)"
            )


def run_end_to_end(checkpoint: str, node_params: dict[str, Any], config: EndToEndConfig) -> dict[str, Any]:
    """Camera -> node -> here over DDS for ``config.duration_s`` of measured frames (after warm-up, see the module doc).

    ``node_params`` are node parameters on top of ``checkpoint`` and ``point_cloud.color`` (= ``config.color``),
    e.g. ``{"device": "cuda", "precision": "fp16"}``.

    Returns a strict-JSON dict (non-finite numbers as None): the run's settings (``width``, ``height``,
    ``rate_hz``, ``duration_s``, ``warmup_s``, ``encoding``, ``color``, ``domain_id``, ``node_params``);
    ``published`` (all camera frames) and ``published_measured`` (stamped in the window); ``camera_late``
    (schedule slips of a whole period); ``first_output_s`` (first camera frame to first output); ``depth`` and
    ``points``: ``summarize()`` of the window's latencies plus ``received`` (in the window), ``received_total``
    and ``rate_hz`` (achieved, from arrival times); ``dropped``: ``{"latest_frame_rule": n, "other":
    {"dropped (reason)" or "skipped (no subscribers)": n}}`` and ``node_processed``, the node's own cumulative
    counters for the whole run (warm-up included; ``diagnostics_final`` says they were published after the last
    output); ``lost`` = ``published_measured`` - ``depth.received``.
    """
    import rclpy  # noqa: F401  (fail before starting anything when ROS is missing)

    bytes_per_pixel = _camera_bytes_per_pixel(config)
    params = node_parameters(checkpoint, node_params, config.color)
    if _param(params, "input_transport") != "raw":
        raise ValueError("the benchmark camera publishes raw images: input_transport must be raw")
    domain = default_domain_id() if config.domain_id is None else int(config.domain_id)
    env = isolated_ros_env(domain)

    with tempfile.TemporaryDirectory(prefix="zoedepth_bench_") as tmp, applied_env(env):
        run = _Run(Path(tmp), params, env)
        try:
            run.sink = _Sink(domain, _param(params, "qos.output_reliability"))
            _wait_for_node(run, config.timeout_s)
            run.camera = start_python_module(
                MODULE,
                _camera_args(config, params, bytes_per_pixel, run.camera_result),
                env,
                run.camera_log,
                stdin=subprocess.PIPE,
            )
            window = _drive(run, config)
            cam, diag = _collect(run, config.timeout_s)
        finally:
            run.close()
    return _report(config, domain, params, run.sink, window, cam, diag)


def _camera_bytes_per_pixel(config: EndToEndConfig) -> int:
    """The camera's bytes per pixel for ``config.encoding``; ValueError for an encoding it cannot send."""
    from ..engine import encodings  # torch, only for the encoding table; the camera child needs neither

    info = encodings.encoding_info(config.encoding)
    if info.is_yuv422 and config.width % 2:
        raise ValueError(f"{config.encoding} needs an even width, got {config.width}")
    return info.bytes_per_pixel


def _camera_args(config: EndToEndConfig, params: dict[str, Any], bytes_per_pixel: int, result: Path) -> list[str]:
    """The camera child's command line: the node's input QoS, and a lifetime bounded by every wait of the run."""
    return camera_argv(
        result,
        width=config.width,
        height=config.height,
        rate=config.rate_hz,
        encoding=config.encoding,
        bytes_per_pixel=bytes_per_pixel,
        reliability=_param(params, "qos.input_reliability"),
        depth=1,
        match_timeout=config.timeout_s,
        max_duration=2 * config.timeout_s + config.warmup_s + config.duration_s,
    )


class _Run:
    """The processes of one run and their files, so that every phase can check the children are still alive.

    Built by starting the node (its log in ``work``); the sink and the camera are added as the run starts them.
    """

    def __init__(self, work: Path, params: dict[str, Any], env: dict[str, str]) -> None:
        self.node_log = work / "node.log"
        self.camera_log = work / "camera.log"
        self.camera_result = work / "camera.json"
        self.node = start_node(params, env, self.node_log)
        self.sink: _Sink | None = None
        self.camera: subprocess.Popen | None = None

    def check_node(self, phase: str) -> None:
        if self.node.poll() is not None:
            kind = NodeStartError if phase == "start" else RuntimeError
            raise kind(
                f"the zoedepth node exited with code {self.node.returncode} during {phase}; "
                f"last lines of its log:\n{log_tail(self.node_log)}"
            )

    def check_camera(self) -> None:
        if self.camera.poll() is not None:
            raise RuntimeError(
                f"the camera process exited early with code {self.camera.returncode}; last "
                f"lines of its log:\n{log_tail(self.camera_log)}"
            )

    def close(self) -> None:
        """Camera first (it stops on its own when stdin closes), then the node, then our participant."""
        if self.camera is not None:
            stop_via_stdin(self.camera)  # it stops within a period
        stop_node(self.node)
        if self.sink is not None:
            self.sink.close()


def _wait_for_node(run: _Run, timeout_s: float) -> None:
    """Start: until the node's publishers match our subscriptions (it loaded its model and activated)."""
    deadline = time.monotonic() + timeout_s
    while not run.sink.matched():
        run.check_node("start")
        if time.monotonic() > deadline:
            raise NodeStartError(
                f"the zoedepth node did not come up within {timeout_s} s; last lines of "
                f"its log:\n{log_tail(run.node_log)}"
            )
        run.sink.spin(0.05)


def _drive(run: _Run, config: EndToEndConfig) -> tuple[int, int]:
    """Drive: wait for the first output, then receive until the measured window has passed; returns the window."""
    deadline = time.monotonic() + config.timeout_s
    while run.sink.first_output_ns is None:
        run.check_node("warm-up")
        run.check_camera()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no output from the node within {config.timeout_s} s of the camera starting; last "
                f"lines of its log:\n{log_tail(run.node_log)}"
            )
        run.sink.spin(0.02)
    window_start = run.sink.first_output_ns + round(config.warmup_s * 1e9)
    window_end = window_start + round(config.duration_s * 1e9)
    while time.time_ns() < window_end:
        run.check_node("the run")
        run.check_camera()
        run.sink.spin(0.02)
    return window_start, window_end


def _collect(run: _Run, timeout_s: float) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Collect: stop the camera and read what it published, then the node's last outputs and final diagnostics."""
    run.camera.stdin.close()  # the camera's signal to stop and write its result
    deadline = time.monotonic() + 10.0
    while run.camera.poll() is None and time.monotonic() < deadline:
        run.sink.spin(0.02)
    if run.camera.poll() is None or run.camera.returncode != 0 or not run.camera_result.is_file():
        raise RuntimeError(
            f"the camera process did not finish cleanly (code {run.camera.poll()}); last lines "
            f"of its log:\n{log_tail(run.camera_log)}"
        )
    cam = json.loads(run.camera_result.read_text())
    return cam, run.sink.drain(timeout_s, run.check_node)


def _report(
    config: EndToEndConfig,
    domain: int,
    params: dict[str, Any],
    sink: _Sink,
    window: tuple[int, int],
    cam: dict[str, Any],
    diag: dict[str, str] | None,
) -> dict[str, Any]:
    """Report: the run's settings and what was measured in ``window``, as strict JSON."""
    window_start, window_end = window
    dropped, processed = _drops(diag)
    published_measured = sum(window_start <= s < window_end for s in cam["stamps_ns"])
    depth = _topic_stats(sink.samples["depth"], window_start, window_end)
    first_publish = cam["first_publish_ns"]
    result = {
        "width": config.width,
        "height": config.height,
        "rate_hz": config.rate_hz,
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "encoding": config.encoding,
        "color": config.color,
        "domain_id": domain,
        "published": cam["published"],
        "published_measured": published_measured,
        "camera_late": cam["late"],
        "first_output_s": (sink.first_output_ns - first_publish) / 1e9 if first_publish else math.nan,
        "depth": depth,
        "points": _topic_stats(sink.samples["points"], window_start, window_end),
        "dropped": dropped,
        "node_processed": processed,
        "diagnostics_final": sink.diag_final,
        "lost": published_measured - depth["received"],
        "node_params": params,
    }
    return json_safe(result)


class Participant:
    """This process's own rclpy context, node and executor on ``domain``; ``matched`` once every subscription in
    ``subs`` has a publisher; ``close`` ends all of it."""

    def __init__(self, name: str, domain: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.subs: list = []

    def matched(self) -> bool:
        """True once the publishers for all the subscriptions in ``subs`` are discovered."""
        return all(publisher_count(self.node, s) > 0 for s in self.subs)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


class _Sink(Participant):
    """This process's side: subscriptions to the node's outputs, recording (stamp, receive time) per frame."""

    def __init__(self, domain: int, output_reliability: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, PointCloud2

        super().__init__("zoedepth_bench_sink", domain)
        self.samples: dict[str, list[tuple[int, int]]] = {"depth": [], "points": []}
        self.first_output_ns: int | None = None
        self.last_output_ns = 0
        self.diag: tuple[int, dict[str, str]] | None = None  # (stamp, values) of the newest ZoeDepth status
        self.diag_final = False
        qos = _qos_profile(output_reliability, 10)
        self.subs = [
            self.node.create_subscription(kind, topic, lambda m, k=key: self._on_output(k, m), qos)
            for key, kind, topic in (("depth", Image, "depth/image"), ("points", PointCloud2, "points"))
        ]
        self.subs.append(self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10))

    def _on_output(self, key: str, msg) -> None:
        now = time.time_ns()
        self.samples[key].append((_stamp_ns(msg.header), now))
        self.last_output_ns = now
        if self.first_output_ns is None:
            self.first_output_ns = now

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(DIAG_NAME_SUFFIX):
                self.diag = (_stamp_ns(msg.header), {kv.key: kv.value for kv in status.values})

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def drain(self, timeout_s: float, check_node) -> dict[str, str] | None:
        """Wait for the last frames to come out, then for diagnostics published after that (its counters final).

        Outputs are over once nothing has arrived for max(1 s, 3x the slowest latency seen); the node publishes
        diagnostics every second.
        """
        slowest = max(((r - s) for v in self.samples.values() for s, r in v), default=0)
        settle_ns = max(1_000_000_000, 3 * slowest)
        deadline = time.monotonic() + timeout_s
        while time.time_ns() - self.last_output_ns < settle_ns and time.monotonic() < deadline:
            check_node("the final frames")
            self.spin(0.05)
        quiet_since = time.time_ns()
        while time.monotonic() < deadline:
            if self.diag is not None and self.diag[0] >= quiet_since:
                self.diag_final = True
                break
            check_node("the final diagnostics")
            self.spin(0.05)
        return self.diag[1] if self.diag is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoedepth_ros.benchmarks.dds camera ...``: the camera process of :func:`run_end_to_end`."""
    return child_main(argv, MODULE, "camera", " --width W --height H --rate HZ --result PATH [...]", camera_main)


if __name__ == "__main__":
    sys.exit(main())
