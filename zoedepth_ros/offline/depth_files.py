"""Depth maps to and from files, and camera calibrations from YAML, without ROS.

Formats (depth is float32 metres, (H, W), NaN where invalid, as in ``DepthFrame.depth``):

- ``png16``: 16-bit greyscale PNG in millimetres, the NYU Depth v2 / RealSense convention most tools read:
  uint16 = round(depth * 1000), 0 = no depth. NaN, non-finite, negative and zero-rounding depths become 0, and so
  does depth whose millimetre value rounds above 65535 (depth >= 65.5355 m, which uint16 cannot hold; outdoor
  scenes can reach it with max_depth 80): those pixels are counted, so the caller can say how many were lost.
  Read back, 0 is NaN and everything else is within 0.5 mm of what was written.
- ``npy`` (numpy) and ``tiff`` (Pillow mode "F", deflate-compressed): float32 metres, bit-exact, NaN kept.
- a preview PNG: the node's turbo ``depth/colormap`` (:func:`zoedepth_ros.engine.colormap.colorize_depth`).
- a PLY point cloud: binary little-endian x y z float32 (+ r g b uchar), the node's points
  (:func:`zoedepth_ros.engine.cloud.depth_to_points`, so P-based and bit-identical), invalid points left out.

Every writer writes a temporary file beside the target and renames it, so an interrupted run leaves either the
old file or the new one, never half of one.

Calibrations: the camera_calibration / camera_info_manager YAML (image_width, image_height, camera_matrix,
distortion_model, distortion_coefficients, rectification_matrix, projection_matrix, each matrix as
{rows, cols, data}), read into intrinsics exactly as the node reads a CameraInfo (P first, see
:meth:`Intrinsics.from_camera_info`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import numpy as np
import torch

from ..engine.cloud import depth_to_points
from ..engine.colormap import colorize_depth
from ..engine.intrinsics import CameraInfoError, Intrinsics

MM_PER_M = 1000.0
PNG16_MAX_MM = 65535
FORMATS = ("png16", "npy", "tiff")
SUFFIXES = {"png16": ".png", "npy": ".npy", "tiff": ".tiff"}


class DepthFileError(ValueError):
    """A depth or calibration file that cannot be read or written; the message names the file and the problem."""


def check_depth(depth: np.ndarray) -> np.ndarray:
    """``depth`` as a float32 (H, W) array, or DepthFileError naming what is wrong with it."""
    depth = np.asarray(depth)
    if depth.ndim != 2 or 0 in depth.shape:
        raise DepthFileError(f"depth must be a non-empty (H, W) array, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise DepthFileError(f"depth must be floating-point metres, got {depth.dtype}")
    return depth.astype(np.float32, copy=False)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it on success and is removed on any failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_with(path: Path, write: Callable[[Path], None]) -> None:
    try:
        with _atomic(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise DepthFileError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- 16-bit millimetre PNG ------------------------------------------------------------------------------------


def depth_to_mm(depth: np.ndarray) -> tuple[np.ndarray, int]:
    """(uint16 millimetres with 0 = invalid, number of valid pixels too far for uint16 and so set to 0)."""
    depth = check_depth(depth)
    with np.errstate(invalid="ignore", over="ignore"):
        mm = np.rint(depth.astype(np.float64) * MM_PER_M)
    finite = np.isfinite(mm)
    too_far = finite & (mm > PNG16_MAX_MM)
    keep = finite & (mm > 0) & ~too_far
    out = np.zeros(depth.shape, dtype=np.uint16)
    out[keep] = mm[keep].astype(np.uint16)
    return out, int(too_far.sum())


def mm_to_depth(mm: np.ndarray) -> np.ndarray:
    """float32 metres from uint16 millimetres, NaN where 0."""
    depth = np.asarray(mm).astype(np.float32) / np.float32(MM_PER_M)
    depth[np.asarray(mm) == 0] = np.nan
    return depth


def write_png16(path: Path, depth: np.ndarray) -> int:
    """Write ``depth`` as a 16-bit millimetre PNG; returns how many pixels were beyond 65.535 m (written as 0)."""
    from PIL import Image

    mm, too_far = depth_to_mm(depth)
    _write_with(path, lambda tmp: Image.fromarray(mm).save(tmp, format="PNG"))
    return too_far


def read_png16(path: Path) -> np.ndarray:
    """float32 metres (NaN where 0) from a 16-bit millimetre depth PNG (ours, NYU's, a RealSense recorder's)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("I;16", "I;16L", "I;16B", "I"):
                raise DepthFileError(f"{path} is a {img.mode} image, not a 16-bit depth PNG")
            mm = np.asarray(img)
    except (OSError, SyntaxError) as exc:
        raise DepthFileError(f"cannot read {path}: {exc}") from None
    if mm.dtype != np.uint16:  # mode "I" (int32) from some writers: the same values
        if mm.min(initial=0) < 0 or mm.max(initial=0) > PNG16_MAX_MM:
            raise DepthFileError(f"{path} holds values outside 0..65535; not a millimetre depth PNG")
        mm = mm.astype(np.uint16)
    return mm_to_depth(mm)


