"""The fields of the output Image and PointCloud2 messages (all but header and data), without a ROS import.

``messages.py`` (rclpy, the node) and ``bag_writer.py`` (rosbags' classes, ``zoedepth-ros-bag``) build the same
messages from the same ``DepthFrame``; both spread these dicts into their constructors, so the two cannot drift
apart. Each sets the payload itself (their array types differ); CameraInfo is ``intrinsics.camera_info_fields``'
and the PointFields ``cloud.cloud_fields``'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine.cloud import POINT_STEP_XYZ, POINT_STEP_XYZRGB

if TYPE_CHECKING:
    from ..engine.pipeline import DepthFrame

DEPTH_ENCODING = "32FC1"  # metres
COLORMAP_ENCODING = "rgb8"
BYTES_PER_PIXEL = {DEPTH_ENCODING: 4, COLORMAP_ENCODING: 3}


def image_fields(frame: DepthFrame, encoding: str) -> dict[str, Any]:
    """An Image of the frame's depth size in ``encoding`` (``DEPTH_ENCODING`` or ``COLORMAP_ENCODING``)."""
    return {
        "height": frame.height,
        "width": frame.width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": BYTES_PER_PIXEL[encoding] * frame.width,
    }


def cloud_layout(frame: DepthFrame, color: bool) -> dict[str, Any]:
    """The organized cloud's size and point layout (the fields themselves: ``cloud.cloud_fields(color)``)."""
    step = POINT_STEP_XYZRGB if color else POINT_STEP_XYZ
    return {
        "height": frame.cloud_height,
        "width": frame.cloud_width,
        "is_bigendian": False,
        "point_step": step,
        "row_step": step * frame.cloud_width,
        "is_dense": False,
    }
