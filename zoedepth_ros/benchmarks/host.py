"""Host (CPU) cost of the node's per-frame work around the model: what a GPU does not take off the host.

Each item is timed over ``iters`` calls (after a few untimed ones) and summarised in milliseconds:

* ``conversion``: ``image_array_from_msg`` of an rgb8 ``Image`` (a zero-copy view; should be microseconds);
* ``receive``: deserializing that ``Image``, the work rclpy does in the node's subscription before the callback;
* ``cloud``: ``depth_to_cloud`` into a reused ``out=`` buffer as the pipeline does, xyz and xyzrgb, on ONE CPU
  thread (``torch.set_num_threads(1)``, restored afterwards): the cost on a CPU-only host, where the cloud
  competes with inference for cores; plus the ``.numpy().tobytes()`` copies of depth and cloud;
* ``messages``: ``messages.depth_image`` / ``depth_camera_info`` / ``point_cloud`` from a ``DepthFrame``, the
  array.array payload copy included;
* ``publish``: rclpy ``publish()`` with a matched subscriber in another process (so the message is serialized and
  handed to the shared-memory transport, as in a deployment).

``total_ms`` per size and cloud kind is the sum of the p50s of the items the node does for one frame: conversion,
receive, cloud packing, the depth and cloud byte copies, building depth image, camera info and cloud, and
publishing those three; ``*_gpu_cloud`` leaves out the packing, which the CUDA pipeline does on the GPU. (The
routing message and the optional colormap are left out: small, or off by default.)

torch and rclpy are imported only when a measurement runs; parts needing rclpy report ``{"skipped": reason}``
when it is missing.
"""

from __future__ import annotations

import argparse
import array
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .dds import pinhole, pinhole_info, texture
from .isolation import (
    applied_env,
    child_main,
    default_domain_id,
    isolated_ros_env,
    log_tail,
    start_python_module,
    stop_via_stdin,
    stop_when_stdin_closes,
)
from .stats import summarize

MODULE = "zoedepth_ros.benchmarks.host"
WARMUP_CALLS = 3
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720))
CLOUD_KINDS = {"xyz": False, "xyzrgb": True}


def size_label(width: int, height: int) -> str:
    return f"{width}x{height}"


def time_calls(
    fn: Callable[[], Any], iters: int, warmup: int = WARMUP_CALLS, between: Callable[[], Any] | None = None
) -> dict[str, float]:
    """Summary (ms) of ``iters`` timed calls of ``fn`` after ``warmup`` untimed ones; ``between`` runs untimed."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    samples = []
    for i in range(warmup + iters):
        t0 = time.perf_counter_ns()
        fn()
        t1 = time.perf_counter_ns()
        if i >= warmup:
            samples.append((t1 - t0) / 1e6)
        if between is not None:
            between()
    return summarize(samples)


def _rclpy_missing() -> str | None:
    """Why the ROS parts cannot run, or None when rclpy and the message packages import."""
    try:
        import rclpy  # noqa: F401
        from sensor_msgs.msg import Image  # noqa: F401
    except ImportError as e:
        return f"rclpy not available: {e}"
    return None


def _image_msg(width: int, height: int) -> Any:
    """An rgb8 Image as the node receives it (data an array.array), or a field-for-field stand-in without rclpy."""
    fields = {
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": 3 * width,
        "data": array.array("B", texture(width, height, 3)),
    }
    if _rclpy_missing() is not None:
        return SimpleNamespace(**fields)
    from sensor_msgs.msg import Image

    return Image(**fields)


def conversion_cost(width: int, height: int, iters: int) -> dict[str, Any]:
    """``image_array_from_msg`` of an rgb8 Image of this size."""
    from ..engine.encodings import image_array_from_msg

    msg = _image_msg(width, height)
    return {
        "image_array_from_msg": time_calls(lambda: image_array_from_msg(msg), iters),
        "message": "stand-in" if isinstance(msg, SimpleNamespace) else "sensor_msgs/Image",
    }


def receive_cost(width: int, height: int, iters: int) -> dict[str, Any]:
    """Deserializing an rgb8 Image of this size (rclpy's work before the node's image callback runs)."""
    missing = _rclpy_missing()
    if missing:
        return {"skipped": missing}
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    data = serialize_message(_image_msg(width, height))
    return {"deserialize_image": time_calls(lambda: deserialize_message(data, Image), iters)}


def synthetic_depth(width: int, height: int):
    """A smooth (H, W) float32 depth map in metres (0.5..10 m) with a few NaN (invalid) pixels."""
    import torch

    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    depth = 0.5 + 9.5 * (0.5 + 0.5 * torch.sin(3 * xs + 2 * ys)) * ys
    depth[::37, ::41] = float("nan")
    return depth.to(torch.float32).contiguous()


def _intrinsics(width: int, height: int):
    from ..engine.intrinsics import Intrinsics

    fx, fy, cx, cy = pinhole(width, height)
    return Intrinsics(fx, fy, cx, cy, width, height)


def cloud_costs(width: int, height: int, iters: int, threads: int = 1) -> dict[str, Any]:
    """Cloud packing (xyz and xyzrgb, reused buffer) and the depth/cloud byte copies, on ``threads`` CPU threads.

    Also returns the packed bytes (under ``"_bytes"``, dropped from reports) so messages can be built from them.
    """
    import torch

    from ..engine.cloud import depth_to_cloud
    from ..engine.encodings import array_to_tensor, image_array_from_msg, to_rgb8

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            used = torch.get_num_threads()
            depth = synthetic_depth(width, height)
            intr = _intrinsics(width, height)
            pixels = array_to_tensor(image_array_from_msg(_image_msg(width, height)))
            out: dict[str, Any] = {
                "threads": used,
                "depth_to_bytes": time_calls(lambda: depth.cpu().numpy().tobytes(), iters),
            }
            payloads = {"depth": depth.numpy().tobytes()}
            for kind, color in CLOUD_KINDS.items():
                buf = depth_to_cloud(depth, intr, to_rgb8(pixels, "rgb8") if color else None)

                def pack(buf=buf, color=color) -> None:
                    depth_to_cloud(depth, intr, to_rgb8(pixels, "rgb8") if color else None, out=buf)

                out[kind] = {
                    "pack": time_calls(pack, iters),
                    "to_bytes": time_calls(lambda buf=buf: buf.cpu().numpy().tobytes(), iters),
                }
                payloads[kind] = buf.numpy().tobytes()
    finally:
        torch.set_num_threads(before)
    out["threads_restored"] = torch.get_num_threads()
    out["_bytes"] = payloads
    return out


def _depth_frame(width: int, height: int, payloads: dict[str, bytes], kind: str):
    from ..engine.pipeline import DepthFrame

    return DepthFrame(
        depth=payloads["depth"],
        height=height,
        width=width,
        intrinsics=_intrinsics(width, height),
        head="nyu",
        domain="indoor",
        probability=math.nan,
        logits=[],
        forced=False,
        cloud=payloads[kind],
        cloud_height=height,
        cloud_width=width,
    )


def _header():
    from std_msgs.msg import Header

    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
    return header


def _builders(width: int, height: int, payloads: dict[str, bytes]) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls building each of the node's output messages for one frame of this size."""
    from ..ros import messages

    header, template = _header(), pinhole_info(width, height)
    frames = {kind: _depth_frame(width, height, payloads, kind) for kind in CLOUD_KINDS}
    out: dict[str, Callable[[], Any]] = {
        "depth_image": lambda: messages.depth_image(frames["xyz"], header),
        "camera_info": lambda: messages.depth_camera_info(frames["xyz"], header, template),
    }
    for kind, color in CLOUD_KINDS.items():
        out[f"point_cloud_{kind}"] = lambda kind=kind, color=color: messages.point_cloud(frames[kind], header, color)
    return out


