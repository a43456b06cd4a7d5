"""The demo's 640x480 images arrive whole on stock Fast DDS, and the "middleware lost" advice fits the distro.

Stock Fast DDS loses most best-effort samples over 512 KB between processes (Kilted wheels, 640x480 rgb8 at 10 Hz
into the node's best-effort input: 33-65 of ~115 received, 51-78 message-lost events per 12 s). The demo's own
processes therefore load the shipped profile (``zoedepth_ros.ros.fastdds.demo_env``) unless the user chose a
middleware setting. The end-to-end tests run the launch file's ``demo:=true`` and ``zoedepth-ros-demo`` with that
setting removed from the environment (the other DDS tests set it themselves), at the demo's default 640x480,
and check that every demo process got the profile and that the node warned of no loss.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ros_graph import REPO

from zoedepth_ros.ros import compat, fastdds

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image
except ImportError:  # a venv without ROS: the end-to-end tests skip
    rclpy = None

DOMAIN = 1 + os.getpid() % 19  # 1..19: clear of the other DDS tests' domains (20 and up)
USER_SETTINGS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
LOST = "the middleware lost"
PROFILE = fastdds.shipped_profile()


# ------------------------------------------------------------------ the advice and the setting, per distro


@pytest.mark.parametrize(
    ("distro", "name", "version"),
    [
        ("humble", "FASTRTPS_DEFAULT_PROFILES_FILE", "2.6"),
        ("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE", "2.14"),
        ("kilted", "FASTDDS_DEFAULT_PROFILES_FILE", "3"),
        ("rolling", "FASTDDS_DEFAULT_PROFILES_FILE", "3"),
    ],
)
def test_advice_names_the_variable_this_distros_fast_dds_reads(distro, name, version):
    advice = fastdds.large_data_advice({"ROS_DISTRO": distro}, Path("/p/fastdds_large_shm.xml"))
    assert f"export {name}=/p/fastdds_large_shm.xml ({distro.capitalize()}'s Fast DDS {version} reads that name)" in (
        advice
    )
    other = ({"FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"} - {name}).pop()
    assert other not in advice
    assert "the camera driver's included" in advice and "README: large images" in advice
    assert "LARGE_DATA" not in advice


def test_advice_says_a_profile_under_the_other_name_is_not_read():
    env = {"ROS_DISTRO": "jazzy", "FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}  # the Kilted name, on Jazzy
    advice = fastdds.large_data_advice(env, Path("/p.xml"))
    assert "export FASTRTPS_DEFAULT_PROFILES_FILE=/p.xml" in advice
    assert "FASTDDS_DEFAULT_PROFILES_FILE, set here, is not read by Jazzy's Fast DDS 2.14" in advice


def test_advice_when_this_process_has_a_profile_points_at_the_camera_driver():
    env = {"ROS_DISTRO": "kilted", "FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}
    advice = fastdds.large_data_advice(env, Path("/p.xml"))
    assert advice.startswith("this process loads FASTDDS_DEFAULT_PROFILES_FILE=/mine.xml; the camera driver's")
    assert "export FASTDDS_DEFAULT_PROFILES_FILE=/mine.xml there as well" in advice


def test_advice_for_builtin_transports_and_for_other_middlewares():
    env = {"ROS_DISTRO": "humble", "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    assert "profile instead of FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA: export FASTRTPS_" in fastdds.large_data_advice(
        env, Path("/p.xml")
    )
    advice = fastdds.large_data_advice({"ROS_DISTRO": "jazzy", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})
    assert advice.startswith("large images need rmw_cyclonedds_cpp configured for large messages") and (
        "Fast DDS" not in advice
    )


def test_unknown_distro_names_both_variables(monkeypatch):
    monkeypatch.setattr(compat, "rclpy_major", lambda: None)
    advice = fastdds.large_data_advice({}, Path("/p.xml"))
    assert "FASTDDS_DEFAULT_PROFILES_FILE=/p.xml (Fast DDS 3: Kilted on)" in advice
    assert "FASTRTPS_DEFAULT_PROFILES_FILE=/p.xml (Fast DDS 2: Humble, Jazzy)" in advice


@pytest.mark.parametrize(("major", "distro"), [(3, "humble"), (7, "jazzy"), (9, "kilted"), (5, None), (42, "rolling")])
def test_distro_from_rclpy_when_ros_distro_is_unset(monkeypatch, major, distro):
    monkeypatch.setattr(compat, "rclpy_major", lambda: major)
    assert fastdds.ros_distro({}) == distro
    assert fastdds.ros_distro({"ROS_DISTRO": "Jazzy"}) == "jazzy"  # the variable wins


def test_this_venv_is_recognised():
    if rclpy is None:
        pytest.skip("no rclpy")
    assert fastdds.ros_distro({}) in compat.RCLPY_MAJOR_TO_DISTRO.values()


@pytest.mark.parametrize(
    ("distro", "names"),
    [("humble", ["FASTRTPS_DEFAULT_PROFILES_FILE"]), ("kilted", ["FASTDDS_DEFAULT_PROFILES_FILE"])],
)
def test_demo_env_sets_the_distros_variable_to_the_shipped_profile(distro, names):
    env, note = fastdds.demo_env({"ROS_DISTRO": distro}, 3, shm_free=None)
    assert sorted(env) == names and set(env.values()) == {str(PROFILE)}
    assert note == f"the demo processes use the Fast DDS large-data profile: {names[0]}={PROFILE}"


@pytest.mark.parametrize(
    "choice",
    [
        {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"},
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"},
        {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
    ],
)
def test_demo_env_keeps_the_users_choice(choice):
    env, note = fastdds.demo_env({"ROS_DISTRO": "jazzy", **choice}, 3, shm_free=None)
    ((name, value),) = choice.items()
    assert env == {} and note == f"keeping your middleware setting {name}={value} for the demo processes"


def test_demo_env_with_fast_dds_named_explicitly_and_empty_values_is_set():
    env, _ = fastdds.demo_env(
        {"ROS_DISTRO": "kilted", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "FASTDDS_DEFAULT_PROFILES_FILE": ""},
        3,
        shm_free=None,
    )
    assert env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}


def test_demo_env_stays_stock_when_dev_shm_cannot_hold_the_segments():
    segment = fastdds.segment_bytes(PROFILE)
    assert segment == 48 * 1024 * 1024
    env, note = fastdds.demo_env({"ROS_DISTRO": "kilted"}, 3, shm_free=64 * 1024 * 1024)  # Docker's default
    assert env == {} and "--shm-size=512m" in note and "less than the 166 MB that 3 processes" in note
    assert fastdds.demo_env({"ROS_DISTRO": "kilted"}, 3, shm_free=3 * segment * 2)[0]


# ------------------------------------------------------------------ end to end, on stock Fast DDS


def stock_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` without any large-data setting (the user's shell on a fresh install)."""
    return {k: v for k, v in base.items() if k not in (*USER_SETTINGS, "RMW_IMPLEMENTATION")}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def cmdline_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def processes_with(text: str) -> dict[int, str]:
    """Live processes (not this one) whose command line contains ``text``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = cmdline_of(int(entry.name))
            except OSError:
                continue
            if text in cmdline:
                found[int(entry.name)] = cmdline
    return found


def expected_setting() -> dict[str, str]:
    return {name: str(PROFILE) for name in fastdds.profile_env_names(fastdds.ros_distro(os.environ))}


class DepthCounter:
    """This test's own participant: counts the node's (small, output_scale 0.25) depth images in ``ns``."""

    def __init__(self, ns: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("large_data_test", namespace=ns, context=self.context)
        self.sizes: list[tuple[int, int]] = []
        qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, "depth/image", lambda m: self.sizes.append((m.width, m.height)), qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, seconds: float, alive) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            alive()
            self.executor.spin_once(timeout_sec=0.1)
        return predicate()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the demo")
@pytest.mark.timeout(240)
def test_launch_demo_gives_every_demo_process_the_profile_and_loses_no_image(tiny_checkpoint, tmp_path):
    from test_launch import child_env

    env = child_env(DOMAIN)
    ros2 = shutil.which("ros2", path=env["PATH"])
    if ros2 is None:
        pytest.skip("the ROS 2 launch tools are not installed (../shared/ros_tools, or a ROS 2 distro)")
    from test_ros2cli import fake_rviz2

    seen = fake_rviz2(tmp_path / "rviz_prefix")  # rviz2 is not installed here: a stand-in that waits for SIGINT
    env["AMENT_PREFIX_PATH"] += os.pathsep + str(tmp_path / "rviz_prefix")
    ns = f"/zd_large_{os.getpid()}"
    params = tmp_path / "params.yaml"  # the node's outputs small, its input the demo camera's 640x480 rgb8
    params.write_text("/**:\n  ros__parameters:\n    output_scale: 0.25\n")
    log = tmp_path / "launch.log"
    launch = ("launch", "zoedepth_ros", "zoedepth.launch.py", f"namespace:={ns}", "demo:=true", "rviz:=true")
    model = (f"params_file:={params}", f"checkpoint:={tiny_checkpoint('nk')}", "device:=cpu")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [ros2, *launch, *model],
            env=stock_env({**os.environ, **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    counter = DepthCounter(ns)
    try:

        def alive() -> None:
            assert proc.poll() is None, log.read_text()

        assert counter.spin_until(lambda: len(counter.sizes) >= 2, 120, alive), "no depth:\n" + log.read_text()
        assert counter.sizes[-1] == (160, 120)
        demo = processes_with(f"__ns:={ns}")
        kinds = {k: [p for p, c in demo.items() if k in c] for k in ("zoedepth_node", "zoedepth_demo_camera", "rviz2")}
        assert all(len(pids) == 1 for pids in kinds.values()), demo
        for kind, (pid,) in kinds.items():
            got = environ_of(pid)
            assert {k: got.get(k) for k in expected_setting()} == expected_setting(), kind
        assert seen.exists()
        counter.spin_until(lambda: False, 8.0, alive)  # ~80 more 640x480 frames at the demo camera's 10 Hz
    finally:
        counter.close()
        stop(proc)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert LOST not in text, text
    note = " ".join(f"{k}={v}" for k, v in expected_setting().items())
    assert f"demo:=true: the demo processes use the Fast DDS large-data profile: {note}" in text, text


@pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the demo")
@pytest.mark.timeout(240)
def test_zoedepth_ros_demo_gives_its_processes_the_profile_and_loses_no_image(tiny_checkpoint, tmp_path):
    from ros_graph import isolated_ros_env

    log = tmp_path / "demo.log"
    args = ["--checkpoint", str(tiny_checkpoint("nk")), "--device", "cpu", "--seconds", "25"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zoedepth_ros.tools.demo", *args, "--", "-p", "output_scale:=0.25"],
            cwd=REPO,
            env=stock_env({**os.environ, **isolated_ros_env(DOMAIN)}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while len(children) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2, log.read_text()
        for pid in children:
            got = environ_of(pid)
            assert {k: got.get(k) for k in expected_setting()} == expected_setting(), cmdline_of(pid)
        proc.wait(timeout=120)
    finally:
        stop(proc)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert LOST not in text, text
    note = " ".join(f"{k}={v}" for k, v in expected_setting().items())
    assert f"zoedepth-ros-demo: the demo processes use the Fast DDS large-data profile: {note}" in text
    last = [line for line in text.splitlines() if "so far;" in line][-1]
    assert "depth/image" in last and "160x120" in last, text
