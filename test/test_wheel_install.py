"""The offline tools from a built wheel, as a Ray worker or a Docker image installs the package: not editable, no
checkout beside it, no rclpy. The DepthRouting definition that the bag tool registers travels inside the wheel
(zoedepth_ros/offline/DepthRouting.msg, a link to msg/DepthRouting.msg in the checkout)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from test_bag_tool import read_bag, two_camera_messages, write_bag

REPO = Path(__file__).resolve().parents[1]

# Run with ``python -I`` (no cwd, no PYTHONPATH, no user site): the package comes from the wheel's files only, and
# every ROS Python package is made unimportable, as in a plain venv.
SCRIPT = """
import importlib.abc, sys
ROS = ("rclpy", "launch", "launch_ros", "sensor_msgs", "std_msgs", "rcl_interfaces", "diagnostic_msgs")
class NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ROS:
            raise ImportError(f"no {{name}} here (a venv without ROS)")
        return None
sys.meta_path.insert(0, NoRos())
sys.path.insert(0, {target!r})
import zoedepth_ros
from zoedepth_ros.offline.bag_writer import routing_definition_path
print("package", zoedepth_ros.__file__)
print("definition", routing_definition_path())
from zoedepth_ros.tools import bag
sys.exit(bag.main({argv!r}))
"""


@pytest.mark.timeout(900)
def test_the_bag_tool_runs_from_a_built_wheel_without_ros(tmp_path, tiny_checkpoint):
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels)]  # as pip builds it
    subprocess.run([*build, str(REPO)], check=True, timeout=600, cwd=tmp_path)
    (wheel,) = wheels.glob("zoedepth_ros-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("zoedepth_ros/offline/DepthRouting.msg").decode()
    assert shipped == (REPO / "msg" / "DepthRouting.msg").read_text()  # the one definition, as a file in the wheel
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, timeout=600, cwd=tmp_path)

    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(2))
    argv = [str(bag), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint("nk")), "--device", "cpu"]
    script = textwrap.dedent(SCRIPT.format(target=str(target), argv=argv))
    run = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.startswith(("package", "definition")))
    assert lines["package"].startswith(str(target)), lines
    assert lines["definition"] == str(target / "zoedepth_ros" / "offline" / "DepthRouting.msg"), lines
    out, conns, _ = read_bag(tmp_path / "out")
    assert conns["/cam0/routing"].msgtype == "zoedepth_ros/msg/DepthRouting" and len(out["/cam0/routing"]) == 2
    assert len(out["/cam1/depth/image"]) == 2
