"""Image files to the engine's raw arrays and encodings, and folder listing (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoedepth_ros.offline import image_files as IF


def gradient(h: int = 6, w: int = 8) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 30, ys * 40, (xs + ys) * 10], axis=-1).astype(np.uint8)


def test_modes_keep_what_the_file_holds(tmp_path: Path) -> None:
    rgb = gradient()
    grey = rgb[..., 0]
    grey16 = grey.astype(np.uint16) * 250 + 7
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "l.png")
    Image.fromarray(grey16).save(tmp_path / "i16.png")
    Image.fromarray(np.dstack([rgb, np.full(grey.shape, 9, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    cases = {
        "rgb.png": ("rgb8", rgb),
        "l.png": ("mono8", grey),
        "i16.png": ("mono16", grey16),
        "rgba.png": ("rgb8", rgb),  # alpha dropped, colours untouched
    }
    for name, (encoding, expected) in cases.items():
        decoded = IF.decode_image(tmp_path / name)
        assert decoded.encoding == encoding, name
        np.testing.assert_array_equal(decoded.raw, expected)
        assert decoded.raw.dtype.isnative and decoded.size == (8, 6)
    with Image.open(tmp_path / "p.png") as img:
        palette_rgb = np.asarray(img.convert("RGB"))
    decoded = IF.decode_image(tmp_path / "p.png")
    assert decoded.encoding == "rgb8"
    np.testing.assert_array_equal(decoded.raw, palette_rgb)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rgb = gradient()
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation 8: rotate 90 degrees counter-clockwise to display
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    decoded = IF.decode_image(tmp_path / "o.png")
    assert decoded.size == (6, 8)
    np.testing.assert_array_equal(decoded.raw, np.rot90(rgb))  # numpy's rot90 turns counter-clockwise


@pytest.mark.parametrize(
    ("make", "reason", "message"),
    [
        (lambda p: p.write_bytes(b"hello"), "unreadable", "not an image Pillow can read"),
        (lambda p: p.write_bytes(_png_bytes(p)[:120]), "unreadable", "cannot decode"),
        (lambda p: Image.fromarray(np.ones((3, 3), np.float32)).save(p, format="TIFF"), "unsupported_format", "depth"),
    ],
)
def test_unusable_files_name_the_reason(tmp_path: Path, make, reason: str, message: str) -> None:
    path = tmp_path / "x.img"
    make(path)
    with pytest.raises(IF.InputError, match=message) as info:
        IF.decode_image(path)
    assert info.value.reason == reason


def _png_bytes(path: Path) -> bytes:
    """A real PNG with incompressible content, so that cutting it leaves a valid header and missing pixels."""
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="PNG")
    return path.read_bytes()


def test_too_large_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(gradient(50, 60)).save(tmp_path / "a.png")
    with pytest.raises(IF.InputError, match="60x50 exceeds") as info:
        IF.decode_image(tmp_path / "a.png", max_pixels=2999)
    assert info.value.reason == "too_large"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own bomb guard (2x this) fires in open()
    with pytest.raises(IF.InputError) as info:
        IF.decode_image(tmp_path / "a.png")
    assert info.value.reason == "too_large"


def test_folder_listing_is_sorted_and_leaves_out_hidden_other_and_rejected_files(tmp_path: Path) -> None:
    for rel in ("b.png", "a.JPG", "c.mp4", "notes.txt", ".hidden.png", "sub/d.png", ".git/e.png", "x_depth.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    skip = lambda name: name.endswith("_depth.png")  # noqa: E731
    flat = IF.list_folder(tmp_path, recursive=False, skip_name=skip)
    assert [p.relative_to(tmp_path).as_posix() for p in flat] == ["a.JPG", "b.png", "c.mp4"]
    deep = IF.list_folder(tmp_path, recursive=True, skip_name=skip)
    assert [p.relative_to(tmp_path).as_posix() for p in deep] == ["a.JPG", "b.png", "c.mp4", "sub/d.png"]
    assert IF.is_video(tmp_path / "c.mp4") and not IF.is_video(tmp_path / "b.png")
