"""Depth back-projection and organized PointCloud2 packing, on the depth's device, without ROS imports.

Back-projection is X = (u - cx) * Z * (1/fx), Y = (v - cy) * Z * (1/fy) in float32 with 1/fx rounded from
double, u and v being integer pixel indices, as depth_image_proc computes it. Clouds are organized,
little-endian, x/y/z FLOAT32 with NaN for invalid depth, optionally with the packed ``rgb`` float field PCL
and RViz read. The GPU does the per-pixel work and the host copies one finished byte buffer.
"""

from __future__ import annotations

import numpy as np
import torch

from .intrinsics import Intrinsics

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
POINT_STEP_XYZ = 16  # x y z + 4 pad bytes: 16-byte points keep every point aligned for SIMD/GPU readers
POINT_STEP_XYZRGB = 32  # x y z pad rgb + 12 pad bytes, the layout PCL's PointXYZRGB uses


def check_depth(depth: torch.Tensor) -> torch.Tensor:
    if depth.dim() != 2:
        raise ValueError(f"depth must be a (H, W) tensor, got shape {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ValueError(f"depth must be a floating-point tensor in metres, got {depth.dtype}")
    return depth if depth.dtype == torch.float32 else depth.to(torch.float32)


def _xyz_planes(depth: torch.Tensor, intr: Intrinsics, decimation: int) -> tuple[torch.Tensor, ...]:
    """x, y, z as (h, w) float32 tensors, computed exactly as depth_image_proc's float32 arithmetic."""
    depth = check_depth(depth)
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
