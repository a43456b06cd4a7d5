"""Build the node's output messages from pipeline results (``bytes`` payloads, never numpy arrays)."""

from __future__ import annotations

import array

from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from .geometry import POINT_STEP_XYZ, POINT_STEP_XYZRGB, cloud_fields, fill_camera_info
from .pipeline import DepthFrame


def _payload(data: bytes | array.array) -> array.array:
    """array.array goes through rosidl's buffer fast path; numpy arrays or memoryviews are ~100x slower.

    The pipeline already hands over array.array payloads (copied once out of pinned memory); those are used as
    they are, without another copy.
    """
    if isinstance(data, array.array) and data.typecode == "B":
        return data
    out = array.array("B")
    out.frombytes(data)
    return out


def depth_image(frame: DepthFrame, header) -> Image:
    return Image(header=header, height=frame.height, width=frame.width, encoding="32FC1", is_bigendian=0,
                 step=4 * frame.width, data=_payload(frame.depth))


def colormap_image(frame: DepthFrame, header) -> Image:
    return Image(header=header, height=frame.height, width=frame.width, encoding="rgb8", is_bigendian=0,
                 step=3 * frame.width, data=_payload(frame.colormap or b""))


def depth_camera_info(frame: DepthFrame, header, template: CameraInfo) -> CameraInfo:
    return fill_camera_info(CameraInfo(header=header), frame.intrinsics, template)


def point_cloud(frame: DepthFrame, header, color: bool) -> PointCloud2:
    step = POINT_STEP_XYZRGB if color else POINT_STEP_XYZ
    fields = [PointField(name=name, offset=offset, datatype=datatype, count=count)
              for name, offset, datatype, count in cloud_fields(color)]
    return PointCloud2(header=header, height=frame.cloud_height, width=frame.cloud_width, fields=fields,
                       is_bigendian=False, point_step=step, row_step=step * frame.cloud_width,
                       data=_payload(frame.cloud or b""), is_dense=False)


def routing_type() -> type:
    from .msg import DepthRouting  # generated at build time (colcon, or scripts/build_interfaces.sh)

    return DepthRouting


def routing(frame: DepthFrame, header):
    return routing_type()(header=header, domain=frame.domain, head=frame.head, probability=frame.probability,
                          logits=frame.logits, forced=frame.forced)
