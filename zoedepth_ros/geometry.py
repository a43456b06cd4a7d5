"""Camera intrinsics, depth back-projection, PointCloud2 packing and depth colouring, without ROS imports.

Conventions follow what ROS consumers of our topics compute, so that a cloud we publish matches the one
depth_image_proc would build from our depth image and CameraInfo:

* intrinsics come from the projection matrix P (not K), adjusted for ROI and binning as image_geometry's
  PinholeCameraModel does;
* back-projection is X = (u - cx) * Z * (1/fx), Y = (v - cy) * Z * (1/fy) in float32 with 1/fx rounded from
  double, u and v being integer pixel indices (pixel centres at integer coordinates);
* clouds are organized, little-endian, x/y/z FLOAT32 with NaN for invalid depth, optionally with the packed
  ``rgb`` float field PCL and RViz read.

All tensor work runs on the input's device, so the GPU does the per-pixel work and the host copies one finished
byte buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "FLOAT32",
    "POINT_STEP_XYZ",
    "POINT_STEP_XYZRGB",
    "CameraInfoError",
    "Intrinsics",
    "camera_info_fields",
    "cloud_fields",
    "colorize_depth",
    "depth_to_cloud",
    "depth_to_points",
    "fill_camera_info",
    "pack_points",
]

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
POINT_STEP_XYZ = 16  # x y z + 4 pad bytes: 16-byte points keep every point aligned for SIMD/GPU readers
POINT_STEP_XYZRGB = 32  # x y z pad rgb + 12 pad bytes, the layout PCL's PointXYZRGB uses


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


def _check_depth(depth: torch.Tensor) -> torch.Tensor:
    if depth.dim() != 2:
        raise ValueError(f"depth must be a (H, W) tensor, got shape {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ValueError(f"depth must be a floating-point tensor in metres, got {depth.dtype}")
    return depth if depth.dtype == torch.float32 else depth.to(torch.float32)


def _xyz_planes(depth: torch.Tensor, intr: Intrinsics, decimation: int) -> tuple[torch.Tensor, ...]:
    """x, y, z as (h, w) float32 tensors, computed exactly as depth_image_proc's float32 arithmetic."""
    depth = _check_depth(depth)
    intr.check_image(depth.shape[1], depth.shape[0])
    d = int(decimation)
    if d < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation}")
    z = depth[::d, ::d] if d > 1 else depth
    # depth_image_proc marks non-finite float depth invalid (x = y = z = NaN). (z - z) + z is z for finite z and
    # NaN for NaN/inf, ten times cheaper than torch.where(isfinite(z), ...); the NaN then propagates to x and y.
    z = (z - z).add_(z)
    # Round the constants to float32 here, as the C++ does (float center_x = cx; float constant_x = 1.0 / fx).
    cx, cy = float(np.float32(intr.cx)), float(np.float32(intr.cy))
    kx, ky = float(np.float32(1.0 / intr.fx)), float(np.float32(1.0 / intr.fy))
    u = torch.arange(0, intr.width, d, device=z.device, dtype=torch.float32).sub_(cx)
    v = torch.arange(0, intr.height, d, device=z.device, dtype=torch.float32).sub_(cy)
    x = (u * z).mul_(kx)  # ((u - cx) * Z) * (1/fx), the C++ evaluation order, so results match bit for bit
    y = (v.unsqueeze(1) * z).mul_(ky)
    return x, y, z


def depth_to_points(depth: torch.Tensor, intr: Intrinsics, decimation: int = 1) -> torch.Tensor:
    """(ceil(H/d), ceil(W/d), 3) float32 points in the camera optical frame from an (H, W) metric depth map.

    Uses pixels depth[::d, ::d] at their original coordinates (u = j*d, v = i*d), so a decimated cloud is a
    subset of the full one. Non-finite depth gives a NaN point; zero or negative depth is kept, as
    depth_image_proc does for float images. ``depth``'s size must match ``intr``. Runs on depth's device.
    """
    x, y, z = _xyz_planes(depth, intr, decimation)
    points = torch.empty((*z.shape, 3), dtype=torch.float32, device=z.device)
    _write_xyz(points, x, y, z)
    return points


def cloud_fields(color: bool) -> list[tuple[str, int, int, int]]:
    """(name, offset, datatype, count) of the PointField entries matching :func:`pack_points`' layout."""
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
    if color:
        fields.append(("rgb", 16, FLOAT32, 1))
    return fields


