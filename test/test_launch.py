"""The shipped launch file, started through the ament index as a user would (launch_pytest), with a test camera.

Also the helpers the other launch / ros2 CLI test modules share: the child environment (a private domain,
localhost discovery, the large-SHM Fast DDS profile, the venv on PATH and AMENT_PREFIX_PATH) and the test camera.
Without the ROS 2 launch tools (../shared/ros_tools or a ROS 2 distro) everything here skips with the reason,
except the checks of the launch file's text.
"""

from __future__ import annotations

import array
import ast
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_graph import REPO, isolated_ros_env

try:  # guarded, not a module-level skip: with launch_testing's pytest plugin that would skip the whole run
    import launch_pytest
    import rclpy
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_pytest.actions import ReadyToTest
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter, parameter_value_to_python
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from sensor_msgs_py import point_cloud2

    from launch import LaunchDescription
    from zoedepth_ros.ros.compat import parameter_client
except ImportError as e:
    launch_pytest = None
    IMPORT_ERROR = f"{type(e).__name__}: {e}"
else:
    IMPORT_ERROR = ""

TOOLS_REASON = (
    "the ROS 2 launch tools are not installed (launch_pytest, launch_ros, sensor_msgs_py: "
    f"../shared/ros_tools/install.sh .venv, or a ROS 2 distro): {IMPORT_ERROR}"
)
needs_tools = pytest.mark.skipif(launch_pytest is None, reason=TOOLS_REASON)
launch_fixture = launch_pytest.fixture if launch_pytest is not None else pytest.fixture

DOMAIN_BASE = 150 + (os.getpid() % 16) * 3
"""This module's ROS domain; test_launch_namespaces uses + 1 and test_ros2cli + 2 (all within 150..199)."""
DOMAIN = DOMAIN_BASE
LAUNCH_FILE = REPO / "launch" / "zoedepth.launch.py"
H, W = 48, 64
FX, FY, CX, CY = 52.0, 50.0, 31.5, 23.0  # K
P_FX, P_FY, P_CX, P_CY = 51.0, 49.0, 31.0, 23.5  # P differs from K: the cloud must use P (depth_image_proc)
NS = "/launch_test"
FRAME = "launch_test_optical"


# ------------------------------------------------------------------ shared helpers


