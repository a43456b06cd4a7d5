"""The rclpy differences between Humble, Jazzy, Kilted and Rolling, in one place.

Everything in the package (node, demo camera, benchmarks) and the tests reach these APIs through here, so a
distro difference is handled once and ``test/test_ros_api_compat.py`` can check every other rclpy name the package
uses against the upstream API listings of each distro (``test/data/ros_api/``).

- ``SubscriptionEventCallbacks``: ``rclpy.event_handler`` from Iron on, ``rclpy.qos_event`` on Humble.
- ``publisher_count``: ``Subscription.get_publisher_count()`` appeared in Iron; Humble counts the publishers of the
  subscription's topic in the graph instead (the same number once discovery has settled).
- ``parameter_client``: ``rclpy.parameter_client.AsyncParameterClient`` appeared in Iron; on Humble a small client
  over the node's standard parameter services offers the calls the tests make.
- ``localhost_only_env``: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` from Iron on; Humble reads
  ``ROS_LOCALHOST_ONLY=1`` (deprecated, and warned about, on Jazzy and later).

Importing this module does not import rclpy (the benchmarks' process helpers use ``distro`` without ROS).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = [
    "SubscriptionEventCallbacks",  # noqa: F822 (module __getattr__)
    "distro",
    "localhost_only_env",
    "parameter_client",
    "publisher_count",
]


def event_callbacks_class() -> type:
    """rclpy's ``SubscriptionEventCallbacks``: ``rclpy.event_handler`` (Iron+) or ``rclpy.qos_event`` (Humble)."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ModuleNotFoundError as e:
        if e.name != "rclpy.event_handler":
            raise  # no rclpy at all: say so
        from rclpy.qos_event import SubscriptionEventCallbacks
    return SubscriptionEventCallbacks


def __getattr__(name: str) -> Any:
    if name == "SubscriptionEventCallbacks":
        return event_callbacks_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# rclpy's major version per distro (package.xml of each branch): the fallback when ROS_DISTRO is not set, as in
# a venv of PyPI wheels. A newer major than the last named is Rolling.
RCLPY_MAJOR_TO_DISTRO = {1: "foxy", 2: "galactic", 3: "humble", 4: "iron", 7: "jazzy", 9: "kilted"}


@functools.cache
def rclpy_major() -> int | None:
    """The installed rclpy's major version, from its package metadata (a distro's or the PyPI wheel's)."""
    for dist in ("rclpy", "ros-rclpy"):
        try:
            return int(version(dist).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
    return None


def distro(environ: Mapping[str, str] = os.environ) -> str | None:
    """The ROS 2 distro in use: ``$ROS_DISTRO`` (set by a distro's setup.bash), else inferred from rclpy's
    version; None when neither says."""
    name = environ.get("ROS_DISTRO", "").strip().lower()
    if name:
        return name
    major = rclpy_major()
    if major is None:
        return None
    return RCLPY_MAJOR_TO_DISTRO.get(major, "rolling" if major > max(RCLPY_MAJOR_TO_DISTRO) else None)


def localhost_only_env(name: str | None = None) -> dict[str, str]:
    """The environment that keeps DDS discovery on this host, for ``name`` (default: this process's distro)."""
    if (name or distro()) == "humble":
        return {"ROS_LOCALHOST_ONLY": "1"}
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def publisher_count(node: Any, subscription: Any) -> int:
    """Publishers matched with ``subscription`` (Iron+), or publishing its topic in the graph (Humble)."""
    get = getattr(subscription, "get_publisher_count", None)
    if get is not None:
        return get()
    return node.count_publishers(subscription.topic_name)


class ServiceParameterClient:
    """The part of ``AsyncParameterClient`` the tests use, over the remote node's parameter services (Humble)."""

    def __init__(self, node: Any, remote_node_name: str) -> None:
        from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters

        self._node = node
        name = remote_node_name.rstrip("/")
        self._get = node.create_client(GetParameters, f"{name}/get_parameters")
        self._set = node.create_client(SetParameters, f"{name}/set_parameters")
        self._list = node.create_client(ListParameters, f"{name}/list_parameters")
        self._describe = node.create_client(DescribeParameters, f"{name}/describe_parameters")

    def wait_for_services(self, timeout_sec: float | None = None) -> bool:
        """True once every parameter service answers discovery within ``timeout_sec`` in all."""
        end = None if timeout_sec is None else time.monotonic() + timeout_sec
        for client in (self._get, self._set, self._list, self._describe):
            left = None if end is None else max(0.0, end - time.monotonic())
            if not client.wait_for_service(timeout_sec=left):
                return False
        return True

    def get_parameters(self, names: list[str]) -> Any:
        """A future of ``GetParameters.Response`` for ``names``."""
        return self._get.call_async(self._get.srv_type.Request(names=list(names)))

    def set_parameters(self, parameters: list[Any]) -> Any:
        """A future of ``SetParameters.Response``; ``parameters`` are ``rclpy.parameter.Parameter``s."""
        request = self._set.srv_type.Request(parameters=[p.to_parameter_msg() for p in parameters])
        return self._set.call_async(request)

    def list_parameters(self, prefixes: list[str] | None = None, depth: int = 0) -> Any:
        """A future of ``ListParameters.Response``."""
        return self._list.call_async(self._list.srv_type.Request(prefixes=list(prefixes or []), depth=depth))

    def describe_parameters(self, names: list[str]) -> Any:
        """A future of ``DescribeParameters.Response``."""
        return self._describe.call_async(self._describe.srv_type.Request(names=list(names)))

    def destroy(self) -> None:
        for client in (self._get, self._set, self._list, self._describe):
            self._node.destroy_client(client)


def parameter_client(node: Any, remote_node_name: str) -> Any:
    """A parameter client for ``remote_node_name``: rclpy's ``AsyncParameterClient`` where it exists (Iron+)."""
    try:
        from rclpy.parameter_client import AsyncParameterClient
    except ImportError:  # Humble
        return ServiceParameterClient(node, remote_node_name)
    return AsyncParameterClient(node, remote_node_name)
