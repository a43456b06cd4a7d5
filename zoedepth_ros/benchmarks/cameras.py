"""Several cameras on one node against one node per camera: throughput, latency per camera, memory (``cameras``).

For each camera count N: one node with ``cameras: [cam0, ..., camN-1]`` (one model), and N single-camera nodes
(``-r __ns:=/camI``, a model each), fed by the same camera process: N streams of ``width`` x ``height`` rgb8 at
``rate_hz`` each, triggered together (as a hardware-synchronised rig), stamped with the wall clock when
published. This process subscribes every ``camI/depth/image`` and ``/diagnostics``. Per layout it reports the
aggregate rate of depth images received in the measured window, each camera's p50/p99 latency (receive time
minus stamp), the node processes' RSS (now and peak, summed over the processes) and, on CUDA, their reserved
device memory from the node's diagnostics; for the shared node also the engine's batch sizes.

The target: one node serving the largest N (4 by default) needs at most ``MEMORY_TARGET`` x the memory of one
single-camera node (RSS, and device memory where there is one). rclpy is imported only when a run starts.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .dds import Participant, _payload, camera_argv, camera_parser, pinhole_info, texture
from .isolation import (
    applied_env,
    child_main,
    default_domain_id,
    isolated_ros_env,
    log_tail,
    ros_args,
    start_python_module,
    stop_node,
    stop_when_stdin_closes,
)
from .stats import json_safe, summarize

MODULE = "zoedepth_ros.benchmarks.cameras"
MEMORY_TARGET = 1.25  # one N-camera node vs one single-camera node
MAX_CAMERAS = 16
DEVICE_MEMORY_KEY = "device memory reserved (MiB)"


@dataclass(frozen=True)
class CamerasConfig:
    counts: tuple[int, ...] = (1, 2, 4)
    width: int = 640
    height: int = 480
    rate_hz: float = 10.0
    duration_s: float = 10.0
    warmup_s: float = 3.0
    timeout_s: float = 180.0
    domain_id: int | None = None

    def __post_init__(self) -> None:
        if not self.counts or any(not 1 <= n <= MAX_CAMERAS for n in self.counts):
            raise ValueError(f"camera counts must be 1..{MAX_CAMERAS}, got {list(self.counts)}")
        if min(self.width, self.height) <= 0 or self.rate_hz <= 0 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError(
                f"need a positive size, rate and duration: {self.width}x{self.height} @ {self.rate_hz} Hz for "
                f"{self.duration_s} s"
            )


def camera_names(n: int) -> list[str]:
    return [f"cam{i}" for i in range(n)]


# ---------------------------------------------------------------------------------------------------- camera child


def camera_main(argv: Sequence[str]) -> int:
    """The camera process: N synchronised streams, published once every node subscribes; stops when stdin closes."""
    ap = camera_parser(MODULE, match_timeout=180.0, max_duration=900.0)
    ap.add_argument("--cameras", type=int, required=True)
    args = ap.parse_args(argv)

    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    from ..ros.qos import profile

    stop = stop_when_stdin_closes()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node("zoedepth_bench_cameras", context=context)
    published = 0
    try:
        qos = profile("best_effort", 1)
        w, h = args.width, args.height
        streams = []
        for name in camera_names(args.cameras):
            image = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w)
            image.data = _payload(texture(w, h, 3))
            info = pinhole_info(w, h)
            image.header.frame_id = info.header.frame_id = f"{name}_optical_frame"
            pubs = (
                node.create_publisher(CameraInfo, f"{name}/camera_info", qos),
                node.create_publisher(Image, f"{name}/image", qos),
            )
            streams.append((pubs, (info, image)))
        deadline = time.monotonic() + args.match_timeout
        while not all(p.get_subscription_count() > 0 for pubs, _ in streams for p in pubs):
            if stop.is_set() or time.monotonic() > deadline:
                print(f"camera: not every stream subscribed after {args.match_timeout} s", file=sys.stderr)
                return 2
            time.sleep(0.01)
        period, start = 1.0 / args.rate, time.perf_counter()
        tick = start
        while not stop.is_set() and time.perf_counter() - start < args.max_duration:
            wait = tick - time.perf_counter()
            if wait > 0 and stop.wait(wait):
                break
            sec, nanosec = divmod(time.time_ns(), 1_000_000_000)
            for pubs, msgs in streams:
                for pub, msg in zip(pubs, msgs, strict=True):  # info first: the node pairs it at once
                    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
                    pub.publish(msg)
            published += 1
            tick = max(tick + period, time.perf_counter() - period)  # a whole period behind: no burst
    finally:
        args.result.write_text(json.dumps({"published_per_camera": published}))
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0


# ---------------------------------------------------------------------------------------------------- harness


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process in MB, from /proc; NaN where it cannot be read."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return math.nan, math.nan


class _Sink(Participant):
    """Our participant: every camera's depth image (stamp, arrival) and the newest status of each name."""

    def __init__(self, domain: int, cameras: list[str]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from ..ros.qos import profile

        super().__init__("zoedepth_bench_cameras_sink", domain)
        self.samples: dict[str, list[tuple[int, int]]] = {c: [] for c in cameras}
        self.status: dict[str, dict[str, str]] = {}
        self.subs = [
            self.node.create_subscription(
                Image, f"{c}/depth/image", lambda m, c=c: self._on_depth(c, m), profile("reliable", 10)
            )
            for c in cameras
        ]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_depth(self, camera: str, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.samples[camera].append((stamp, time.time_ns()))

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            self.status[s.name] = {kv.key: kv.value for kv in s.values}

    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=left)


def _start_nodes(layout: str, n: int, params: dict[str, Any], env: dict[str, str], work: Path) -> list:
    """The node processes of one layout, with their logs: ("shared": one node for all; "separate": one each)."""
    procs = []
    if layout == "shared":
        log = work / f"shared{n}.log"
        procs.append(
            (
                start_python_module("zoedepth_ros.ros.node", ros_args(params | {"cameras": camera_names(n)}), env, log),
                log,
            )
        )
    else:
        for name in camera_names(n):
            log = work / f"separate{n}_{name}.log"
            args = [*ros_args(params), "-r", f"__ns:=/{name}"]
            procs.append((start_python_module("zoedepth_ros.ros.node", args, env, log), log))
    return procs


def _check(procs: list, phase: str) -> None:
    for proc, log in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"a node exited with code {proc.returncode} during {phase}:\n{log_tail(log)}")


