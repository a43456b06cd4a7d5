"""Camera images from files: finding them in folders, decoding them as the node would receive them, and video frames.

Images are decoded by Pillow into the raw arrays and ROS encodings the engine takes, keeping what the file holds:
8-bit greyscale stays ``mono8`` and 16-bit greyscale ``mono16`` (the node's own conversions make them RGB), RGB is
``rgb8``, and every other mode Pillow can convert (palette, RGBA, CMYK, YCbCr, 1-bit...) becomes ``rgb8`` with
alpha dropped. The EXIF orientation is applied, so the depth lines up with the photo as every viewer shows it (a
camera's calibration then belongs to that upright image). Multi-frame files (GIF, TIFF) give their first frame.
Float images (mode "F") are refused: they are depth or data, not camera images.

Videos are read with OpenCV (``opencv-python-headless``), imported only when a video is opened; frames are
``bgr8``, as OpenCV decodes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.encodings import ImageError, check_size

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
OPENCV_HINT = "pip install opencv-python-headless"


class InputError(ValueError):
    """A file that gives no usable image; ``reason`` is the summary's skip reason, the message names the file."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def image_suffixes() -> frozenset[str]:
    """Suffixes of the files Pillow can open here (its plugins decide), less the video ones."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN) - VIDEO_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def list_folder(folder: Path, recursive: bool, skip_name: Callable[[str], bool] = lambda name: False) -> list[Path]:
    """Image and video files of ``folder`` sorted by path; hidden files and folders (".name") are left out, and
    so are names ``skip_name`` rejects."""
    suffixes = image_suffixes() | VIDEO_SUFFIXES
    found = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for path in found:
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in suffixes:
            continue
        if path.is_file() and not skip_name(path.name):
            out.append(path)
    return sorted(out)


@dataclass(frozen=True)
class Decoded:
    """One image as the engine takes it."""

    raw: np.ndarray  # (H, W) for mono, (H, W, 3) for rgb8 / bgr8
    encoding: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.raw.shape[1], self.raw.shape[0]


def _pixels(img) -> Decoded:
    mode = img.mode
    if mode == "F":
        raise InputError("unsupported_format", "a floating-point image (a depth map?), not a camera image")
    if mode == "L":
        return Decoded(np.asarray(img), "mono8")
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(img)
        if grey.dtype != np.uint16:
            if grey.min(initial=0) < 0 or grey.max(initial=0) > 65535:
                raise InputError("unsupported_format", f"a 32-bit {mode} image with values outside 0..65535")
            grey = grey.astype(np.uint16)
        return Decoded(np.ascontiguousarray(grey.astype(np.dtype("=u2"), copy=False)), "mono16")
    if mode != "RGB":
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as exc:
            raise InputError("unsupported_format", f"a {mode} image that cannot be converted to RGB: {exc}") from None
    return Decoded(np.asarray(img), "rgb8")


def decode_image(path: Path, max_pixels: int | None = None) -> Decoded:
    """The image in ``path`` as the engine takes it; InputError (reason "unreadable", "too_large" or
    "unsupported_format") when it gives none."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # our own size limit (below) is lower than Pillow's warning threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise InputError("unreadable", "not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise InputError("too_large", str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises several types on broken headers
        raise InputError("unreadable", f"cannot open: {exc}") from None
    with img:
        try:
            check_size(*img.size, max_pixels)
        except ImageError as exc:
            raise InputError("too_large", str(exc)) from None
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
        except Exception as exc:  # truncated or corrupt data: Pillow raises OSError, ValueError, struct errors...
            raise InputError("unreadable", f"cannot decode ({img.format}): {exc}") from None
        return _pixels(upright)


def require_opencv():
    """The cv2 module, or InputError naming the package to install."""
    try:
        import cv2
    except ImportError:
        raise InputError("no_video_support", f"reading videos needs OpenCV: {OPENCV_HINT}") from None
    return cv2


def video_frame_count(path: Path) -> int | None:
    """The frame count the container announces (may be approximate), or None."""
    cv2 = require_opencv()
    cap = cv2.VideoCapture(str(path))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return count if count > 0 else None


def video_frames(path: Path, every: int = 1) -> Iterator[tuple[int, Decoded | None]]:
    """(frame index, bgr8 frame) of every ``every``-th frame of a video, from frame 0; None for a frame that
    cannot be decoded. InputError("unreadable_video") if OpenCV cannot open it at all."""
    cv2 = require_opencv()
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError("unreadable_video", "OpenCV cannot open this video")
        index = 0
        while cap.grab():  # grab() alone skips the colour conversion of the frames we do not keep
            if index % every == 0:
                ok, frame = cap.retrieve()
                good = ok and frame is not None and frame.ndim == 3 and frame.shape[2] == 3
                yield index, Decoded(np.ascontiguousarray(frame), "bgr8") if good else None
            index += 1
    finally:
        cap.release()
