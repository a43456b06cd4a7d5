"""launch/zoedepth.launch.py: its arguments (always checked) and a real launch where launch_pytest exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "zoedepth.launch.py"
ARGUMENTS = {"namespace", "image", "camera_info", "params_file", "checkpoint", "device", "rviz"}


def declared_arguments() -> set[str]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    return {call.args[0].value for call in ast.walk(tree)
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument"}


def test_launch_file_declares_the_documented_arguments():
    assert declared_arguments() == ARGUMENTS
    text = LAUNCH_FILE.read_text()
    assert '("image", LaunchConfiguration("image"))' in text
    assert '("camera_info", LaunchConfiguration("camera_info"))' in text
    assert 'executable="zoedepth_node"' in text


try:  # launch_pytest and launch_ros come with a ROS 2 distro; the PyPI wheels have neither
    import launch_pytest
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_pytest.actions import ReadyToTest

    from launch import LaunchDescription
except ImportError:
    launch_pytest = None

if launch_pytest is None:

    def test_launch_file_runs_under_launch_pytest():
        pytest.skip("launch_pytest is not importable: it ships with a ROS 2 distro, not with the PyPI wheels")

else:

    @launch_pytest.fixture
    def launched(tiny_checkpoint):
        return LaunchDescription([
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                launch_arguments={"checkpoint": str(tiny_checkpoint("nk")), "device": "cpu",
                                  "image": "/launch_test/image", "camera_info": "/launch_test/camera_info"}.items()),
            ReadyToTest(),
        ])

    @pytest.mark.launch(fixture=launched)
    def test_launch_file_runs_under_launch_pytest():
        import time

        import rclpy
        from sensor_msgs.msg import Image

        rclpy.init()
        try:
            node = rclpy.create_node("launch_probe")
            publisher = node.create_publisher(Image, "/launch_test/image", 1)
            deadline = time.monotonic() + 60
            while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            assert publisher.get_subscription_count() > 0, "the launched node never subscribed to the remapped image"
        finally:
            rclpy.shutdown()
