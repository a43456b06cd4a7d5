"""sensor_msgs/Image and CompressedImage payloads to arrays and tensors, without ROS imports.

The data path is: message bytes -> zero-copy numpy view (:func:`image_array`) -> torch tensor sharing that memory
(:func:`array_to_tensor`) -> one upload to the model's device by the caller -> colour conversion on the device
(:func:`to_rgb`, :func:`to_rgb8`). Only the raw message bytes cross the host/device bus, and the host never runs a
per-pixel Python or numpy loop.

Everything here takes plain fields or duck-typed message objects so it can be unit-tested without rclpy or DDS.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "ENCODINGS",
    "MAX_PIXELS",
    "Encoding",
    "ImageError",
    "array_to_tensor",
    "check_size",
    "decode_compressed",
    "encoding_info",
    "image_array",
    "image_array_from_msg",
    "to_rgb",
    "to_rgb8",
]

MAX_PIXELS = 64_000_000
"""Largest image (width * height) accepted, checked before any data is touched: a corrupt header must not make
us allocate or upload gigabytes. Module-level so a deployment (or a test) can change it; every function also
takes an explicit ``max_pixels``."""


class ImageError(ValueError):
    """An image message that cannot be interpreted; the message names the offending field and values."""


Layout = Literal["rgb", "bgr", "rgba", "bgra", "mono", "uyvy", "yuyv"]


@dataclass(frozen=True)
class Encoding:
    """How one ROS image encoding is laid out in ``Image.data``.

    ``channels`` is the last axis of the array view: for YUV 4:2:2 it is 2 (the two bytes each pixel owns: one
    luma byte and alternately a U or a V byte), not 3.
    """

    name: str
    channels: int
    dtype: str  # numpy dtype of one channel; for 16-bit encodings the byte order is chosen per message
    layout: Layout

    @property
    def itemsize(self) -> int:
        """Bytes per channel value."""
        return np.dtype(self.dtype).itemsize

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes one pixel occupies in a row (the minimum step is ``width * bytes_per_pixel``)."""
        return self.channels * self.itemsize

    @property
    def is_yuv422(self) -> bool:
        """True for the 4:2:2 encodings, where two neighbouring pixels share one U and one V sample."""
        return self.layout in ("uyvy", "yuyv")


ENCODINGS: dict[str, Encoding] = {
    e.name: e
    for e in (
        Encoding("rgb8", 3, "u1", "rgb"),
        Encoding("bgr8", 3, "u1", "bgr"),
        Encoding("rgba8", 4, "u1", "rgba"),
        Encoding("bgra8", 4, "u1", "bgra"),
        Encoding("mono8", 1, "u1", "mono"),
        Encoding("mono16", 1, "u2", "mono"),
        # ROS "yuv422" is UYVY (U0 Y0 V0 Y1 per pixel pair); "yuv422_yuy2" is YUYV (Y0 U0 Y1 V0).
        Encoding("yuv422", 2, "u1", "uyvy"),
        Encoding("uyvy", 2, "u1", "uyvy"),
        Encoding("yuv422_yuy2", 2, "u1", "yuyv"),
        Encoding("yuyv", 2, "u1", "yuyv"),
    )
}


def encoding_info(encoding: str) -> Encoding:
    """Look up an encoding (case-insensitive, surrounding blanks ignored) or raise :class:`ImageError`."""
    info = ENCODINGS.get(str(encoding).strip().lower())
    if info is None:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    return info


