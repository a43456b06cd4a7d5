"""Camera intrinsics from a CameraInfo, in image_geometry's conventions, and the CameraInfo to publish with depth.

Intrinsics come from the projection matrix P (not K), adjusted for ROI and binning as image_geometry's
PinholeCameraModel does, so that a cloud built from our depth and CameraInfo matches depth_image_proc's. No ROS
import here: CameraInfo messages are read and filled through their attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class CameraInfoError(ValueError):
    """A CameraInfo that cannot give usable intrinsics for our images; the message names the problem."""


def _floats(values: Any, n: int, name: str) -> list[float]:
    """A CameraInfo matrix as n Python floats (rclpy gives numpy arrays; hand-built infos may give lists)."""
    try:
        out = [float(x) for x in values]
    except (TypeError, ValueError) as exc:
        raise CameraInfoError(f"CameraInfo {name} is not a list of numbers: {exc}") from None
    if len(out) != n:
        raise CameraInfoError(f"CameraInfo {name} has {len(out)} values, expected {n}")
    return out


def _usable_focal(fx: float, fy: float) -> bool:
    return math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the images they belong to (width x height), in image_geometry's conventions."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        """Refuse values that would silently produce inf/NaN clouds later."""
        if not _usable_focal(self.fx, self.fy):
            raise CameraInfoError(f"unusable focal lengths fx={self.fx}, fy={self.fy} (need finite and > 0)")
        if not (math.isfinite(self.cx) and math.isfinite(self.cy)):
            raise CameraInfoError(f"unusable principal point cx={self.cx}, cy={self.cy}")
        if self.width <= 0 or self.height <= 0:
            raise CameraInfoError(f"intrinsics for a zero-size image {self.width}x{self.height}")

    @classmethod
    def from_camera_info(cls, info: Any) -> Intrinsics:
        """Intrinsics of the images a sensor_msgs/CameraInfo describes, as image_geometry computes them.

        fx, fy, cx, cy come from P (P[0], P[5], P[2], P[6]); then cx -= roi.x_offset, cy -= roi.y_offset; then
        fx, cx are divided by binning_x and fy, cy by binning_y (binning 0 means 1). The image size is
        (roi.width or width) // binning_x by (roi.height or height) // binning_y, the roi size counting only when
        non-zero.

        Extension over image_geometry: when P's focal lengths are both zero (P never filled in, as for cameras
        that only publish K), K (K[0], K[4], K[2], K[5]) is used instead; image_geometry would divide by zero.
        A P with any other unusable focal length is an error rather than a silent fallback, because a non-zero
        P is the calibration's authority and a broken one should be fixed, not papered over.
        """
        width, height = int(info.width), int(info.height)
        if width <= 0 or height <= 0:
            raise CameraInfoError(f"CameraInfo image size is {width}x{height}; is the camera calibrated?")
        p = _floats(info.p, 12, "P")
        k = _floats(info.k, 9, "K")
        if p[0] == 0.0 and p[5] == 0.0:
            fx, fy, cx, cy = k[0], k[4], k[2], k[5]
            if not _usable_focal(fx, fy):
                raise CameraInfoError(
                    f"CameraInfo has no usable intrinsics: P is zero and K has fx={fx}, fy={fy}; "
                    "is the camera calibrated?"
                )
            source = "K"
        else:
            fx, fy, cx, cy = p[0], p[5], p[2], p[6]
            if not _usable_focal(fx, fy):
                raise CameraInfoError(f"CameraInfo P has unusable focal lengths fx={fx}, fy={fy}")
            source = "P"
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise CameraInfoError(f"CameraInfo {source} has an unusable principal point cx={cx}, cy={cy}")

        roi = info.roi
        x_off, y_off = int(roi.x_offset), int(roi.y_offset)
        roi_w, roi_h = int(roi.width), int(roi.height)
        if x_off + roi_w > width or y_off + roi_h > height:
            raise CameraInfoError(
                f"CameraInfo roi {roi_w}x{roi_h}+{x_off}+{y_off} does not fit in the {width}x{height} image"
            )
        if x_off != 0 or y_off != 0:
            cx -= x_off
            cy -= y_off
        bin_x = int(info.binning_x) or 1
        bin_y = int(info.binning_y) or 1
        if bin_x > 1:
            fx /= bin_x
            cx /= bin_x
        if bin_y > 1:
            fy /= bin_y
            cy /= bin_y
        out_w = (roi_w or width) // bin_x
        out_h = (roi_h or height) // bin_y
        if out_w <= 0 or out_h <= 0:
            raise CameraInfoError(f"CameraInfo binning {bin_x}x{bin_y} leaves a zero-size image")
        return cls(fx=fx, fy=fy, cx=cx, cy=cy, width=out_w, height=out_h)

    def check_image(self, width: int, height: int) -> None:
        """Raise :class:`CameraInfoError` unless an image of width x height is the one these intrinsics describe."""
        if (int(width), int(height)) != (self.width, self.height):
            raise CameraInfoError(
                f"CameraInfo is for {self.width}x{self.height} images but the image is {width}x{height}"
            )

    def scaled(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of the same view resampled to width x height (e.g. the model's depth map resized).

        With sx = width / self.width and sy likewise: fx' = fx * sx, fy' = fy * sy, and the principal point uses
        the pixel-centre convention cx' = (cx + 0.5) * sx - 0.5 (cy likewise). Pixel i covers [i - 0.5, i + 0.5]
        in ROS/OpenCV coordinates, so resizing (torch's interpolate with align_corners=False, OpenCV's resize,
        PIL) maps edges to edges and a continuous coordinate x to (x + 0.5) * s - 0.5. image_proc's resize uses
        cx * sx, which is off by (sx - 1) / 2 pixels (a quarter pixel when halving), so we do not copy it.
        """
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise CameraInfoError(f"cannot scale intrinsics to a zero-size image {width}x{height}")
        if (width, height) == (self.width, self.height):
            return self
        sx = width / self.width
        sy = height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )


def camera_info_fields(intr: Intrinsics, template: Any) -> dict[str, Any]:
    """Fields of the CameraInfo to publish beside a depth image of ``intr``'s size.

    K and P are [fx 0 cx; 0 fy cy; 0 0 1] (P with a zero fourth column: Tx = Ty = 0, monocular); binning is 0
    and the roi zero because ``intr`` already has them baked in, so image_geometry on the published info yields
    exactly ``intr``. d, distortion_model and r are copied from ``template`` (the incoming camera's info).
    ``roi`` is a dict of RegionOfInterest fields, since this module builds no ROS messages; see
    :func:`fill_camera_info` to apply everything to a message.
    """
    fx, fy, cx, cy = intr.fx, intr.fy, intr.cx, intr.cy
    return {
        "width": intr.width,
        "height": intr.height,
        "distortion_model": str(template.distortion_model),
        "d": [float(x) for x in template.d],
        "k": [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        "r": _floats(template.r, 9, "R"),
        "p": [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        "binning_x": 0,
        "binning_y": 0,
        "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
    }


def fill_camera_info(msg: Any, intr: Intrinsics, template: Any) -> Any:
    """Set :func:`camera_info_fields` on a CameraInfo message (header untouched) and return it."""
    fields = camera_info_fields(intr, template)
    for name, value in fields.pop("roi").items():
        setattr(msg.roi, name, value)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg
