"""The demo camera: its generated scene (pure numpy), its CameraInfo, and the node over real DDS.

The DDS tests run ``python -m zoedepth_ros.ros.demo_camera`` in its own process on a private domain and check what
arrives, then that SIGINT/SIGTERM (twice, as ``ros2 launch`` and a terminal can both send) end it cleanly.
Without rclpy the module still collects: the ROS tests skip with a reason, the numpy ones run.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ros_graph import isolated_ros_env, stop_node, wait_until

from zoedepth_ros.benchmarks.isolation import PACKAGE_PARENT, applied_env, log_tail, ros_args, start_python_module
from zoedepth_ros.ros.demo_camera import DemoConfig, DemoScene, intrinsics

try:  # not a module-level importorskip: launch_testing's plugin would then skip the whole directory
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from zoedepth_ros.ros.demo_camera import camera_info
except ImportError:
    rclpy = None

needs_ros = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy, sensor_msgs) is needed for the demo camera node")

# Fast DDS refuses domain ids above 232 (its port numbers overflow), and the other DDS tests use 100..231; 40..99
# is free. Derived from the pid so concurrent test runs rarely share one.
DOMAIN_ID = 40 + os.getpid() % 60
MODULE = "zoedepth_ros.ros.demo_camera"


# ------------------------------------------------------------------------------------------- the scene


def test_frames_have_structure_and_move() -> None:
    scene = DemoScene(640, 480, 60.0)
    frames = [scene.frame(t) for t in (0.0, 0.1, 1.0, 4.0)]
    for f in frames:
        assert f.shape == (480, 640, 3) and f.dtype == np.uint8 and f.flags.c_contiguous
        assert all(f[..., c].std() > 20 for c in range(3))  # not flat: floor, walls, boxes, ball
        assert len(np.unique(f.reshape(-1, 3), axis=0)) > 500  # shading and gradients, not a few flat colours
    for a, b in itertools.pairwise(frames):
        assert np.mean(a != b) > 0.001  # every step moves something (the ball, the pan)
    assert np.array_equal(scene.frame(1.0), frames[2])  # deterministic
    top, bottom = frames[0][:40].mean(), frames[0][-40:].mean()
    assert abs(top - bottom) > 10  # ceiling and floor differ: an indoor scene, not a texture


def test_frame_generation_is_fast_enough_for_30_hz() -> None:
    # CPU time of this thread, not wall time: the cost of a frame, not the share of a busy machine's cores this
    # process got (on 2 loaded cores the wall-clock median of a 2 ms frame reaches 7 ms). numpy runs these
    # operations on the calling thread.
    scene = DemoScene(640, 480, 60.0)
    times = []
    for k in range(40):
        start = time.thread_time()
        scene.frame(k / 30).tobytes()  # what the node does per tick
        times.append(time.thread_time() - start)
    assert float(np.median(times)) < 0.005, f"median {1e3 * float(np.median(times)):.2f} ms CPU per 640x480 frame"


@pytest.mark.parametrize(("width", "height", "fov"), [(16, 16, 60.0), (17, 31, 170.0), (100, 20, 2.0)])
def test_extreme_sizes_and_fields_of_view(width: int, height: int, fov: float) -> None:
    scene = DemoScene(width, height, fov)
    for k in range(0, 160, 3):  # a full pan and a full ball loop: clipping at every edge
        f = scene.frame(k / 10)
        assert f.shape == (height, width, 3) and f.dtype == np.uint8


def test_intrinsics_match_the_field_of_view() -> None:
    fx, fy, cx, cy = intrinsics(640, 480, 60.0)
    assert fx == fy == pytest.approx(320 / math.tan(math.radians(30)))
    assert (cx, cy) == (319.5, 239.5)
    for width, fov in [(640, 60.0), (1280, 90.0), (16, 178.0)]:
        fx = intrinsics(width, 480, fov)[0]
        assert math.degrees(2 * math.atan(width / 2 / fx)) == pytest.approx(fov)


def test_config_accepts_defaults_and_integers() -> None:
    values = {
        "rate": 10.0,
        "width": 640,
        "height": 480,
        "frame_id": "camera_optical_frame",
        "fov_deg": 60.0,
        "info_first": True,
    }
    assert DemoConfig.from_values(values) == DemoConfig()
    config = DemoConfig.from_values({**values, "rate": 20, "fov_deg": 90})  # `rate:=20` is an integer in YAML
    assert (config.rate, config.fov_deg) == (20.0, 90.0) and isinstance(config.rate, float)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("rate", 0.0, "'rate' must be positive"),
        ("rate", -5.0, "'rate' must be positive"),
        ("rate", float("nan"), "'rate' must be a number"),
        ("rate", "fast", "'rate' must be a number"),
        ("rate", True, "'rate' must be a number"),
        ("width", 15, "'width' must be in 16..8192"),
        ("height", 8193, "'height' must be in 16..8192"),
        ("width", 640.0, "'width' must be an integer"),
        ("fov_deg", 1.0, "between 1 and 179"),
        ("fov_deg", 179.0, "between 1 and 179"),
        ("frame_id", "", "'frame_id' must be a non-empty string"),
        ("info_first", "yes", "must be true or false"),
    ],
)
def test_config_rejects_bad_values_in_one_line(name: str, value: object, message: str) -> None:
    values = {**DemoConfig().__dict__, name: value}
    with pytest.raises(ValueError, match=message) as info:
        DemoConfig.from_values(values)
    assert "\n" not in str(info.value)


@needs_ros
def test_camera_info_is_a_consistent_calibration() -> None:
    msg = camera_info(640, 480, 60.0, "cam")
    fx, fy, cx, cy = intrinsics(640, 480, 60.0)
    assert (msg.width, msg.height, msg.header.frame_id, msg.distortion_model) == (640, 480, "cam", "plumb_bob")
    assert list(msg.d) == [0.0] * 5
    assert list(msg.k) == [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    assert list(msg.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert list(msg.p) == [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]  # zero Tx: a monocular camera
    assert (cx, cy) == ((640 - 1) / 2, (480 - 1) / 2)
    assert math.degrees(2 * math.atan(640 / 2 / msg.k[0])) == pytest.approx(60.0)


# ------------------------------------------------------------------------------------------------ DDS


class Listener:
    """The test's side of the graph: records every image and camera_info with its header stamp."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("demo_camera_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        self.images: list = []
        self.infos: list = []
        self.node.create_subscription(Image, "image", self.images.append, qos)
        self.node.create_subscription(CameraInfo, "camera_info", self.infos.append, qos)
        self.longest_stall = 0.0  # the longest this process was held: between spins, or a spin beyond its timeout
        self._last_spin_end: float | None = None

    def spin(self, seconds: float) -> None:
        start = time.monotonic()
        if self._last_spin_end is not None:
            self.longest_stall = max(self.longest_stall, start - self._last_spin_end)
        self.executor.spin_once(timeout_sec=seconds)
        self._last_spin_end = time.monotonic()
        self.longest_stall = max(self.longest_stall, self._last_spin_end - start - seconds)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.spin(0.02)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def pairing_report(stamps: list[int], listener: Listener) -> str:
    """What a failed pairing check needs to be diagnosed: which images lack their info, where in the window,
    which frames never arrived on either topic, and how long this process was held without spinning.

    Seen while investigating (Kilted, Fast DDS 3.2, shared memory): stopping the subscribing process for about a
    second or more can drop the samples in flight on both topics, and at the end of such a gap an image can arrive
    without its camera_info, with the publisher's depth at 5 or 100 alike. Without such a stall no image or info
    was lost in thousands of frames under heavy CPU load, with numpy 1.26 and 2.x alike.
    """
    infos = {stamp_of(i) for i in listener.infos}
    period = float(np.median(np.diff(stamps)))
    missing = [f"#{k} (+{(s - stamps[0]) / 1e9:.2f} s)" for k, s in enumerate(stamps) if s not in infos]
    skipped = [
        f"{round((b - a) / period) - 1} after #{k}"
        for k, (a, b) in enumerate(itertools.pairwise(stamps))
        if b - a > 1.5 * period
    ]
    return (
        f"{len(missing)} of {len(stamps)} images in the window have no camera_info: {', '.join(missing)}; "
        f"frames missing from the image stream: {', '.join(skipped) or 'none'}; "
        f"this process was held up to {listener.longest_stall:.2f} s at a time (not spinning)"
    )