def child_env(domain: int) -> dict[str, str]:
    """Environment for ROS children and for this process's own launch service.

    The venv goes on PATH (ros2) and AMENT_PREFIX_PATH (the ament index: ros2 launch / ros2 run / launch_ros Node
    find zoedepth_ros there), because the README's test command does not source ros_tools_env.sh.
    """
    prefix = sys.prefix
    paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p and p != prefix]
    return {
        **isolated_ros_env(domain),
        "PATH": os.pathsep.join([str(Path(prefix) / "bin"), os.environ.get("PATH", "")]),
        "AMENT_PREFIX_PATH": os.pathsep.join([prefix, *paths]),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def apply_env(mp: pytest.MonkeyPatch, domain: int) -> dict[str, str]:
    """Put ``child_env(domain)`` into os.environ (launch children and ament lookups read it) until ``mp`` undoes it."""
    env = child_env(domain)
    for k, v in env.items():
        mp.setenv(k, v)
    return env


def shipped_launch_file() -> str:
    """The launch file as installed (found through the ament index), not the source tree's copy."""
    path = Path(get_package_share_directory("zoedepth_ros")) / "launch" / "zoedepth.launch.py"
    assert path.is_file(), f"{path} is missing: run scripts/setup.sh (scripts/install_ament_prefix.py)"
    return str(path)


def rgb_image(seed: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    img = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + 0.7 * seed)], axis=-1)
    return (255 * np.clip(img, 0, 1)).astype(np.uint8)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class Camera:
    """The test's camera and viewer in namespace ``ns``: publishes rgb8 images + CameraInfo with equal stamps,
    records the node's depth image, depth camera info and cloud, and talks to its parameters."""

    def __init__(self, domain: int, ns: str, node_name: str = "zoedepth") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("launch_test_camera", namespace=ns, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, "image", reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self.received: dict[str, list] = {"depth": [], "info": [], "points": []}
        for key, kind, topic in (
            ("depth", Image, "depth/image"),
            ("info", CameraInfo, "depth/camera_info"),
            ("points", PointCloud2, "points"),
        ):
            self.node.create_subscription(kind, topic, lambda m, k=key: self.received[k].append(m), reliable)
        self.params = parameter_client(self.node, f"{ns.rstrip('/')}/{node_name}")

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def wait(self, predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.spin(0.05)

    def send(self, pixels: np.ndarray, stamp_ns: int) -> None:
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        info = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=[0.0] * 5)
        info.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
        info.p = [P_FX, 0.0, P_CX, 0.0, 0.0, P_FY, P_CY, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        image = Image(
            height=H, width=W, encoding="rgb8", is_bigendian=0, step=3 * W, data=array.array("B", pixels.tobytes())
        )
        for msg in (info, image):
            msg.header.frame_id = FRAME
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        self.pub_info.publish(info)
        self.pub_image.publish(image)

    def find(self, topic: str, stamp_ns: int):
        return next((m for m in self.received[topic] if stamp_of(m) == stamp_ns), None)

    def request(self, pixels: np.ndarray, stamp_ns: int, topics=("depth", "info", "points"), timeout: float = 45.0):
        """Send the frame (again, every second: best-effort input may drop a copy, and the node starts in the
        meantime) until every one of ``topics`` has come back with its stamp; returns them in that order."""

        def arrived() -> bool:
            if all(self.find(t, stamp_ns) is not None for t in topics):
                return True
            self.send(pixels, stamp_ns)
            self.spin(1.0)
            return False

        self.wait(arrived, f"{', '.join(topics)} of the frame stamped {stamp_ns}", timeout)
        return [self.find(t, stamp_ns) for t in topics]

    def get_params(self, names: list[str], timeout: float = 30.0) -> list:
        assert self.params.wait_for_services(timeout_sec=timeout), "the node's parameter services never came up"
        future = self.params.get_parameters(names)
        self.wait(future.done, f"parameters {names}", 10.0)
        return [parameter_value_to_python(v) for v in future.result().values]

    def set_param(self, name: str, value) -> None:
        assert self.params.wait_for_services(timeout_sec=30.0), "the node's parameter services never came up"
        future = self.params.set_parameters([Parameter(name, value=value)])
        self.wait(future.done, f"set {name}", 10.0)
        result = future.result().results[0]
        assert result.successful, result.reason

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def check_cloud_against_depth(cloud, depth_msg, info) -> int:
    """Every point of ``cloud`` is depth_image_proc's back-projection of ``depth_msg`` with ``info``'s P:
    x = (u - cx) z / fx, y = (v - cy) z / fy, z = depth[v, u]; NaN depth <-> NaN point. Returns the NaN count."""
    assert (cloud.height, cloud.width) == (depth_msg.height, depth_msg.width)
    assert cloud.row_step == cloud.width * cloud.point_step, "padded rows (read_points ignores row_step)"
    assert cloud.header == depth_msg.header
    points = point_cloud2.read_points(cloud, field_names=("x", "y", "z"), skip_nans=False)  # flat, see README
    assert points.shape == (cloud.height * cloud.width,)
    depth = np.frombuffer(depth_msg.data, dtype="<f4").astype(np.float64)
    fx, fy, cx, cy = info.p[0], info.p[5], info.p[2], info.p[6]
    v, u = np.divmod(np.arange(depth.size), depth_msg.width)
    z = points["z"].astype(np.float64)
    nan = np.isnan(depth)
    assert (np.isnan(z) == nan).all() and np.isnan(points["x"][nan]).all() and np.isnan(points["y"][nan]).all()
    np.testing.assert_allclose(z, depth, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(points["x"], (u - cx) * depth / fx, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(points["y"], (v - cy) * depth / fy, rtol=1e-5, atol=1e-6, equal_nan=True)
    return int(nan.sum())


# ------------------------------------------------------------------ the launch file's text (no tools needed)

DOCUMENTED_ARGUMENTS = {
    "cameras",
    "namespace",
    "name",
    "image",
    "camera_info",
    "params_file",
    "checkpoint",
    "device",
    "rviz",
    "fixed_frame",
    "lifecycle",
    "autostart",
    "demo",
}


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text())
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign | ast.Assign)
        and "ARGUMENTS" in ast.unparse(node.targets[0] if isinstance(node, ast.Assign) else node.target)
    )
    names = {key.value for key in table.keys}
    names |= {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", "") == "DeclareLaunchArgument"
        and isinstance(call.args[0], ast.Constant)
    }
    assert names == DOCUMENTED_ARGUMENTS
    defaults = {key.value: value.elts[0].value for key, value in zip(table.keys, table.values, strict=True)}
    # checkpoint/device/cameras empty = "as params_file says"; the rviz view and the demo default to one frame
    assert defaults["checkpoint"] == defaults["device"] == defaults["cameras"] == ""
    assert defaults["fixed_frame"] == "camera_optical_frame"
    assert (defaults["lifecycle"], defaults["autostart"], defaults["rviz"], defaults["demo"]) == (
        "false",
        "true",
        "false",
        "false",
    )


# ------------------------------------------------------------------ with the tools


def load_launch_module():
    spec = importlib.util.spec_from_file_location("zoedepth_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_tools
@pytest.mark.timeout(30)
def test_rviz_view_follows_the_namespace_and_fixed_frame():
    import yaml

    module = load_launch_module()
    template = REPO / "config" / "zoedepth.rviz"
    for ns, prefix in (("/cam0", "/cam0"), ("/robot/cam1/", "/robot/cam1"), ("/", "")):
        path = module.rviz_config(template, ns, "base_link")
        try:
            config = yaml.safe_load(Path(path).read_text())
        finally:
            os.unlink(path)
        manager = config["Visualization Manager"]
        topics = {d["Name"]: d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
        assert topics == {
            "ZoeDepth points": f"{prefix}/points",
            "Depth colormap": f"{prefix}/depth/colormap",
            "Depth (32FC1, metres)": f"{prefix}/depth/image",
        }
        assert manager["Global Options"]["Fixed Frame"] == "base_link"


@pytest.fixture(scope="module")
def launch_env(monkeypatch_module):
    return apply_env(monkeypatch_module, DOMAIN)


@launch_fixture(scope="module")
def launched(launch_env, tiny_checkpoint):
    return LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(shipped_launch_file()),
                launch_arguments={
                    "namespace": NS,
                    "checkpoint": str(tiny_checkpoint("nk")),
                    "device": "cpu",
                    "image": "image",
                    "camera_info": "camera_info",
                }.items(),
            ),
            ReadyToTest(),
        ]
    )