# --- float32 npy and tiff -------------------------------------------------------------------------------------


def write_npy(path: Path, depth: np.ndarray) -> None:
    """Write ``depth`` as a float32 (H, W) ``.npy`` in metres, NaN kept."""
    depth = check_depth(depth)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save on a path would append ".npy" to the temporary name
            np.save(f, depth, allow_pickle=False)

    _write_with(path, write)


def read_npy(path: Path) -> np.ndarray:
    """float32 metres from a (H, W) ``.npy`` (never unpickles)."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DepthFileError(f"cannot read {path}: {exc}") from None
    return check_depth(depth)


def _tiff_compression() -> str | None:
    from PIL import features

    return "tiff_adobe_deflate" if features.check("libtiff") else None  # Pillow wheels ship libtiff


def write_tiff(path: Path, depth: np.ndarray) -> None:
    """Write ``depth`` as a single-channel float32 TIFF (Pillow mode "F") in metres, NaN kept."""
    from PIL import Image

    depth = np.ascontiguousarray(check_depth(depth))
    compression = _tiff_compression()
    _write_with(path, lambda tmp: Image.fromarray(depth).save(tmp, format="TIFF", compression=compression))


def read_tiff(path: Path) -> np.ndarray:
    """float32 metres from a single-channel float TIFF."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode != "F":
                raise DepthFileError(f"{path} is a {img.mode} image, not a float32 depth TIFF")
            return np.array(img, dtype=np.float32)
    except (OSError, SyntaxError) as exc:
        raise DepthFileError(f"cannot read {path}: {exc}") from None


def write_depth(path: Path, depth: np.ndarray, fmt: str) -> int:
    """Write ``depth`` in ``fmt`` (one of FORMATS); returns the pixels lost to the PNG's range (0 for float files)."""
    if fmt == "png16":
        return write_png16(path, depth)
    if fmt == "npy":
        write_npy(path, depth)
    elif fmt == "tiff":
        write_tiff(path, depth)
    else:
        raise DepthFileError(f"unknown depth format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return 0


def read_depth(path: Path) -> np.ndarray:
    """float32 metres (NaN invalid) from any file :func:`write_depth` writes, chosen by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix in (".tif", ".tiff"):
        return read_tiff(path)
    return read_png16(path)


# --- preview --------------------------------------------------------------------------------------------------


def write_preview(path: Path, depth: np.ndarray, min_depth: float, max_depth: float) -> None:
    """Write the node's turbo colour view of ``depth`` (near red, far blue, invalid black) as an RGB PNG."""
    from PIL import Image

    rgb = colorize_depth(torch.from_numpy(check_depth(depth)), min_depth, max_depth).numpy()
    _write_with(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))


