"""A soak test: the node against a camera for a long time, watching for leaks, creep and unexplained drops.

Three processes, as on a robot: the demo camera (``zoedepth_ros.ros.demo_camera``) at ``rate`` Hz, the node, and
this process subscribing ``depth/image`` and ``/diagnostics``. Every ``sample_s`` seconds it reads the node's
resident memory, open file descriptors and threads from /proc. At the end it reports:

- the RSS slope (MB/min, least squares over the samples after the warm-up), RSS at start and end;
- open fds and threads after the warm-up and at the end;
- latency (depth receipt minus the image stamp; one host, one clock) p50/p99 in the first and last window;
- the node's own counts from its last diagnostics: frames, drops by reason, pairing, transport losses.

Targets (README): RSS slope below 0.5 MB/min after warm-up, no latency creep beyond noise, no unexplained drops
("dropped (newer frame arrived)" is the latest-frame rule working, not a fault). rclpy is imported only when a
soak runs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .isolation import applied_env, default_domain_id, isolated_ros_env, log_tail, ros_args, start_python_module
from .isolation import stop_node as stop_process
from .stats import summarize

RSS_SLOPE_TARGET = 0.5  # MB/min
UNEXPLAINED = ("error", "out_of_memory", "bad_frame", "camera_info_late", "no_camera_info")


@dataclass
class ProcSample:
    t: float  # seconds since the start of the soak
    rss_mb: float
    fds: int
    threads: int


@dataclass
class SoakConfig:
    checkpoint: str
    device: str = "cpu"
    rate: float = 5.0
    width: int = 320
    height: int = 240
    duration_s: float = 1800.0
    warmup_s: float = 120.0
    window_s: float = 300.0  # latency windows at the start (after warm-up) and at the end
    sample_s: float = 10.0
    node_params: dict[str, Any] = field(default_factory=dict)


def proc_sample(pid: int, t: float) -> ProcSample:
    """Resident memory (MB), open descriptors and threads of ``pid`` (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    return ProcSample(t, rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"]))


def slope_per_min(samples: list[ProcSample]) -> float:
    """Least-squares RSS slope in MB/min (NaN with fewer than two samples)."""
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mt = sum(s.t for s in samples) / n
    mr = sum(s.rss_mb for s in samples) / n
    var = sum((s.t - mt) ** 2 for s in samples)
    if var == 0:
        return math.nan
    return 60.0 * sum((s.t - mt) * (s.rss_mb - mr) for s in samples) / var


def floor_slope_per_min(samples: list[ProcSample], bucket_s: float = 60.0) -> float:
    """Slope (MB/min) of each minute's lowest RSS: a leak raises the floor, while the allocator's churn (large
    buffers handed back to the OS and taken again, +-100 MB from one sample to the next) mostly moves the peaks."""
    buckets: dict[int, ProcSample] = {}
    for s in samples:
        key = int(s.t // bucket_s)
        if key not in buckets or s.rss_mb < buckets[key].rss_mb:
            buckets[key] = s
    return slope_per_min(list(buckets.values()))


def latency_windows(
    arrivals: list[tuple[float, float]], start: float, end: float, window: float
) -> dict[str, dict[str, Any]]:
    """p50/p99 of latencies (ms) whose arrival time falls in [start, start+window) and [end-window, end)."""
    first = [lat for t, lat in arrivals if start <= t < start + window]
    last = [lat for t, lat in arrivals if end - window <= t < end]
    return {"first": summarize(first), "last": summarize(last)}


def run_soak(cfg: SoakConfig, log=print, workdir: Path | None = None) -> dict[str, Any]:
    """Run the soak and return the report (also see ``render``)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    workdir = workdir or Path(tempfile.mkdtemp(prefix="zoedepth_soak_"))
    env = isolated_ros_env(default_domain_id())
    params = {"checkpoint": cfg.checkpoint, "device": cfg.device, "publish_points": True, **cfg.node_params}
    node_log, camera_log = workdir / "node.log", workdir / "camera.log"
    node = start_python_module("zoedepth_ros.ros.node", ros_args(params), env, node_log)
    camera = start_python_module(
        "zoedepth_ros.ros.demo_camera",
        ros_args({"rate": float(cfg.rate), "width": cfg.width, "height": cfg.height}),
        env,
        camera_log,
    )
    arrivals: list[tuple[float, float]] = []  # (seconds since start, latency ms)
    samples: list[ProcSample] = []
    last_diag: dict[str, str] = {}
    with applied_env(env):
        context = rclpy.Context()
        rclpy.init(context=context)
        sink = rclpy.create_node("zoedepth_soak", context=context)
        t0 = time.monotonic()
        wall0 = time.time()

        def on_depth(msg) -> None:
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            arrivals.append((time.monotonic() - t0, 1e3 * (time.time() - stamp)))

        def on_diag(msg) -> None:
            for status in msg.status:
                if status.name.endswith(": ZoeDepth"):
                    last_diag.clear()
                    last_diag.update({kv.key: kv.value for kv in status.values})

        sink.create_subscription(Image, "depth/image", on_depth, qos_profile_sensor_data)
        sink.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(sink)
        next_sample, next_note = 0.0, 60.0
        try:
            while (now := time.monotonic() - t0) < cfg.duration_s:
                executor.spin_once(timeout_sec=0.05)
                if node.poll() is not None or camera.poll() is not None:
                    raise RuntimeError(
                        f"a process of the soak exited early:\n{log_tail(node_log)}\n{log_tail(camera_log)}"
                    )
                if now >= next_sample:
                    samples.append(proc_sample(node.pid, now))
                    next_sample += cfg.sample_s
                if now >= next_note:
                    log(
                        f"soak: {now / 60:.0f}/{cfg.duration_s / 60:.0f} min, {len(arrivals)} depth images, "
                        f"RSS {samples[-1].rss_mb:.1f} MB"
                    )
                    next_note += 60.0
        finally:
            end = time.monotonic() - t0
            stop_process(camera)
            stop_process(node)
            executor.shutdown()
            sink.destroy_node()
            rclpy.shutdown(context=context)
    after = [s for s in samples if s.t >= cfg.warmup_s] or samples
    drops = {k[len("dropped (") : -1]: int(v) for k, v in last_diag.items() if k.startswith("dropped (")}
    lost = {
        k[len("lost in transport (") : -1]: int(v) for k, v in last_diag.items() if k.startswith("lost in transport")
    }
    return {
        "config": {**cfg.__dict__, "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(wall0))},
        "duration_s": end,
        "depth_images": len(arrivals),
        "rate_hz": len(arrivals) / end if end > 0 else 0.0,
        "rss_mb": {"start": after[0].rss_mb if after else math.nan, "end": after[-1].rss_mb if after else math.nan},
        "rss_slope_mb_per_min": slope_per_min(after),
        "rss_floor_slope_mb_per_min": floor_slope_per_min(after),
        "rss_floor_slope_second_half_mb_per_min": floor_slope_per_min([s for s in samples if s.t >= end / 2]),
        "samples": [s.__dict__ for s in samples],
        "fds": {"start": after[0].fds if after else 0, "end": after[-1].fds if after else 0},
        "threads": {"start": after[0].threads if after else 0, "end": after[-1].threads if after else 0},
        "latency_ms": latency_windows(arrivals, cfg.warmup_s, end, cfg.window_s),
        "drops": drops,
        "lost_in_transport": lost,
        "frames_processed": int(last_diag.get("frames processed", 0)),
        "images_received": int(last_diag.get("images received", 0)),
        "unexplained_drops": sum(n for reason, n in drops.items() if reason in UNEXPLAINED) + sum(lost.values()),
        "logs": {"node": str(node_log), "camera": str(camera_log)},
    }


def render(report: dict[str, Any]) -> str:
    """The soak report as a short table, with the targets' verdicts."""
    lat = report["latency_ms"]
    slope, floor = report["rss_slope_mb_per_min"], report["rss_floor_slope_mb_per_min"]
    cfg = report["config"]
    rows = [
        (
            "run",
            f"{report['duration_s'] / 60:.1f} min at {cfg['rate']:g} Hz, {cfg['width']}x{cfg['height']}, "
            f"{cfg['device']}, started {cfg['started']}",
        ),
        (
            "depth images received",
            f"{report['depth_images']} ({report['rate_hz']:.2f} Hz); node processed "
            f"{report['frames_processed']} of {report['images_received']} images",
        ),
        ("RSS after warm-up / at end", f"{report['rss_mb']['start']:.1f} / {report['rss_mb']['end']:.1f} MB"),
        ("RSS slope after warm-up", f"{slope:.3f} MB/min, least squares over all samples"),
        (
            "RSS floor slope after warm-up",
            f"{floor:.3f} MB/min, of each minute's lowest sample "
            f"({'PASS' if floor < RSS_SLOPE_TARGET else 'FAIL'}: < {RSS_SLOPE_TARGET})",
        ),
        (
            "RSS floor slope, second half",
            f"{report['rss_floor_slope_second_half_mb_per_min']:.3f} MB/min "
            "(a step up that then stays flat is the allocator, a slope is a leak)",
        ),
        (
            "open fds / threads, start -> end",
            f"{report['fds']['start']} -> {report['fds']['end']} / "
            f"{report['threads']['start']} -> {report['threads']['end']}",
        ),
        ("latency p50/p99, first window", f"{lat['first']['p50_ms']:.1f} / {lat['first']['p99_ms']:.1f} ms"),
        ("latency p50/p99, last window", f"{lat['last']['p50_ms']:.1f} / {lat['last']['p99_ms']:.1f} ms"),
        ("drops by reason", ", ".join(f"{k} {v}" for k, v in sorted(report["drops"].items())) or "none"),
        ("lost in transport", ", ".join(f"{k} {v}" for k, v in sorted(report["lost_in_transport"].items()))),
        ("unexplained drops", str(report["unexplained_drops"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