def check_size(width: int, height: int, max_pixels: int | None = None) -> None:
    """Reject empty and absurdly large images before their data is read or allocated."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if width <= 0 or height <= 0:
        raise ImageError(f"zero-size image {width}x{height}")
    if width * height > limit:
        raise ImageError(f"image {width}x{height} exceeds the {limit / 1e6:g} megapixel limit")


def _as_int(name: str, value: Any) -> int:
    """Header fields must be integers; a float or string there means a malformed message, not a size to round."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _byte_view(data: Any) -> np.ndarray:
    """A 1-D uint8 view of ``data`` without copying when it supports the buffer protocol.

    rclpy gives ``Image.data`` as ``array.array('B')`` (writable, so the view is writable); ``bytes`` gives a
    read-only view. A list (e.g. a hand-built message) has no buffer and is checked and copied once
    (:func:`_sequence_bytes`).
    """
    try:
        view = memoryview(data)
    except TypeError:
        return _sequence_bytes(data)
    if not view.c_contiguous:
        raise ImageError("image data buffer is not contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return np.frombuffer(view, dtype=np.uint8)


def _sequence_bytes(data: Any) -> np.ndarray:
    """A 1-D uint8 copy of a sequence of integers (a list or tuple), each of which must be in 0..255.

    The range is checked explicitly, in numpy, before the cast: ``np.asarray(values, dtype=np.uint8)`` raises
    OverflowError for 300 or -1 on numpy 2 but wraps them silently (300 -> 44, -1 -> 255) on numpy 1.x, and
    casts floats by truncation on both. Reading the values at their natural dtype first gives the same answer on
    every numpy (1.21 to 2.x): integers (or bools) in 0..255 are accepted; anything else is an :class:`ImageError`
    naming the first value out of range, or the dtype of values that are not integers.
    """
    prefix = "image data is not a sequence of bytes (0..255)"
    try:
        values = np.asarray(data)
    except (OverflowError, ValueError, TypeError) as exc:  # ragged nesting, unconvertible objects
        raise ImageError(f"{prefix}: {exc}") from None
    values = values.reshape(-1)
    if values.size == 0:
        return np.empty(0, np.uint8)
    if values.dtype.kind not in "biu":  # float, str, object (e.g. ints beyond 64 bits, None), ...
        raise ImageError(f"{prefix}: its values are {values.dtype}, not integers")
    if values.dtype.kind != "b" and (values.min() < 0 or values.max() > 255):
        index = int(np.flatnonzero((values < 0) | (values > 255))[0])
        raise ImageError(f"{prefix}: {int(values[index])} at index {index} is out of range")
    return values.astype(np.uint8)


def image_array(
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: int | bool,
    data: Any,
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Validate an Image's fields and return a zero-copy (H, W, C) numpy view of its pixels.

    Row padding is honoured: rows start every ``step`` bytes and the padding is simply skipped by the view's
    strides. ``len(data)`` must be exactly ``step * height``, as the message definition states; a shorter buffer
    would read out of bounds, and a longer one means the header (step/height/encoding) does not describe the
    data, so both are rejected rather than guessed at.

    For YUV 4:2:2 the view is (H, W, 2) raw bytes per pixel and ``width`` must be even. ``mono16`` honours
    ``is_bigendian`` through the dtype ('>u2' or '<u2'); for 8-bit encodings the flag is irrelevant.
    """
    height = _as_int("height", height)
    width = _as_int("width", width)
    step = _as_int("step", step)
    info = encoding_info(encoding)
    check_size(width, height, max_pixels)
    if info.is_yuv422 and width % 2:
        raise ImageError(f"width {width} is odd; {info.name} (YUV 4:2:2) needs an even width")
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width*{info.bytes_per_pixel} = {row_bytes} for {info.name}")
    flat = _byte_view(data)
    expected = step * height
    if flat.size != expected:
        raise ImageError(f"data has {flat.size} bytes, expected step*height = {expected} ({step}*{height})")
    dtype = np.dtype(info.dtype)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    return np.ndarray(
        shape=(height, width, info.channels),
        dtype=dtype,
        buffer=flat,
        offset=0,
        strides=(step, info.bytes_per_pixel, dtype.itemsize),
    )


def image_array_from_msg(msg: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """:func:`image_array` for an object with sensor_msgs/Image's fields (a real message or a stand-in)."""
    return image_array(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data, max_pixels=max_pixels)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory whenever torch can represent it.

    Copies only when it must: non-native byte order (big-endian ``mono16`` on a little-endian host; torch has no
    byte-swapped dtypes) or a row step that is not a multiple of the element size (torch strides count elements).
    Read-only arrays (views of ``bytes``) are shared too: the tensor is only ever read (uploaded or converted
    out of place), so torch's "not writable" warning is silenced.
    """
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if any(s % array.itemsize for s in array.strides):
        array = np.ascontiguousarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)


def _check_raw(raw: torch.Tensor, info: Encoding) -> torch.Tensor:
    """Check a raw tensor against its encoding; (H, W) is accepted for single-channel encodings."""
    if raw.dim() == 2 and info.channels == 1:
        raw = raw.unsqueeze(-1)
    if raw.dim() != 3 or raw.shape[-1] != info.channels:
        raise ImageError(f"{info.name} needs a (H, W, {info.channels}) tensor, got shape {tuple(raw.shape)}")
    allowed = (torch.uint8,) if info.itemsize == 1 else (torch.uint16, torch.int16, torch.int32)
    if raw.dtype not in allowed:
        raise ImageError(f"{info.name} needs a tensor of dtype {' or '.join(map(str, allowed))}, got {raw.dtype}")
    if raw.shape[0] == 0 or raw.shape[1] == 0:
        raise ImageError(f"zero-size image {raw.shape[1]}x{raw.shape[0]}")
    if info.is_yuv422 and raw.shape[1] % 2:
        raise ImageError(f"width {raw.shape[1]} is odd; {info.name} (YUV 4:2:2) needs an even width")
    return raw


def _mono16_float(raw: torch.Tensor) -> torch.Tensor:
    """(H, W, 1) 16-bit samples as float32 0..65535; an int16 tensor holds the same bits as uint16."""
    if raw.dtype == torch.uint16:
        return raw[..., 0].to(torch.float32)
    return raw[..., 0].to(torch.int32).bitwise_and_(0xFFFF).to(torch.float32)


# Full-range BT.601 (JPEG/JFIF) YUV -> RGB coefficients.
_KR_V = 1.402
_KG_U = 0.344136
_KG_V = 0.714136
_KB_U = 1.772


def _yuv422_planes(raw: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(3, H, W) float32 RGB in 0..255 (clamped, unrounded) from (H, W, 2) UYVY or YUYV bytes."""
    h, w, _ = raw.shape
    quad = raw.reshape(h, w // 2, 4).to(torch.float32)  # one pixel pair per group of 4 bytes
    if layout == "uyvy":  # U0 Y0 V0 Y1
        u, y, v = quad[..., 0:1], quad[..., 1::2], quad[..., 2:3]
    else:  # YUYV: Y0 U0 Y1 V0
        u, y, v = quad[..., 1:2], quad[..., 0::2], quad[..., 3:4]
    u = u - 128.0
    v = v - 128.0
    # y is (H, W/2, 2); u and v are (H, W/2, 1) and broadcast over both pixels of the pair they belong to.
    r = y + _KR_V * v
    g = y - _KG_U * u - _KG_V * v
    b = y + _KB_U * u
    return torch.stack((r, g, b)).reshape(3, h, w).clamp_(0.0, 255.0)


def _channel_order(layout: Layout) -> list[int]:
    """Indices of R, G, B in the last axis (alpha is dropped)."""
    return [2, 1, 0] if layout in ("bgr", "bgra") else [0, 1, 2]


def to_rgb(raw: torch.Tensor, encoding: str) -> torch.Tensor:
    """(1, 3, H, W) float32 RGB in [0, 1] from a raw (H, W, C) image tensor, computed on ``raw``'s device.

    ``raw`` is what :func:`image_array` + :func:`array_to_tensor` produce (uint8; for mono16 uint16 or int16
    holding the same bits), already moved to the device. bgr/bgra are reordered and alpha dropped; mono is
    replicated to three channels (mono16 divided by 65535); YUV 4:2:2 uses full-range BT.601 with each pixel
    pair sharing U and V, clamped to 0..255 before dividing by 255 (not rounded).
    """
    info = encoding_info(encoding)
    raw = _check_raw(raw, info)
    h, w, _ = raw.shape
    if info.is_yuv422:
        return _yuv422_planes(raw, info.layout).div_(255.0).unsqueeze(0)
    if info.layout == "mono":
        if info.itemsize == 2:
            plane = _mono16_float(raw).div_(65535.0)
        else:
            plane = raw[..., 0].to(torch.float32).div_(255.0)
        return plane.expand(1, 3, h, w).contiguous()
    planes = raw.permute(2, 0, 1)[_channel_order(info.layout)]  # (3, H, W) uint8, a contiguous copy
    return planes.to(torch.float32).div_(255.0).unsqueeze(0)


def to_rgb8(raw: torch.Tensor, encoding: str) -> torch.Tensor:
    """(H, W, 3) uint8 RGB from a raw (H, W, C) image tensor on its device, e.g. for colouring point clouds.

    8-bit colour encodings are reordered exactly; mono16 maps 0..65535 to 0..255 with rounding; YUV 4:2:2 is the
    :func:`to_rgb` value times 255, rounded.
    """
    info = encoding_info(encoding)
    raw = _check_raw(raw, info)
    h, w, _ = raw.shape
    if info.is_yuv422:
        planes = _yuv422_planes(raw, info.layout).round_().to(torch.uint8)
        return planes.permute(1, 2, 0).contiguous()
    if info.layout == "mono":
        if info.itemsize == 2:
            plane = _mono16_float(raw).mul_(255.0 / 65535.0).round_().to(torch.uint8)
        else:
            plane = raw[..., 0]
        return plane.unsqueeze(-1).expand(h, w, 3).contiguous()
    if info.layout == "rgb":
        return raw.contiguous()
    return raw[..., _channel_order(info.layout)]


_COMPRESSED_FORMATS = ("JPEG", "PNG")


def decode_compressed(fmt: str, data: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage's ``format`` and ``data`` (JPEG or PNG).

    Pillow detects the actual format from the bytes; ``fmt`` (e.g. "jpeg", "png" or "bgr8; jpeg compressed
    bgr8") only feeds error messages and rejects compressedDepth payloads, which are depth maps with a private
    header, not camera images. JPEGs written from BGR images by image_transport are ordinary RGB JPEGs, so no
    channel swap is needed. 16-bit greyscale PNGs are scaled to 8 bits (v * 255 / 65535, rounded); the size
    limit is checked from the header before the pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    fmt_text = str(fmt)
    if "compresseddepth" in fmt_text.replace(" ", "").lower():
        raise ImageError(f"CompressedImage format {fmt_text!r} is a compressed depth map, not a camera image")
    try:
        payload = bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data
    except (TypeError, ValueError) as exc:
        raise ImageError(f"CompressedImage (format {fmt_text!r}) data is not bytes: {exc}") from None
    if len(payload) == 0:
        raise ImageError(f"CompressedImage (format {fmt_text!r}) has empty data")
    try:
        img = Image.open(io.BytesIO(payload), formats=_COMPRESSED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(
            f"cannot decode CompressedImage (format {fmt_text!r}, {len(payload)} bytes): not a JPEG or PNG image"
        ) from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) on bad headers
        raise ImageError(f"cannot decode CompressedImage (format {fmt_text!r}): {exc}") from None
    with img:
        width, height = img.size
        check_size(width, height, max_pixels)
        try:
            img.load()
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                grey = np.asarray(img).astype(np.float32)
                grey = np.clip(np.rint(grey * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb)
        except Exception as exc:  # truncated or corrupt pixel data
            raise ImageError(f"cannot decode CompressedImage (format {fmt_text!r}, {img.format}): {exc}") from None