@pytest.fixture(scope="module")
def ros_env() -> Iterator[dict[str, str]]:
    env = isolated_ros_env(DOMAIN_ID)
    with applied_env(env):
        yield env


@pytest.fixture
def listener(ros_env) -> Iterator[Listener]:
    graph = Listener()
    try:
        yield graph
    finally:
        graph.close()


def start_camera(params: dict[str, object], env: dict[str, str], log: Path) -> subprocess.Popen:
    return start_python_module(MODULE, ros_args(params), env, log)


def wait_for_frames(listener: Listener, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Until the first image arrives (discovery plus a cold rclpy import), failing early if the camera died."""
    wait_until(
        lambda: bool(listener.images) or proc.poll() is not None,
        timeout,
        listener.spin,
        "the demo camera's first image",
    )
    assert proc.poll() is None, f"the demo camera exited with {proc.returncode}:\n{log_tail(log)}"


def signal_twice_and_wait(proc: subprocess.Popen, sig: signal.Signals, log: Path) -> None:
    """Two signals in quick succession (a terminal's Ctrl-C plus ros2 launch's SIGINT): exit 0, no traceback."""
    proc.send_signal(sig)
    time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the demo camera did not exit within 20 s of {sig.name}:\n{log_tail(log)}") from None
    text = log.read_text(errors="replace")
    assert code == 0, f"exit code {code} after {sig.name}:\n{log_tail(log)}"
    assert "Traceback" not in text, text


@needs_ros
def test_images_and_infos_arrive_paired_at_the_rate_and_sigint_ends_it(listener, ros_env, tmp_path) -> None:
    log = tmp_path / "camera.log"
    proc = start_camera({"rate": 20.0, "frame_id": "demo_optical"}, ros_env, log)
    try:
        wait_for_frames(listener, proc, log)
        listener.spin_for(0.5)  # past any start-up hiccup
        first = len(listener.images)  # a slice, not clear(): a frame's info may have come just before
        window = 3.0
        listener.spin_for(window)
        images = listener.images[first:]

        # At roughly the rate: publisher-side by the stamps, and enough of them arrived here.
        stamps = [stamp_of(m) for m in images]
        assert len(images) >= 0.5 * 20 * window, f"{len(images)} images in {window} s at 20 Hz"
        assert stamps == sorted(set(stamps)), "stamps must be unique and increasing"
        rate = 1e9 / float(np.median(np.diff(stamps)))  # the median interval: a lost frame does not skew it
        assert 14.0 < rate < 26.0, f"published at {rate:.1f} Hz, asked for 20"

        for m in images:
            assert (m.width, m.height, m.encoding, m.step, m.is_bigendian) == (640, 480, "rgb8", 1920, 0)
            assert len(m.data) == 640 * 480 * 3 and m.header.frame_id == "demo_optical"
        assert bytes(images[0].data) != bytes(images[-1].data), "the picture must move"

        # Every image has its camera_info with the identical stamp (it may arrive a little later).
        wanted = set(stamps)
        try:
            wait_until(
                lambda: wanted <= {stamp_of(i) for i in listener.infos},
                10.0,
                listener.spin,
                "a camera_info with each image's stamp",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}: {pairing_report(stamps, listener)}") from None
        info = next(i for i in listener.infos if stamp_of(i) == stamps[0])
        assert (info.width, info.height, info.header.frame_id) == (640, 480, "demo_optical")
        assert list(info.k) == pytest.approx(
            [*intrinsics(640, 480, 60.0)[:1], 0, 319.5, 0, intrinsics(640, 480, 60.0)[1], 239.5, 0, 0, 1]
        )

        signal_twice_and_wait(proc, signal.SIGINT, log)
    finally:
        stop_node(proc)


@needs_ros
def test_image_first_with_other_size_and_sigterm_ends_it(listener, ros_env, tmp_path) -> None:
    log = tmp_path / "camera.log"
    params = {"rate": 20.0, "width": 320, "height": 240, "fov_deg": 90.0, "info_first": False, "frame_id": "cam2"}
    proc = start_camera(params, ros_env, log)
    try:
        wait_for_frames(listener, proc, log)
        image = listener.images[0]
        assert (image.width, image.height, image.step, image.header.frame_id) == (320, 240, 960, "cam2")
        stamp = stamp_of(image)
        wait_until(
            lambda: any(stamp_of(i) == stamp for i in listener.infos),
            10.0,
            listener.spin,
            "the camera_info of the first image",
        )
        info = next(i for i in listener.infos if stamp_of(i) == stamp)
        assert info.k[0] == pytest.approx(160.0) and (info.k[2], info.k[5]) == (159.5, 119.5)  # 90 deg: fx = w/2
        signal_twice_and_wait(proc, signal.SIGTERM, log)
    finally:
        stop_node(proc)


@needs_ros
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": 0.0}, "parameter 'rate' must be positive"),
        ({"width": 8}, "parameter 'width' must be in 16..8192"),
        ({"fov_deg": 180.0}, "parameter 'fov_deg' must be between 1 and 179"),
    ],
)
def test_invalid_parameters_exit_1_with_one_line(ros_env, params: dict[str, object], message: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-m", MODULE, *ros_args(params)],
            cwd=PACKAGE_PARENT,
            env={**os.environ, **ros_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the demo camera with {params} did not exit within 60 s") from None
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == f"demo_camera: error: {message}" + done.stderr.split(message, 1)[1]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stdout + done.stderr