@pytest.fixture(scope="module")
def camera(launch_env):
    cam = Camera(DOMAIN, NS)
    yield cam
    cam.close()


@needs_tools
@pytest.mark.timeout(120)
@pytest.mark.launch(fixture=launched)
def test_shipped_launch_file_publishes_depth_info_and_cloud(camera):
    stamp = 1_700_000_000_123_456_789
    depth, info, cloud = camera.request(rgb_image(0), stamp)
    assert (depth.encoding, depth.height, depth.width, depth.step) == ("32FC1", H, W, 4 * W)
    assert depth.header.frame_id == FRAME and stamp_of(depth) == stamp
    values = np.frombuffer(depth.data, dtype="<f4")
    assert np.isfinite(values).all() and (values > 0).all(), "depth must be finite and positive in 0.001..80 m"
    assert info.header == depth.header and (info.width, info.height) == (W, H)
    assert list(info.p) == [P_FX, 0.0, P_CX, 0.0, 0.0, P_FY, P_CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert cloud.header == depth.header and (cloud.height, cloud.width) == (H, W)
    assert [f.name for f in cloud.fields][:3] == ["x", "y", "z"]


@needs_tools
@pytest.mark.timeout(120)
@pytest.mark.launch(fixture=launched)
def test_every_cloud_point_is_the_back_projection_of_its_depth_pixel(camera):
    depth, info, cloud = camera.request(rgb_image(1), 1_700_000_001_000_000_000)
    assert check_cloud_against_depth(cloud, depth, info) == 0
    # with max_depth at the median some pixels are NaN: their points must be NaN too, and only theirs
    median = float(np.median(np.frombuffer(depth.data, dtype="<f4")))
    (before,) = camera.get_params(["max_depth"])
    camera.set_param("max_depth", median)
    try:
        depth, info, cloud = camera.request(rgb_image(1), 1_700_000_002_000_000_000)
        nans = check_cloud_against_depth(cloud, depth, info)
        assert 0 < nans < H * W, nans
    finally:
        camera.set_param("max_depth", before)