def run_layout(
    layout: str, n: int, checkpoint: str, node_params: dict[str, Any], config: CamerasConfig, log=print
) -> dict[str, Any]:
    """One measurement: ``layout`` "shared" (one node, N cameras) or "separate" (N nodes), N camera streams."""
    import rclpy  # noqa: F401  (fail before starting anything when ROS is missing)

    domain = default_domain_id() if config.domain_id is None else int(config.domain_id)
    env = isolated_ros_env(domain)
    params = {"checkpoint": str(checkpoint), "publish_points": False, **node_params}
    cameras = camera_names(n)
    with tempfile.TemporaryDirectory(prefix="zoedepth_bench_cameras_") as tmp, applied_env(env):
        work = Path(tmp)
        procs = _start_nodes(layout, n, params, env, work)
        sink, camera = None, None
        try:
            sink = _Sink(domain, cameras)
            deadline = time.monotonic() + config.timeout_s
            while not sink.matched():
                _check(procs, "start-up")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {layout} node(s) did not come up within {config.timeout_s} s")
                sink.spin(0.05)
            result = work / "camera.json"
            camera = start_python_module(
                MODULE,
                camera_argv(
                    result,
                    cameras=n,
                    width=config.width,
                    height=config.height,
                    rate=config.rate_hz,
                    match_timeout=config.timeout_s,
                ),
                env,
                work / "camera.log",
                stdin=subprocess.PIPE,
            )
            deadline = time.monotonic() + config.timeout_s
            while not all(sink.samples.values()):
                _check(procs, "warm-up")
                if camera.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no depth from every camera; camera log:\n{log_tail(work / 'camera.log')}")
                sink.spin(0.05)
            start = time.time_ns() + round(config.warmup_s * 1e9)
            end = start + round(config.duration_s * 1e9)
            rss, peak = math.nan, math.nan
            while time.time_ns() < end + 1e9:  # one more second for the window's last frames to arrive
                _check(procs, "the run")
                sink.spin(0.5)
                mem = [_memory_mb(p.pid) for p, _ in procs]
                rss, peak = sum(m[0] for m in mem), sum(m[1] for m in mem)
            camera.stdin.close()
            camera.wait(timeout=30)
            sink.spin(1.5)  # the newest diagnostics
        finally:
            if camera is not None and camera.poll() is None:
                camera.kill()
            for proc, _ in procs:
                stop_node(proc)
            if sink is not None:
                sink.close()
    per_camera = {}
    for name in cameras:
        lat = [(r - s) / 1e6 for s, r in sink.samples[name] if start <= s < end]
        per_camera[name] = {**summarize(lat), "rate_hz": len(lat) / config.duration_s}
    engines = [v for k, v in sink.status.items() if k.endswith(": ZoeDepth engine")]
    statuses = [v for k, v in sink.status.items() if ": ZoeDepth" in k and not k.endswith(" engine")]
    device = [float(e[DEVICE_MEMORY_KEY]) for e in engines if e.get(DEVICE_MEMORY_KEY)]
    row = {
        "layout": layout,
        "cameras": n,
        "nodes": len(procs),
        "aggregate_rate_hz": sum(c["rate_hz"] for c in per_camera.values()),
        "offered_rate_hz": n * config.rate_hz,
        "per_camera": per_camera,
        "rss_mb": rss,
        "rss_peak_mb": peak,
        "device_reserved_mb": sum(device) if device else None,
        "batch_sizes_seen": engines[0].get("batch sizes seen") if layout == "shared" and engines else None,
        "dropped_newer_frame": sum(int(s.get("dropped (newer frame arrived)", 0)) for s in statuses),
    }
    log(
        f"  {layout} {n} camera(s): {row['aggregate_rate_hz']:.1f} Hz in all, RSS {rss:.0f} MB"
        + (f", batches {row['batch_sizes_seen']}" if row["batch_sizes_seen"] else "")
    )
    return row


