"""``zoedepth-ros-demo``: a first run that shows something, with no camera and no ROS launch tools.

Starts the demo camera and the depth node as two processes on the current ROS domain, subscribes to their
depth image and cloud, and prints what arrives every few seconds (rate, size, depth range), so a fresh
install ends with depth and a cloud flowing. The checkpoint is fetched on first use (``download``). Ctrl-C
(or SIGTERM) stops all of it; ``--seconds N`` stops after N seconds, exiting 1 if no depth or cloud came.
All three processes (camera, node, this monitor) load the shipped Fast DDS large-data profile, so the 640x480
images and clouds arrive whole on every distro, unless the user set a middleware choice of their own
(``zoedepth_ros.ros.fastdds.demo_env``).

    zoedepth-ros-demo                                   # ZoeD_M12_NK, fetched once into the weights cache
    zoedepth-ros-demo --device cpu --rate 1 -- -p flip_aug:=true     # after --: more node --ros-args
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from zoedepth_ros.benchmarks.isolation import applied_env
from zoedepth_ros.ros.fastdds import demo_env
from zoedepth_ros.ros.signals import Interrupted, StopSignals

PROG = "zoedepth-ros-demo"
REPORT_EVERY_S = 3.0


@dataclass
class Seen:
    """What arrived on one topic: arrival times (for the rate) and a one-line summary of the last message."""

    times: deque[float] = field(default_factory=lambda: deque(maxlen=30))
    count: int = 0
    last: str = ""

    def add(self, summary: str) -> None:
        self.times.append(time.monotonic())
        self.count += 1
        self.last = summary

    def rate(self) -> float:
        t = self.times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else 0.0


def _depth_summary(msg) -> str:
    import numpy as np

    depth = np.frombuffer(msg.data, dtype="<f4")
    finite = depth[np.isfinite(depth)]
    span = f"{finite.min():.2f}-{finite.max():.2f} m" if finite.size else "no valid depth"
    return f"{msg.width}x{msg.height}, {span}"


def _cloud_summary(msg) -> str:
    return f"{msg.width * msg.height} points, frame {msg.header.frame_id or '(none)'}"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="ZoeD_M12_NK", help="official name, .pt file or HF folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--rate", type=float, default=5.0, help="demo camera rate in Hz (default 5)")
    p.add_argument("--size", default="640x480", help="demo image size WxH (default 640x480)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("node_args", nargs="*", help="after --: more --ros-args for the node (e.g. -p flip_aug:=true)")
    args = p.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be WxH, e.g. 640x480; got {args.size!r}")
    if not (args.rate > 0 and math.isfinite(args.rate)):
        p.error(f"--rate must be a positive number of Hz; got {args.rate}")
    return args


def _children(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    camera = [
        "-m",
        "zoedepth_ros.ros.demo_camera",
        "--ros-args",
        "-p",
        f"rate:={args.rate}",
        "-p",
        f"width:={args.width}",
        "-p",
        f"height:={args.height}",
    ]
    node = [
        "-m",
        "zoedepth_ros.ros.node",
        "--ros-args",
        "-p",
        f"checkpoint:={args.checkpoint}",
        "-p",
        f"device:={args.device}",
        *args.node_args,
    ]
    return [("demo camera", [sys.executable, *camera]), ("zoedepth node", [sys.executable, *node])]


def _stop(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGINT each child (they exit 0 on it), then SIGKILL what is left after ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # The camera, the node and this monitor: every process that sends or receives the demo's images and clouds.
    env, note = demo_env(os.environ, processes=3)
    print(f"{PROG}: {note}", flush=True)
    with applied_env(env):  # this process's participant and (inherited) the children's
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    stop = StopSignals().install()
    procs: list[subprocess.Popen] = []
    names: list[str] = []
    rclpy = None
    seen = {"depth/image": Seen(), "points": Seen()}
    try:
        with stop.interruptible():
            import rclpy
            from rclpy.qos import qos_profile_sensor_data
            from rclpy.signals import SignalHandlerOptions
            from sensor_msgs.msg import Image, PointCloud2

            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
            for name, cmd in _children(args):
                print(f"{PROG}: starting the {name}: {' '.join(cmd[1:])}", flush=True)
                procs.append(subprocess.Popen(cmd, env={"RCUTILS_LOGGING_BUFFERED_STREAM": "0", **os.environ}))
                names.append(name)
        node = rclpy.create_node("zoedepth_demo_monitor")
        node.create_subscription(
            Image, "depth/image", lambda m: seen["depth/image"].add(_depth_summary(m)), qos_profile_sensor_data
        )
        node.create_subscription(
            PointCloud2, "points", lambda m: seen["points"].add(_cloud_summary(m)), qos_profile_sensor_data
        )
        start = last_report = time.monotonic()
        while not stop.requested:
            rclpy.spin_once(node, timeout_sec=0.1)
            now = time.monotonic()
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                print(
                    f"{PROG}: "
                    + "; ".join(
                        f"{topic} {s.rate():.1f} Hz ({s.count} so far; {s.last or 'waiting'})"
                        for topic, s in seen.items()
                    ),
                    flush=True,
                )
            ended = [name for name, p in zip(names, procs, strict=True) if p.poll() is not None]
            if ended:
                print(f"{PROG}: the {ended[0]} exited; stopping", file=sys.stderr)
                break
            if args.seconds and now - start >= args.seconds:
                break
    except Interrupted:
        pass
    finally:
        stop.stopping()
        _stop(procs)
        if rclpy is not None:
            rclpy.try_shutdown()
    flowing = all(s.count > 0 for s in seen.values())
    if not flowing and not stop.received:
        print(f"{PROG}: no depth or cloud arrived; see the node's messages above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