def build_messages(width: int, height: int, payloads: dict[str, bytes]) -> dict[str, Any]:
    """The node's output messages for one frame of this size (what :func:`publish_costs` sends)."""
    return {name: build() for name, build in _builders(width, height, payloads).items()}


def message_costs(width: int, height: int, iters: int, payloads: dict[str, bytes]) -> dict[str, Any]:
    """Building depth image, camera info and the two clouds from a DepthFrame (payload copies included)."""
    missing = _rclpy_missing()
    if missing:
        return {"skipped": missing}
    return {name: time_calls(build, iters) for name, build in _builders(width, height, payloads).items()}


TOPICS = {
    "depth_image": "depth/image",
    "camera_info": "depth/camera_info",
    "point_cloud_xyz": "points",
    "point_cloud_xyzrgb": "points",
}


def _publisher_qos():
    """The node's default output QoS (reliable, depth 2 unless the parameter table says otherwise)."""
    from ..ros.params import BY_NAME
    from ..ros.qos import profile

    return profile(BY_NAME["qos.output_reliability"].default, BY_NAME["qos.output_depth"].default)


def publish_costs(
    frames: dict[str, dict[str, Any]],
    iters: int,
    *,
    domain_id: int | None = None,
    gap_s: float = 0.005,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """``publish()`` time per message kind and size, with a subscriber (``host sink``) in another process.

    ``frames`` maps a size label to :func:`build_messages`' output. ``gap_s`` (untimed) between publishes lets the
    subscriber keep up, as at a camera rate. Returns ``{label: {kind: summary}}`` or ``{"skipped": reason}``.
    """
    missing = _rclpy_missing()
    if missing:
        return {"skipped": missing}
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    domain = default_domain_id() if domain_id is None else int(domain_id)
    env = isolated_ros_env(domain)
    kinds = {
        "depth_image": Image,
        "camera_info": CameraInfo,
        "point_cloud_xyz": PointCloud2,
        "point_cloud_xyzrgb": PointCloud2,
    }
    with tempfile.TemporaryDirectory(prefix="zoedepth_bench_host_") as tmp, applied_env(env):
        log = Path(tmp) / "sink.log"
        sink = start_python_module(MODULE, ["sink"], env, log, stdin=subprocess.PIPE)
        context = rclpy.Context()
        node = None
        try:
            rclpy.init(args=[], context=context, domain_id=domain)
            node = rclpy.create_node("zoedepth_bench_host", context=context)
            qos = _publisher_qos()
            pubs = {topic: node.create_publisher(kinds[k], topic, qos) for k, topic in TOPICS.items()}
            deadline = time.monotonic() + timeout_s
            while not all(p.get_subscription_count() > 0 for p in pubs.values()):
                if sink.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the subscriber process did not match within {timeout_s} s (exit code "
                        f"{sink.poll()}); last lines of its log:\n{log_tail(log)}"
                    )
                time.sleep(0.02)
            results: dict[str, Any] = {}
            for label, built in frames.items():
                results[label] = {
                    kind: time_calls(
                        lambda kind=kind, msg=built[kind]: pubs[TOPICS[kind]].publish(msg),
                        iters,
                        between=lambda: time.sleep(gap_s),
                    )
                    for kind in TOPICS
                }
            results["subscriber"] = "another process"
            return results
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown(context=context)
            stop_via_stdin(sink)


def _total(item: dict[str, Any], kind: str, cloud_on_host: bool = True) -> float | None:
    """Sum of the p50s of one frame's host work for one cloud kind, or None if a part was skipped.

    With ``cloud_on_host=False`` the cloud packing is left out: on CUDA the pipeline packs it on the GPU.
    """
    pack = [item["cloud"][kind]["pack"]] if cloud_on_host else []
    parts = [
        item["conversion"].get("image_array_from_msg"),
        item["receive"].get("deserialize_image"),
        *pack,
        item["cloud"][kind]["to_bytes"],
        item["cloud"]["depth_to_bytes"],
        item["messages"].get("depth_image"),
        item["messages"].get("camera_info"),
        item["messages"].get(f"point_cloud_{kind}"),
        item["publish"].get("depth_image"),
        item["publish"].get("camera_info"),
        item["publish"].get(f"point_cloud_{kind}"),
    ]
    if any(p is None for p in parts):
        return None
    return sum(p["p50_ms"] for p in parts)


def measure_host_costs(
    sizes: Iterable[tuple[int, int]] = DEFAULT_SIZES,
    iters: int = 100,
    *,
    publish_iters: int | None = None,
    domain_id: int | None = None,
) -> dict[str, Any]:
    """All host-cost items for each (width, height); see the module doc for what each one covers.

    Returns ``{"iters", "publish_iters", "torch_threads", "sizes": {"WxH": {"width", "height", "conversion",
    "receive", "cloud", "messages", "publish", "total_ms": {"xyz", "xyzrgb"}}}}``; every timing is a
    :func:`~zoedepth_ros.benchmarks.stats.summarize` dict in ms, and a part needing rclpy is ``{"skipped": why}``
    without it (then ``total_ms`` is None per kind).
    """
    import torch

    sizes = [(int(w), int(h)) for w, h in sizes]
    publish_iters = iters if publish_iters is None else publish_iters
    report: dict[str, Any] = {
        "iters": iters,
        "publish_iters": publish_iters,
        "torch_threads": torch.get_num_threads(),
        "sizes": {},
    }
    built: dict[str, dict[str, Any]] = {}
    for w, h in sizes:
        label = size_label(w, h)
        cloud = cloud_costs(w, h, iters)
        payloads = cloud.pop("_bytes")
        item = {
            "width": w,
            "height": h,
            "conversion": conversion_cost(w, h, iters),
            "receive": receive_cost(w, h, iters),
            "cloud": cloud,
            "messages": message_costs(w, h, iters, payloads),
        }
        if "skipped" not in item["messages"]:
            built[label] = build_messages(w, h, payloads)
        report["sizes"][label] = item
    published = publish_costs(built, publish_iters, domain_id=domain_id) if built else {"skipped": _rclpy_missing()}
    for label, item in report["sizes"].items():
        item["publish"] = published if "skipped" in published else published[label]
        item["total_ms"] = {kind: _total(item, kind) for kind in CLOUD_KINDS}
        item["total_ms"].update({f"{kind}_gpu_cloud": _total(item, kind, False) for kind in CLOUD_KINDS})
    return report


def sink_main(argv: Sequence[str]) -> int:
    """The subscriber process for :func:`publish_costs`: takes every message (so it is really delivered) until
    stdin closes."""
    argparse.ArgumentParser(prog=f"python -m {MODULE} sink").parse_args(argv)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    stop = stop_when_stdin_closes()
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node("zoedepth_bench_host_sink", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    counts = dict.fromkeys(("depth/image", "depth/camera_info", "points"), 0)
    qos = _publisher_qos()
    for kind, topic in ((Image, "depth/image"), (CameraInfo, "depth/camera_info"), (PointCloud2, "points")):
        node.create_subscription(kind, topic, lambda _m, t=topic: counts.__setitem__(t, counts[t] + 1), qos)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"received {counts}", flush=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoedepth_ros.benchmarks.host sink``: the subscriber process of :func:`publish_costs`."""
    return child_main(argv, MODULE, "sink", "", sink_main)


if __name__ == "__main__":
    sys.exit(main())
