"""The rclpy compatibility layer (``zoedepth_ros.ros.compat``): its Humble paths, exercised on this distro's rclpy.

No Humble rclpy runs here, so each Humble fallback is forced (the newer API hidden) and checked against the
newer API on the same graph; ``test_ros_api_compat.py`` checks the names against Humble's real API listing.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest

from zoedepth_ros.ros import compat

try:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
except ImportError as e:
    rclpy = None
    IMPORT_ERROR = f"{type(e).__name__}: {e}"
else:
    IMPORT_ERROR = ""

needs_ros = pytest.mark.skipif(rclpy is None, reason=f"ROS 2 (rclpy, std_msgs, rcl_interfaces): {IMPORT_ERROR}")
DOMAIN_ID = 20 + os.getpid() % 20


def test_distro_names(monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "Humble")
    assert compat.distro() == "humble"
    assert compat.localhost_only_env() == {"ROS_LOCALHOST_ONLY": "1"}
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    assert compat.localhost_only_env() == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    monkeypatch.delenv("ROS_DISTRO")
    stamp = Path(sys.prefix) / "zoedepth_ros_distro"  # scripts/setup.sh records the distro of the venv's wheels
    if rclpy is not None and stamp.is_file():  # a venv of PyPI wheels sets no ROS_DISTRO: rclpy's version says
        assert compat.distro() == stamp.read_text().strip()


@needs_ros
def test_event_callbacks_come_from_qos_event_on_humble(monkeypatch):
    humble = types.ModuleType("rclpy.qos_event")

    class SubscriptionEventCallbacks:  # Humble's class, in Humble's module
        pass

    humble.SubscriptionEventCallbacks = SubscriptionEventCallbacks
    monkeypatch.setitem(sys.modules, "rclpy.event_handler", None)  # Humble has no rclpy.event_handler
    monkeypatch.setitem(sys.modules, "rclpy.qos_event", humble)
    assert compat.event_callbacks_class() is SubscriptionEventCallbacks
    from zoedepth_ros.ros.compat import SubscriptionEventCallbacks as imported

    assert imported is SubscriptionEventCallbacks
    monkeypatch.undo()
    from rclpy.event_handler import SubscriptionEventCallbacks as newer

    assert compat.event_callbacks_class() is newer


def test_a_missing_rclpy_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "rclpy", None)
    monkeypatch.setitem(sys.modules, "rclpy.event_handler", None)
    with pytest.raises(ImportError, match="rclpy"):
        compat.event_callbacks_class()


class HumbleSubscription:
    """A subscription as Humble's rclpy has it: no ``get_publisher_count``."""

    def __init__(self, subscription) -> None:
        self.topic_name = subscription.topic_name


@pytest.fixture
def ros_node(monkeypatch):
    for k, v in compat.localhost_only_env().items():
        monkeypatch.setenv(k, v)
    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("compat_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(executor, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        executor.spin_once(timeout_sec=0.05)


@needs_ros
def test_publisher_count_on_humble_equals_the_newer_call(ros_node):
    node, executor = ros_node
    sub = node.create_subscription(String, "compat_chatter", lambda _: None, 10)
    humble = HumbleSubscription(sub)
    assert compat.publisher_count(node, sub) == 0 == compat.publisher_count(node, humble)
    pubs = [node.create_publisher(String, "compat_chatter", 10) for _ in range(2)]
    spin_until(executor, lambda: sub.get_publisher_count() == 2, 10, "two matched publishers")
    assert compat.publisher_count(node, sub) == 2 == compat.publisher_count(node, humble)
    node.destroy_publisher(pubs[0])
    spin_until(executor, lambda: compat.publisher_count(node, humble) == 1, 10, "one publisher in the graph")


@needs_ros
def test_the_humble_parameter_client_gets_and_sets(ros_node):
    node, executor = ros_node
    remote = rclpy.create_node("compat_remote", context=node.context)
    executor.add_node(remote)
    remote.declare_parameter("gain", 1.5)
    remote.declare_parameter("fixed", "a", ParameterDescriptor(read_only=True))
    try:
        client = compat.ServiceParameterClient(node, "/compat_remote")
        assert client.wait_for_services(timeout_sec=20.0)

        def call(future):
            spin_until(executor, future.done, 10, "a parameter service answer")
            return future.result()

        set_result = call(client.set_parameters([Parameter("gain", value=2.5), Parameter("fixed", value="b")]))
        assert [r.successful for r in set_result.results] == [True, False]
        assert remote.get_parameter("gain").value == 2.5 and remote.get_parameter("fixed").value == "a"
        values = call(client.get_parameters(["gain", "fixed"])).values
        assert [values[0].double_value, values[1].string_value] == [2.5, "a"]
        assert {"gain", "fixed"} <= set(call(client.list_parameters()).result.names)
        assert call(client.describe_parameters(["fixed"])).descriptors[0].read_only
        # the newer rclpy's own client agrees (Iron+), and parameter_client picks it where it exists
        newer = compat.parameter_client(node, "/compat_remote")
        assert type(newer).__name__ == "AsyncParameterClient"
        assert newer.wait_for_services(timeout_sec=20.0)
        assert call(newer.get_parameters(["gain"])).values[0].double_value == 2.5
        client.destroy()
    finally:
        executor.remove_node(remote)
        remote.destroy_node()


@needs_ros
def test_parameter_client_falls_back_without_rclpy_parameter_client(ros_node, monkeypatch):
    node, _ = ros_node
    monkeypatch.setitem(sys.modules, "rclpy.parameter_client", None)  # Humble
    client = compat.parameter_client(node, "/somewhere/else")
    assert isinstance(client, compat.ServiceParameterClient)
    assert not client.wait_for_services(timeout_sec=0.2)
    client.destroy()
