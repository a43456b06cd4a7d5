"""The node in its own process over real DDS: what comes back for what the test publishes."""

from __future__ import annotations

import array
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from ros_graph import REPO, isolated_ros_env, start_node, stop_node, wait_until

from zoedepth_ros.model import load

# Guarded imports instead of a module-level skip: with launch_testing's pytest plugin installed (the ROS
# tools), a module-level skip would skip every test of the run.
try:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from zoedepth_ros.ros.compat import parameter_client
except ImportError as e:
    rclpy = None
    IMPORT_ERROR = f"{type(e).__name__}: {e}"
else:
    IMPORT_ERROR = ""
try:
    from zoedepth_ros.msg import DepthRouting
except ImportError:  # the interface is built by scripts/setup.sh
    DepthRouting = None

pytestmark = [
    pytest.mark.skipif(rclpy is None, reason=f"ROS 2 (rclpy) is needed for the node tests: {IMPORT_ERROR}"),
    pytest.mark.skipif(
        rclpy is not None and DepthRouting is None,
        reason="zoedepth_ros.msg is not built (run scripts/build_interfaces.sh)",
    ),
]

H, W = 48, 64
FX, FY, CX, CY = 52.0, 50.0, 31.5, 23.0
DOMAIN_ID = 100 + os.getpid() % 100


def rgb_image(seed: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    phase = 0.7 * seed
    img = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + phase)], axis=-1)
    return (255 * np.clip(img, 0, 1)).astype(np.uint8)


def image_msg(pixels: np.ndarray, stamp_ns: int, encoding: str = "rgb8", frame: str = "cam_optical") -> Image:
    msg = Image(
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=pixels.shape[1] * pixels.shape[2],
        data=array.array("B", pixels.tobytes()),
    )
    msg.header.frame_id = frame
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def info_msg(stamp_ns: int, fx: float = FX, width: int = W, height: int = H) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    msg.k = [fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.header.frame_id = "cam_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class Graph:
    """The test's side of the graph: publishes camera data, records everything the node sends back."""

    def __init__(self, node_name: str = "zoedepth") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("zoedepth_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, "image", reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self.received: dict[str, list] = {"depth": [], "info": [], "points": [], "routing": [], "diag": []}
        for key, kind, topic in [
            ("depth", Image, "depth/image"),
            ("info", CameraInfo, "depth/camera_info"),
            ("points", PointCloud2, "points"),
            ("routing", DepthRouting, "routing"),
            ("diag", DiagnosticArray, "/diagnostics"),
        ]:
            self.node.create_subscription(kind, topic, lambda m, k=key: self.received[k].append(m), reliable)
        self.params = parameter_client(self.node, node_name)

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def wait(self, predicate, what: str, timeout: float = 60.0) -> None:
        wait_until(predicate, timeout, self.spin, what)

    def wait_for_node(self, proc, log, publisher=None, timeout: float = 90.0) -> None:
        """Wait until the node (process ``proc``, output in ``log``) subscribes to ``publisher``'s topic (default:
        our image publisher); fail with its log if it exits first."""
        pub = self.pub_image if publisher is None else publisher
        self.wait(
            lambda: pub.get_subscription_count() > 0 or proc.poll() is not None,
            f"the node's {pub.topic_name} subscription",
            timeout,
        )
        assert proc.poll() is None, log.read_text()

    def send(self, pixels: np.ndarray, stamp_ns: int, **info_kw) -> None:
        self.pub_info.publish(info_msg(stamp_ns, **info_kw))
        self.pub_image.publish(image_msg(pixels, stamp_ns))

    def request(self, pixels: np.ndarray, stamp_ns: int, topic: str = "depth", timeout: float = 60.0, **info_kw):
        """Send a frame until its ``topic`` output arrives: best-effort input may lose a copy, and the node
        skips frames while our subscriptions are still being matched."""

        def arrived() -> bool:
            if any(stamp_of(m) == stamp_ns for m in self.received[topic]):
                return True
            self.send(pixels, stamp_ns, **info_kw)
            self.spin(1.0)
            return any(stamp_of(m) == stamp_ns for m in self.received[topic])

        self.wait(arrived, f"{topic} for the frame stamped {stamp_ns}", timeout)
        return next(m for m in self.received[topic] if stamp_of(m) == stamp_ns)

    def depth_for(self, stamp_ns: int):
        return next((m for m in self.received["depth"] if stamp_of(m) == stamp_ns), None)

    def set_param(self, name: str, value) -> None:
        assert self.params.wait_for_services(timeout_sec=20.0)
        future = self.params.set_parameters([Parameter(name, value=value)])
        self.wait(future.done, f"set {name}")
        result = future.result().results[0]
        assert result.successful, result.reason

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def ros_env():
    env = isolated_ros_env(DOMAIN_ID)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def node_process(ros_env, tiny_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = start_node(
        {
            "checkpoint": tiny_checkpoint("nk"),
            "device": "cpu",
            "pad_input": True,
            "flip_aug": False,
            "point_cloud.decimation": 1,
            "min_depth": 0.001,
            "max_depth": 80.0,
        },
        ros_env,
        log,
    )
    yield proc, log
    stop_node(proc)


@pytest.fixture(scope="module")
def graph(node_process):
    g = Graph()
    proc, log = node_process
    try:
        g.wait_for_node(proc, log)
        yield g
    finally:
        g.close()


@pytest.fixture(scope="module")
def reference_model(tiny_checkpoint):
    return load(tiny_checkpoint("nk"))


def expected_depth(model, pixels: np.ndarray, **kw) -> np.ndarray:
    rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    return model.predict(rgb, pad_input=True, flip_aug=False, **kw).depth[0, 0].numpy()


def test_depth_equals_the_models_output_and_headers_match(graph, reference_model):
    pixels = rgb_image(0)
    stamp = 1_700_000_000_123_456_789
    depth_msg = graph.request(pixels, stamp)
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", H, W)
    assert depth_msg.header.frame_id == "cam_optical" and depth_msg.step == 4 * W
    depth = np.frombuffer(depth_msg.data, dtype="<f4").reshape(H, W)
    np.testing.assert_allclose(depth, expected_depth(reference_model, pixels), rtol=1e-5, atol=1e-6)

    graph.wait(lambda: any(stamp_of(m) == stamp for m in graph.received["info"]), "depth camera_info")
    info = next(m for m in graph.received["info"] if stamp_of(m) == stamp)
    assert info.header.frame_id == "cam_optical" and (info.width, info.height) == (W, H)
    assert list(info.p[:3]) == [FX, 0.0, CX] and list(info.k[4:6]) == [FY, CY]


def test_cloud_equals_independent_back_projection(graph):
    pixels = rgb_image(1)
    stamp = 1_700_000_001_000_000_000
    cloud = graph.request(pixels, stamp, topic="points")
    graph.wait(lambda: graph.depth_for(stamp) is not None, "the depth image of that frame")
    depth = np.frombuffer(graph.depth_for(stamp).data, dtype="<f4").reshape(H, W)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (H, W, 16, False)
    assert cloud.header.frame_id == "cam_optical" and [f.name for f in cloud.fields] == ["x", "y", "z"]
    xyz = np.frombuffer(
        cloud.data,
        dtype=np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8], "itemsize": 16}),
    ).reshape(H, W)
    for v in range(0, H, 7):
        for u in range(0, W, 9):
            z = float(depth[v, u])
            assert xyz["z"][v, u] == pytest.approx(z, rel=1e-6)
            assert xyz["x"][v, u] == pytest.approx((u - CX) * z / FX, rel=1e-5, abs=1e-6)
            assert xyz["y"][v, u] == pytest.approx((v - CY) * z / FY, rel=1e-5, abs=1e-6)