# --- PLY point cloud ------------------------------------------------------------------------------------------


def ply_header(count: int, color: bool) -> bytes:
    """The PLY header for ``count`` vertices (x y z float, then red green blue uchar with ``color``)."""
    lines = ["ply", "format binary_little_endian 1.0", "comment zoedepth_ros depth, camera optical frame, metres"]
    lines += [f"element vertex {count}", "property float x", "property float y", "property float z"]
    if color:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def cloud_points(
    depth: np.ndarray, intrinsics: Intrinsics, rgb: np.ndarray | None = None, decimation: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """The node's points for ``depth`` (N, 3) float32, and their (N, 3) uint8 colours, invalid points left out.

    ``rgb`` is the (H, W, 3) uint8 image the depth belongs to (same size). ``decimation`` keeps every d-th row
    and column, as the node's ``point_cloud.decimation``. Points keep raster order.
    """
    depth = check_depth(depth)
    points = depth_to_points(torch.from_numpy(depth), intrinsics, decimation).numpy().reshape(-1, 3)
    valid = np.isfinite(points).all(axis=1)
    colors = None
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (*depth.shape, 3) or rgb.dtype != np.uint8:
            raise DepthFileError(f"colours must be a {(*depth.shape, 3)} uint8 image, got {rgb.shape} {rgb.dtype}")
        colors = rgb[::decimation, ::decimation].reshape(-1, 3)[valid]
    return points[valid], colors


def write_ply(
    path: Path, depth: np.ndarray, intrinsics: Intrinsics, rgb: np.ndarray | None = None, decimation: int = 1
) -> int:
    """Write the node's cloud of ``depth`` as a binary PLY (metres, optical frame); returns the points written."""
    points, colors = cloud_points(depth, intrinsics, rgb, decimation)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=np.dtype(fields))  # packed: no padding between properties, as PLY wants
    vertices["x"], vertices["y"], vertices["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        vertices["red"], vertices["green"], vertices["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(ply_header(len(points), colors is not None))
            f.write(vertices.tobytes())

    _write_with(path, write)
    return len(points)


def read_ply(path: Path) -> np.ndarray:
    """The vertex array (structured: x y z, and red green blue if present) of a PLY :func:`write_ply` wrote."""
    types = {"float": "<f4", "float32": "<f4", "uchar": "u1", "uint8": "u1"}
    try:
        with open(path, "rb") as f:
            fields, count = _ply_fields(f, types)
            data = f.read()
    except OSError as exc:
        raise DepthFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    dtype = np.dtype(fields)
    if len(data) != count * dtype.itemsize:
        raise DepthFileError(f"{path}: {len(data)} bytes of vertex data, expected {count} x {dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype)


def _ply_fields(f: BinaryIO, types: dict[str, str]) -> tuple[list[tuple[str, str]], int]:
    if f.readline().strip() != b"ply" or f.readline().strip() != b"format binary_little_endian 1.0":
        raise DepthFileError(f"{f.name} is not a binary little-endian PLY")
    fields: list[tuple[str, str]] = []
    count = 0
    for raw in iter(f.readline, b""):
        words = raw.decode("ascii", "replace").split()
        if words[:1] == ["end_header"]:
            return fields, count
        if words[:2] == ["element", "vertex"] and len(words) == 3:
            count = int(words[2])
        elif words[:1] == ["property"] and len(words) == 3 and words[1] in types:
            fields.append((words[2], types[words[1]]))
        elif words[:1] not in (["comment"], ["obj_info"]):
            raise DepthFileError(f"{f.name}: unsupported PLY header line {raw!r}")
    raise DepthFileError(f"{f.name}: PLY header has no end_header")


# --- calibration YAML -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A camera_calibration YAML: the intrinsics of the calibrated image size, and whether it has distortion."""

    intrinsics: Intrinsics
    distortion_model: str
    distorted: bool  # any non-zero distortion coefficient: the cloud is exact only for rectified images
    source: str

    def for_image(self, width: int, height: int) -> tuple[Intrinsics, str | None]:
        """Intrinsics for a width x height image of this camera, and a note when they had to be scaled.

        A resized image (same aspect ratio within 1 %) gets :meth:`Intrinsics.scaled`; another aspect ratio
        means a crop or a different camera, which scaling cannot fix, so that is a CameraInfoError.
        """
        intr = self.intrinsics
        if (width, height) == (intr.width, intr.height):
            return intr, None
        aspect_cal, aspect_img = intr.width / intr.height, width / height
        if abs(aspect_img / aspect_cal - 1.0) > 0.01:
            raise CameraInfoError(
                f"{self.source} is for {intr.width}x{intr.height} images; a {width}x{height} image has another "
                "aspect ratio (cropped or another camera?), so its intrinsics cannot be derived by scaling"
            )
        note = f"{self.source} is for {intr.width}x{intr.height} images; scaled its intrinsics to {width}x{height}"
        return intr.scaled(width, height), note


def _matrix(doc: dict, key: str, rows: int, cols: int, source: str, required: bool) -> list[float] | None:
    entry = doc.get(key)
    if entry is None:
        if required:
            raise CameraInfoError(f"{source} has no {key}")
        return None
    if not isinstance(entry, dict) or "data" not in entry:
        raise CameraInfoError(f"{source}: {key} must be a mapping with rows, cols and data")
    data = entry["data"]
    shape = (entry.get("rows", rows), entry.get("cols", cols))
    if key == "distortion_coefficients":
        if not isinstance(data, list):
            raise CameraInfoError(f"{source}: {key} data must be a list of numbers")
    elif shape != (rows, cols) or not isinstance(data, list) or len(data) != rows * cols:
        raise CameraInfoError(f"{source}: {key} must be {rows}x{cols} with {rows * cols} numbers, got {shape}")
    try:
        values = [float(x) for x in data]
    except (TypeError, ValueError):
        raise CameraInfoError(f"{source}: {key} data must be numbers, got {data!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise CameraInfoError(f"{source}: {key} has non-finite values")
    return values


def _size(doc: dict, key: str, source: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CameraInfoError(f"{source}: {key} must be a positive integer, got {value!r}")
    return value


def calibration_from_dict(doc: Any, source: str = "calibration") -> Calibration:
    """A :class:`Calibration` from a parsed camera_calibration YAML document."""
    if not isinstance(doc, dict):
        raise CameraInfoError(f"{source} is not a camera calibration (a YAML mapping with image_width, ...)")
    width, height = _size(doc, "image_width", source), _size(doc, "image_height", source)
    k = _matrix(doc, "camera_matrix", 3, 3, source, required=True)
    p = _matrix(doc, "projection_matrix", 3, 4, source, required=False) or [0.0] * 12  # absent: K is used
    d = _matrix(doc, "distortion_coefficients", 1, 5, source, required=False) or []
    info = SimpleNamespace(
        width=width,
        height=height,
        k=k,
        p=p,
        binning_x=0,
        binning_y=0,
        roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0),
    )
    try:
        intr = Intrinsics.from_camera_info(info)
    except CameraInfoError as exc:
        raise CameraInfoError(f"{source}: {exc}") from None
    return Calibration(intr, str(doc.get("distortion_model", "")), any(v != 0.0 for v in d), source)


def load_calibration(path: Path) -> Calibration:
    """A :class:`Calibration` from a camera_calibration / camera_info_manager YAML file."""
    try:
        import yaml
    except ImportError:
        raise CameraInfoError("reading a camera-info YAML needs PyYAML: pip install pyyaml") from None
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CameraInfoError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CameraInfoError(f"{path} is not valid YAML: {first}") from None
    return calibration_from_dict(doc, str(path))