def memory_target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One node with the most cameras against one single-camera node: RSS (and device memory) ratio."""
    shared = {r["cameras"]: r for r in rows if r["layout"] == "shared"}
    if 1 not in shared or max(shared) == 1:
        return {"target": "", "passed": None, "note": "needs a count of 1 and one above it"}
    n = max(shared)
    ratios = {"rss": shared[n]["rss_mb"] / shared[1]["rss_mb"]}
    if shared[n]["device_reserved_mb"] and shared[1]["device_reserved_mb"]:
        ratios["device"] = shared[n]["device_reserved_mb"] / shared[1]["device_reserved_mb"]
    finite = [v for v in ratios.values() if math.isfinite(v)]
    # Shown, not judged: the peak includes a batch's activations, which grow with max_batch (see README).
    peak = shared[n]["rss_peak_mb"] / shared[1]["rss_peak_mb"] if shared[1].get("rss_peak_mb") else math.nan
    return {
        "target": f"one {n}-camera node <= {MEMORY_TARGET:g}x the memory of one single-camera node",
        "limit": f"<= {MEMORY_TARGET:g}x",
        "measured": ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
        + (f" (peak rss {peak:.2f}x)" if math.isfinite(peak) else ""),
        "ratios": ratios,
        "peak_rss_ratio": peak,
        "passed": bool(finite) and all(v <= MEMORY_TARGET for v in finite),
    }


def run_cameras(checkpoint: str, node_params: dict[str, Any], config: CamerasConfig, log=print) -> dict[str, Any]:
    """Every layout for every count (count 1 once: both layouts are the same node); strict JSON."""
    rows = []
    for n in config.counts:
        for layout in ("shared", "separate") if n > 1 else ("shared",):
            rows.append(run_layout(layout, n, checkpoint, node_params, config, log))
    return json_safe(
        {"config": asdict(config), "node_params": node_params, "rows": rows, "target": memory_target(rows)}
    )


def render(report: dict[str, Any]) -> list[list[Any]]:
    """Table rows: layout, cameras, nodes, aggregate Hz, worst camera p50 / p99, RSS, peak RSS, device MB, batches."""
    rows = []
    for r in report["rows"]:
        cams = r["per_camera"].values()
        p50 = max((c["p50_ms"] for c in cams if c["p50_ms"] is not None), default=None)
        p99 = max((c["p99_ms"] for c in cams if c["p99_ms"] is not None), default=None)
        rows.append(
            [
                r["layout"],
                r["cameras"],
                r["nodes"],
                r["aggregate_rate_hz"],
                p50,
                p99,
                r["rss_mb"],
                r["rss_peak_mb"],
                r["device_reserved_mb"],
                r["batch_sizes_seen"] or "",
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoedepth_ros.benchmarks.cameras camera ...``: the camera process of :func:`run_layout`."""
    return child_main(argv, MODULE, "camera", " --cameras N --width W --height H --rate HZ --result PATH", camera_main)


if __name__ == "__main__":
    sys.exit(main())
