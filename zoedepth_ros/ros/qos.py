"""The one QoS recipe of the node, the demo camera and the benchmarks: keep-last, volatile, reliable or not.

Volatile keep-last matches every camera driver and consumer we interoperate with (rviz, depth_image_proc,
depthimage_to_laserscan, Nav2); reliability and depth are the node's ``qos.*`` parameters.
"""

from __future__ import annotations

from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy

RELIABILITIES = ("reliable", "best_effort")


def profile(reliability: str, depth: int) -> QoSProfile:
    """A keep-last ``depth``, volatile profile; ``reliability`` is "reliable" or "best_effort"."""
    if reliability not in RELIABILITIES:
        raise ValueError(f"unknown reliability {reliability!r}; use one of {', '.join(RELIABILITIES)}")
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=depth,
        durability=QoSDurabilityPolicy.VOLATILE,
        reliability=QoSReliabilityPolicy.RELIABLE if reliability == "reliable" else QoSReliabilityPolicy.BEST_EFFORT,
    )