def test_routing_follows_the_parameter(graph):
    graph.set_param("routing", "outdoor")
    stamp = 1_700_000_002_000_000_000
    msg = graph.request(rgb_image(2), stamp, topic="routing")
    assert (msg.domain, msg.head, msg.forced) == ("outdoor", "kitti", True)
    assert len(msg.logits) == 2 and 0.0 <= msg.probability <= 1.0
    graph.set_param("routing", "auto")
    stamp += 1
    msg = graph.request(rgb_image(2), stamp, topic="routing")
    assert msg.forced is False
    assert msg.head == ("nyu" if msg.logits[0] > msg.logits[1] else "kitti")


def test_decimated_colour_cloud(graph):
    graph.set_param("point_cloud.decimation", 2)
    graph.set_param("point_cloud.color", True)
    try:
        pixels = rgb_image(6)
        stamp = 1_700_000_002_500_000_000
        cloud = graph.request(pixels, stamp, topic="points")
    finally:
        graph.set_param("point_cloud.decimation", 1)
        graph.set_param("point_cloud.color", False)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (H // 2, W // 2, 32, 32 * (W // 2))
    assert [(f.name, f.offset) for f in cloud.fields] == [("x", 0), ("y", 4), ("z", 8), ("rgb", 16)]
    points = np.frombuffer(
        cloud.data,
        dtype=np.dtype(
            {"names": ["x", "z", "rgb"], "formats": ["<f4", "<f4", "<u4"], "offsets": [0, 8, 16], "itemsize": 32}
        ),
    ).reshape(H // 2, W // 2)
    r, g, b = (pixels[::2, ::2, c].astype(np.uint32) for c in range(3))
    np.testing.assert_array_equal(points["rgb"], (r << 16) | (g << 8) | b)
    graph.wait(lambda: graph.depth_for(stamp) is not None, "the depth image of that frame")
    depth = np.frombuffer(graph.depth_for(stamp).data, dtype="<f4").reshape(H, W)
    np.testing.assert_array_equal(points["z"], depth[::2, ::2])
    u = 2 * np.arange(W // 2)[None, :]  # decimated points keep their original pixel coordinates
    np.testing.assert_allclose(points["x"], (u - CX) * depth[::2, ::2] / FX, rtol=1e-5, atol=1e-6)


def test_invalid_parameter_values_are_rejected(graph):
    assert graph.params.wait_for_services(timeout_sec=20.0)
    future = graph.params.set_parameters([Parameter("routing", value="sideways")])
    graph.wait(future.done, "set routing")
    result = future.result().results[0]
    assert not result.successful and "routing" in result.reason


def diagnostics(graph) -> dict[str, str]:
    """The newest /diagnostics of the node, its camera and engine statuses merged (their keys differ)."""
    if not graph.received["diag"]:
        return {}
    return {kv.key: kv.value for status in graph.received["diag"][-1].status for kv in status.values}


def bad_images(stamp: int):
    good = rgb_image(3)
    yield "unknown encoding", image_msg(good, stamp, encoding="bayer_rggb8")
    short = image_msg(good, stamp)
    short.data = array.array("B", good.tobytes()[:100])
    yield "truncated data", short
    wrong_step = image_msg(good, stamp)
    wrong_step.step = 10
    yield "step too small", wrong_step
    empty = image_msg(good, stamp)
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, array.array("B")
    yield "zero size", empty
    huge = image_msg(good, stamp)
    huge.height, huge.width, huge.step = 100_000, 100_000, 300_000
    yield "huge", huge


def test_bad_input_is_survived_and_counted(graph, node_process):
    """Each bad input is re-sent until the node's diagnostics count it (best-effort input may drop copies)."""
    proc, log = node_process
    stamp = 1_700_000_003_000_000_000
    cases = [("bad_image", msg, info_msg(stamp)) for _, msg in bad_images(stamp)]
    cases += [
        ("bad_camera_info", image_msg(rgb_image(3), stamp + i), info)
        for i, info in enumerate(
            [info_msg(stamp + 1, fx=0.0), info_msg(stamp + 2, fx=float("nan")), info_msg(stamp + 3, width=320)], start=1
        )
    ]
    big_endian = image_msg(rgb_image(3), stamp + 4)
    big_endian.is_bigendian = 1  # irrelevant for 8-bit data: must be processed, not dropped
    # an image 5 s away from the newest CameraInfo (sent first, then no more) is dropped as "late"
    cases.append(("camera_info_late", image_msg(rgb_image(3), stamp + 5_000_000_000), info_msg(stamp)))
    for reason, image, info in cases:
        key = f"dropped ({reason})"
        graph.wait(lambda: bool(diagnostics(graph)), "diagnostics")
        before = int(diagnostics(graph).get(key, 0))

        def counted(image=image, info=info, key=key, before=before):
            graph.pub_info.publish(info)
            graph.pub_image.publish(image)
            graph.spin(0.3)
            return int(diagnostics(graph).get(key, 0)) > before

        graph.wait(counted, f"{key} to grow past {before} for {image.encoding} {image.width}x{image.height}", 30)
    graph.request(rgb_image(4), stamp + 10)

    def processed_big_endian() -> bool:
        graph.pub_info.publish(info_msg(stamp + 4))
        graph.pub_image.publish(big_endian)
        graph.spin(1.0)
        return graph.depth_for(stamp + 4) is not None

    graph.wait(processed_big_endian, "depth for an rgb8 frame flagged big-endian", 60)
    assert proc.poll() is None
    assert not any(graph.depth_for(stamp + i) for i in range(4))
    text = log.read_text()
    assert "unsupported encoding" in text and "dropped frame" in text


def test_burst_is_dropped_to_the_latest_frame(graph):
    base = 1_700_000_004_000_000_000
    stamps = [base + i * 1_000_000 for i in range(12)]
    for i, stamp in enumerate(stamps):  # 20 Hz: slower than the executor takes them, faster than inference
        graph.send(rgb_image(5 + i), stamp)
        graph.spin(0.05)
    graph.wait(lambda: graph.depth_for(stamps[-1]) is not None, "depth for the last frame of the burst")
    graph.spin(1.0)
    done = [s for s in stamps if graph.depth_for(s) is not None]
    assert len(done) < len(stamps)  # older frames were replaced while inference ran
    graph.wait(
        lambda: int(diagnostics(graph).get("dropped (newer frame arrived)", 0)) > 0,
        "diagnostics counting replaced frames",
        30,
    )


def test_sigint_shuts_down_cleanly(node_process, graph):
    proc, log = node_process
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, log.read_text()


def test_missing_checkpoint_stops_the_node_with_a_fetch_hint(ros_env, tmp_path):
    env = {**os.environ, **ros_env, "ZOEDEPTH_ROS_CACHE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "zoedepth_ros.ros.node", "--ros-args", "-p", "device:=cpu", "-p", "download:=false"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "zoedepth-ros-weights fetch ZoeD_M12_NK" in result.stderr
