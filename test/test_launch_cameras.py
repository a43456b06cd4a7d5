"""The shipped launch file with ``cameras:=``: one node for two demo cameras, and the argument's checks.

launch_pytest starts ``demo:=true cameras:="[front, left]"`` in a namespace: a demo camera per camera, one node
serving both; each camera's depth must arrive on its own topics and have its own diagnostics status.
"""

from __future__ import annotations

import os
import time

import pytest
from ros_graph import module_env
from test_launch import TOOLS_REASON, apply_env, launch_fixture, launch_pytest, load_launch_module, shipped_launch_file

try:  # guarded, not a module-level skip: with launch_testing's pytest plugin that would skip the whole run
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_pytest.actions import ReadyToTest
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image

    from launch import LaunchDescription
except ImportError:
    pass

pytestmark = [pytest.mark.skipif(launch_pytest is None, reason=TOOLS_REASON), pytest.mark.timeout(120)]

DOMAIN = 100 + os.getpid() % 100 + 11  # test_node_dds.DOMAIN_ID + 11: clear of the other launch modules' 150..199
NS = "/cams_test"
CAMERAS = ("front", "left")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("[]", None),
        ("[front, left]", ["front", "left"]),
        ("[rear:compressed]", ["rear:compressed"]),
    ],
)
def test_camera_argument_values(text, expected):
    assert load_launch_module().camera_entries(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("front", "cameras:=front must be a list of relative namespaces like [front, left]"),
        ("[front", "cameras:=[front is not a YAML list like [front, left]"),
        ("[front, 3]", "must be a list of relative namespaces"),
        ("[/front]", "cameras entry '/front' is absolute"),
        ("[front, front]", "cameras lists 'front' twice"),
        ("[rear:jpeg]", "the transport after ':' must be one of raw, compressed"),
    ],
)
def test_bad_camera_arguments_stop_the_launch_with_one_line(text, message):
    module = load_launch_module()
    with pytest.raises(ValueError, match="cameras") as info:
        module.camera_entries(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_camera_namespaces():
    module = load_launch_module()
    assert module.camera_namespace("", "front") == "front"
    assert module.camera_namespace("/robot/", "front") == "/robot/front"
    assert module.camera_namespace("/robot", "") == "/robot"


launch_env = module_env(lambda mp: apply_env(mp, DOMAIN))


@launch_fixture(scope="module")
def two_demo_cameras(launch_env, tiny_checkpoint):
    return LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(shipped_launch_file()),
                launch_arguments={
                    "namespace": NS,
                    "cameras": f"[{', '.join(CAMERAS)}]",
                    "demo": "true",
                    "checkpoint": str(tiny_checkpoint("nk")),
                    "device": "cpu",
                }.items(),
            ),
            ReadyToTest(),
        ]
    )


@pytest.mark.launch(fixture=two_demo_cameras)
def test_one_node_serves_both_demo_cameras(launch_env):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node("launch_cameras_test", namespace=NS, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    depth: dict[str, list] = {cam: [] for cam in CAMERAS}
    diag: list = []
    try:
        reliable = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
        for cam in CAMERAS:
            node.create_subscription(Image, f"{cam}/depth/image", lambda m, c=cam: depth[c].append(m), reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)

        def statuses() -> dict[str, dict[str, str]]:
            return {st.name: {kv.key: kv.value for kv in st.values} for st in diag[-1].status} if diag else {}

        def served(cam: str) -> bool:
            return (
                bool(depth[cam])
                and int(statuses().get(f"zoedepth: ZoeDepth camera {cam}", {}).get("frames processed", 0)) > 0
            )

        deadline = time.monotonic() + 90
        while not all(served(cam) for cam in CAMERAS):
            assert time.monotonic() < deadline, f"depth per camera {[len(v) for v in depth.values()]}, {statuses()}"
            executor.spin_once(timeout_sec=0.1)
        for cam in CAMERAS:
            msg = depth[cam][-1]
            assert (msg.encoding, msg.width, msg.height) == ("32FC1", 640, 480)  # the demo camera's size
            assert statuses()[f"zoedepth: ZoeDepth camera {cam}"]["image topic"] == f"{NS}/{cam}/image"
        assert statuses()["zoedepth: ZoeDepth engine"]["cameras"] == "front, left"
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