def _cloud_buffer(h: int, w: int, color: bool, device: torch.device, out: torch.Tensor | None) -> torch.Tensor:
    """A zeroed (h, w, 4 or 8) float32 buffer, reusing ``out`` (a previous result) when it fits.

    Zeroing the whole buffer is one contiguous memset, far cheaper than clearing the pad lanes through strided
    writes, and it guarantees the pad bytes are zero even in a reused buffer.
    """
    lanes = 8 if color else 4
    if out is None:
        return torch.zeros((h, w, lanes), dtype=torch.float32, device=device)
    if out.shape != (h, w * lanes * 4) or out.dtype != torch.uint8 or out.device != device or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous ({h}, {w * lanes * 4}) uint8 tensor on {device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    return out.view(torch.float32).view(h, w, lanes).zero_()


def _write_rgb(buf: torch.Tensor, rgb: torch.Tensor) -> None:
    """Store the packed colour of an (h, w, 3) uint8 tensor at byte offset 16 of each point in ``buf``.

    The field is the little-endian uint32 (r << 16) | (g << 8) | b, i.e. the bytes b, g, r, 0. Writing those
    three bytes directly is twice as fast as integer shifts on an int32 view (and needs no float dot product,
    which TF32 matmuls would round); byte 19 stays zero from the zeroed buffer.
    """
    h, w = buf.shape[:2]
    if rgb.shape != (h, w, 3) or rgb.dtype != torch.uint8:
        raise ValueError(f"rgb must be a ({h}, {w}, 3) uint8 tensor, got {tuple(rgb.shape)} {rgb.dtype}")
    rgb = rgb.to(buf.device)
    b8 = buf.view(torch.uint8)  # (h, w, point_step)
    b8[..., 16] = rgb[..., 2]
    b8[..., 17] = rgb[..., 1]
    b8[..., 18] = rgb[..., 0]


def _write_xyz(buf: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> None:
    """Fill lanes 0..2 one plane at a time (faster than one (h, w, 3) strided copy or torch.stack)."""
    buf[..., 0] = x
    buf[..., 1] = y
    buf[..., 2] = z


def pack_points(
    points: torch.Tensor, rgb: torch.Tensor | None = None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """PointCloud2 ``data`` as an (h, w * point_step) uint8 tensor on the points' device.

    Layout (little-endian; x y z are written in host order, and every platform we run on is little-endian):
    x y z FLOAT32 at 0/4/8, zero padding, and with ``rgb`` ((h, w, 3) uint8, e.g. ``to_rgb8(...)[::d, ::d]``)
    a FLOAT32 at offset 16 holding the bits of (r << 16) | (g << 8) | b; point_step 16 or 32, row_step
    w * point_step. Copy it to the host once (``.cpu().numpy()``) and hand the bytes to the message.

    ``out``, a previous result of the same size and device, is overwritten and returned instead of allocating.
    On the CPU this matters: a fresh 10 MB buffer per frame can cost more in page faults than the packing
    itself. Do not pass a buffer whose bytes are still in use.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (h, w, 3), got shape {tuple(points.shape)}")
    h, w, _ = points.shape
    buf = _cloud_buffer(h, w, rgb is not None, points.device, out)
    _write_xyz(buf, points[..., 0], points[..., 1], points[..., 2])
    if rgb is not None:
        _write_rgb(buf, rgb)
    return buf.view(torch.uint8).view(h, -1)


def depth_to_cloud(
    depth: torch.Tensor,
    intr: Intrinsics,
    rgb: torch.Tensor | None = None,
    decimation: int = 1,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``pack_points(depth_to_points(depth, intr, decimation), rgb)`` without the intermediate (h, w, 3) tensor.

    Same bytes, fewer passes over memory: x, y and z are written straight into the cloud buffer. ``rgb`` is the
    full-size (H, W, 3) uint8 image and is decimated here like the depth.
    """
    x, y, z = _xyz_planes(depth, intr, decimation)
    h, w = z.shape
    buf = _cloud_buffer(h, w, rgb is not None, z.device, out)
    _write_xyz(buf, x, y, z)
    if rgb is not None:
        d = int(decimation)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"rgb must be a ({depth.shape[0]}, {depth.shape[1]}, 3) image, got {tuple(rgb.shape)}")
        _write_rgb(buf, rgb[::d, ::d] if d > 1 else rgb)
    return buf.view(torch.uint8).view(h, -1)


# Turbo colormap, polynomial approximation by Anton Mikhailov and Ruofei Du (Google, Apache-2.0): per channel,
# the coefficients of 1, t, ..., t^5. The fit's very ends bend back (hue is not monotone within ~0.02 of 0 and
# 1), so depth is mapped to t in [_T_FAR, _T_NEAR] where hue changes monotonically from blue to red.
_TURBO = (
    (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
    (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
    (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
)
_T_NEAR = 0.95
_T_FAR = 0.05


def colorize_depth(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """(H, W, 3) uint8 turbo-coloured depth for viewing: near (min_depth) red, far (max_depth) blue.

    Depths outside [min_depth, max_depth] take the end colours; non-finite depth (invalid) is black, which
    turbo itself never produces. Runs on depth's device.
    """
    if not (math.isfinite(min_depth) and math.isfinite(max_depth) and max_depth > min_depth):
        raise ValueError(f"need finite min_depth < max_depth, got {min_depth}, {max_depth}")
    depth = _check_depth(depth)
    near = (max_depth - depth).div_(max_depth - min_depth).clamp_(0.0, 1.0)  # 1 at min_depth, 0 at max_depth
    t = near.mul_(_T_NEAR - _T_FAR).add_(_T_FAR)
    rgb = torch.empty((*depth.shape, 3), dtype=torch.uint8, device=depth.device)
    valid = torch.isfinite(depth)
    for i, coeffs in enumerate(_TURBO):
        acc = torch.full_like(t, coeffs[-1])
        for c in reversed(coeffs[:-1]):  # Horner's rule
            acc.mul_(t).add_(c)
        # NaN depth made acc NaN, whose uint8 cast is undefined; the multiply by the mask makes it black.
        rgb[..., i] = acc.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).mul_(valid)
    return rgb
