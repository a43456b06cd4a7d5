"""Every rclpy, launch and launch_ros name the package and its launch file use exists on Humble, Jazzy and Kilted.

No Humble rclpy runs here, so this reads the upstream API listings in ``test/data/ros_api`` (see its README) and
checks the package's sources against each (``ros_api_check``): imports, attribute chains, call keywords and the
methods called on rclpy objects. What differs between distros goes through ``zoedepth_ros.ros.compat``, the one
module this check leaves out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ros_api_check import DISTROS, Api, defined_names, problems, uses

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO / "zoedepth_ros" / "ros" / "compat.py"


def shipped_sources() -> list[Path]:
    """The package, its launch file and the executables colcon installs."""
    files = sorted((REPO / "zoedepth_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    files += [REPO / "scripts" / "zoedepth_node", REPO / "scripts" / "zoedepth_demo_camera"]
    return [f for f in files if f != COMPAT]


@pytest.fixture(scope="module")
def apis() -> dict[str, Api]:
    return {d: Api.load(d) for d in DISTROS}


@pytest.fixture(scope="module")
def member_names(apis) -> set[str]:
    return {name for api in apis.values() for name in api.members_by_name}


@pytest.fixture(scope="module")
def package_uses():
    found = [u for f in shipped_sources() for u in uses(f)]
    return [u.__class__(str(Path(u.path).relative_to(REPO)), u.line, u.what, u.keywords) for u in found]


def test_the_listings_are_the_distros_they_say(apis):
    for distro, api in apis.items():  # a few facts of each distro, as upstream has them
        event_handler = "rclpy.event_handler" in api.modules
        assert event_handler == (distro != "humble"), distro
        assert ("rclpy.parameter_client" in api.modules) == (distro != "humble"), distro


def test_the_package_uses_rclpy_and_launch(package_uses):
    names = {u.what for u in package_uses}
    assert {"rclpy.lifecycle.LifecycleNode", "launch_ros.actions.LifecycleNode", "rclpy.qos.QoSProfile"} <= names


@pytest.mark.parametrize("distro", DISTROS)
def test_every_name_the_package_uses_exists_on(distro, apis, member_names, package_uses):
    ours = frozenset(defined_names(shipped_sources()))
    found = problems(apis[distro], package_uses, member_names, ours)
    assert not found, "\n".join(found)


OLD_CAMERA_UNIT = """
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import QoSProfile, qos_policy_name_from_kind
import rclpy

def matched(subs):
    rclpy.init(args=[], signal_handler_options=None, no_such_option=1)
    return all(s.get_publisher_count() > 0 for s in subs)

def log(node):
    node.get_logger().warn("x")
"""


def test_the_check_finds_what_humble_lacks(apis, member_names, tmp_path):
    """The code before the compatibility module: Humble has no rclpy.event_handler and no get_publisher_count."""
    source = tmp_path / "old.py"
    source.write_text(OLD_CAMERA_UNIT)
    found = problems(apis["humble"], list(uses(source)), member_names)
    assert any("rclpy.event_handler.SubscriptionEventCallbacks does not exist on humble" in p for p in found)
    assert any("get_publisher_count()" in p for p in found)
    assert any("'no_such_option'" in p for p in found)
    assert not any("qos_policy_name_from_kind" in p or "signal_handler_options" in p for p in found)
    kilted = problems(apis["kilted"], list(uses(source)), member_names)
    assert any("warn() is deprecated on kilted" in p for p in kilted)
    assert not any("event_handler" in p or "get_publisher_count" in p for p in kilted)
