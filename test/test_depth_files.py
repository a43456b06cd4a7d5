"""Depth file writers and readers, and camera_calibration YAML, against hand-derived values and the node's maths."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoedepth_ros.engine.cloud import depth_to_points
from zoedepth_ros.engine.colormap import colorize_depth
from zoedepth_ros.engine.intrinsics import CameraInfoError, Intrinsics
from zoedepth_ros.offline import depth_files as DF

NAN = float("nan")

CALIBRATION_YAML = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 320.5, 0.0, 510.0, 240.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1, -0.05, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [480.0, 0.0, 318.0, 0.0, 0.0, 490.0, 238.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def smooth_depth(h: int = 12, w: int = 16) -> np.ndarray:
    ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return (0.5 + 3.0 * xs + 1.7 * ys * ys + 0.01234567).astype(np.float32)


def test_png16_rounds_to_millimetres_and_zeroes_what_uint16_cannot_hold(tmp_path: Path) -> None:
    depth = np.array(
        [[1.0, 1.2344, 1.2346, 0.0004], [65.535, 65.5354, 65.5356, 80.0], [NAN, float("inf"), -1.0, 0.0006]],
        np.float32,
    )
    path = tmp_path / "d.png"
    too_far = DF.write_png16(path, depth)
    assert too_far == 2  # 65.5356 (rounds to 65536 mm) and 80 m; NaN/inf/negative are invalid, not "too far"
    with Image.open(path) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "I;16", (4, 3))
        mm = np.asarray(img)
    expected = [[1000, 1234, 1235, 0], [65535, 65535, 0, 0], [0, 0, 0, 1]]
    np.testing.assert_array_equal(mm, np.array(expected, np.uint16))
    back = DF.read_png16(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), mm == 0)
    assert back[0, 1] == np.float32(1.234) and back[2, 3] == np.float32(0.001)


def test_png16_round_trip_is_within_half_a_millimetre(tmp_path: Path) -> None:
    depth = smooth_depth()
    depth[3, 4] = NAN
    DF.write_depth(tmp_path / "d.png", depth, "png16")
    back = DF.read_depth(tmp_path / "d.png")
    assert np.isnan(back[3, 4]) and np.isfinite(np.delete(back.ravel(), 3 * 16 + 4)).all()
    assert np.nanmax(np.abs(back - depth)) <= 0.0005 + 1e-6


@pytest.mark.parametrize("fmt", ["npy", "tiff"])
def test_float_formats_are_exact_and_keep_nan(tmp_path: Path, fmt: str) -> None:
    depth = smooth_depth()
    depth[0, 0] = NAN
    depth[5, 7] = 123.456789
    path = tmp_path / f"d{DF.SUFFIXES[fmt]}"
    assert DF.write_depth(path, depth, fmt) == 0
    back = DF.read_depth(path)
    assert back.dtype == np.float32 and back.shape == depth.shape
    np.testing.assert_array_equal(back, depth)  # equal_nan: NaN where NaN, bit-equal elsewhere
    if fmt == "tiff":
        with Image.open(path) as img:
            assert (img.format, img.mode) == ("TIFF", "F")
    else:
        np.testing.assert_array_equal(np.load(path), depth)


def test_writers_replace_atomically_and_leave_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    DF.write_npy(path, smooth_depth())
    DF.write_npy(path, np.full((2, 3), 7.0, np.float32))
    np.testing.assert_array_equal(np.load(path), np.full((2, 3), 7.0, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy"]
    with pytest.raises(DF.DepthFileError, match="cannot write"):
        DF.write_npy(tmp_path / "missing" / "d.npy", smooth_depth())


def test_bad_depth_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DF.DepthFileError, match=r"\(H, W\)"):
        DF.write_png16(tmp_path / "x.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(DF.DepthFileError, match="floating-point"):
        DF.write_npy(tmp_path / "x.npy", np.zeros((2, 2), np.uint16))
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(DF.DepthFileError, match="RGB image, not a 16-bit depth PNG"):
        DF.read_png16(tmp_path / "rgb.png")
    (tmp_path / "junk.tiff").write_bytes(b"not a tiff")
    with pytest.raises(DF.DepthFileError, match="cannot read"):
        DF.read_tiff(tmp_path / "junk.tiff")


def test_preview_is_the_nodes_colormap(tmp_path: Path) -> None:
    depth = smooth_depth()
    depth[2, 2] = NAN
    DF.write_preview(tmp_path / "p.png", depth, 0.5, 5.0)
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "RGB"
        rgb = np.asarray(img)
    np.testing.assert_array_equal(rgb, colorize_depth(torch.from_numpy(depth), 0.5, 5.0).numpy())
    assert (rgb[2, 2] == 0).all()  # invalid: black
    near, far = rgb[0, 0].astype(int), rgb[-1, -1].astype(int)
    assert near[0] > near[2] + 100 and far[2] > far[0] + 50  # near red, far blue


def parse_ply(path: Path) -> tuple[list[str], bytes]:
    """Header lines and body, split by hand at "end_header\\n" as the PLY spec defines it."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), data[end:]


def test_ply_holds_the_nodes_points_without_invalid_ones(tmp_path: Path) -> None:
    depth = np.array([[2.0, NAN, 1.5], [4.0, 3.0, NAN]], np.float32)
    intr = Intrinsics(fx=100.0, fy=200.0, cx=1.0, cy=0.5, width=3, height=2)
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    assert DF.write_ply(tmp_path / "c.ply", depth, intr, rgb) == 4
    header, body = parse_ply(tmp_path / "c.ply")
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert [h for h in header if not h.startswith("comment")][2:] == [
        "element vertex 4",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    assert len(body) == 4 * 15
    rows = [struct.unpack_from("<fffBBB", body, 15 * i) for i in range(4)]
    # Pixel (u=2, v=0), depth 1.5: x = (2 - 1) * 1.5 / 100, y = (0 - 0.5) * 1.5 / 200, colour bytes 6 7 8.
    x, y, z, r, g, b = rows[1]
    assert (z, (r, g, b)) == (1.5, (6, 7, 8))
    assert x == pytest.approx(0.015, rel=1e-6) and y == pytest.approx(-0.00375, rel=1e-6)
    node = depth_to_points(torch.from_numpy(depth), intr).numpy().reshape(-1, 3)
    keep = [0, 2, 3, 4]  # raster order, NaN pixels left out
    np.testing.assert_array_equal(np.array([row[:3] for row in rows], np.float32), node[keep])
    np.testing.assert_array_equal(np.array([row[3:] for row in rows], np.uint8), rgb.reshape(-1, 3)[keep])
    back = DF.read_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(np.stack([back["x"], back["y"], back["z"]], 1), node[keep])


def test_ply_without_colour_is_12_bytes_a_point(tmp_path: Path) -> None:
    depth = smooth_depth(4, 5)
    intr = Intrinsics(fx=50.0, fy=50.0, cx=2.0, cy=1.5, width=5, height=4)
    assert DF.write_ply(tmp_path / "c.ply", depth, intr) == 20
    header, body = parse_ply(tmp_path / "c.ply")
    assert "property uchar red" not in header and len(body) == 20 * 12
    xyz = np.frombuffer(body, "<f4").reshape(-1, 3)
    np.testing.assert_array_equal(xyz, depth_to_points(torch.from_numpy(depth), intr).numpy().reshape(-1, 3))
    with pytest.raises(CameraInfoError, match="CameraInfo is for 5x4"):
        DF.write_ply(tmp_path / "d.ply", smooth_depth(4, 6), intr)


def test_calibration_yaml_uses_p_like_the_node(tmp_path: Path) -> None:
    (tmp_path / "cam.yaml").write_text(CALIBRATION_YAML)
    cal = DF.load_calibration(tmp_path / "cam.yaml")
    assert cal.intrinsics == Intrinsics(fx=480.0, fy=490.0, cx=318.0, cy=238.0, width=640, height=480)
    assert cal.distorted and cal.distortion_model == "plumb_bob"
    assert cal.for_image(640, 480) == (cal.intrinsics, None)
    half, note = cal.for_image(320, 240)
    # Pixel-centre convention of Intrinsics.scaled: cx' = (318 + 0.5) * 0.5 - 0.5 = 158.75.
    assert half == Intrinsics(fx=240.0, fy=245.0, cx=158.75, cy=118.75, width=320, height=240)
    assert note is not None and "640x480" in note and "320x240" in note
    with pytest.raises(CameraInfoError, match="another aspect ratio"):
        cal.for_image(480, 480)


def test_calibration_without_projection_matrix_uses_k(tmp_path: Path) -> None:
    text = CALIBRATION_YAML.split("projection_matrix")[0].replace("[0.1, -0.05,", "[0.0, 0.0,")
    (tmp_path / "cam.yaml").write_text(text)
    cal = DF.load_calibration(tmp_path / "cam.yaml")
    assert cal.intrinsics == Intrinsics(fx=500.0, fy=510.0, cx=320.5, cy=240.5, width=640, height=480)
    assert not cal.distorted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_width: 640\n", "image_height must be a positive integer"),
        (CALIBRATION_YAML.replace("image_width: 640", "image_width: -3"), "image_width must be a positive"),
        (CALIBRATION_YAML.replace("rows: 3\n  cols: 4", "rows: 3\n  cols: 3"), "projection_matrix must be 3x4"),
        (CALIBRATION_YAML.replace("[500.0,", "[abc,"), "camera_matrix data must be numbers"),
        (CALIBRATION_YAML.replace("[480.0,", "[-480.0,"), "unusable focal lengths"),
        ("[1, 2", "is not valid YAML"),
        ("- 1\n- 2\n", "is not a camera calibration"),
    ],
)
def test_bad_calibration_yaml_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "cam.yaml").write_text(text)
    with pytest.raises(CameraInfoError, match=message):
        DF.load_calibration(tmp_path / "cam.yaml")
    with pytest.raises(CameraInfoError, match="cannot read"):
        DF.load_calibration(tmp_path / "absent.yaml")


def test_decimated_ply_is_the_nodes_decimated_cloud_with_matching_colours(tmp_path: Path) -> None:
    depth = smooth_depth(7, 9)
    depth[4, 3] = NAN  # column 3 is not kept by decimation 2: no effect
    depth[4, 4] = NAN  # kept by decimation 2, so it is left out of the file
    intr = Intrinsics(fx=30.0, fy=31.0, cx=4.0, cy=3.0, width=9, height=7)
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert DF.write_ply(tmp_path / "c.ply", depth, intr, rgb, decimation=2) == 4 * 5 - 1
    vertices = DF.read_ply(tmp_path / "c.ply")
    node = depth_to_points(torch.from_numpy(depth), intr, 2).numpy().reshape(-1, 3)
    keep = np.isfinite(node).all(axis=1)
    assert keep.sum() == 19 and not keep[2 * 5 + 2]  # row 4, column 4 of the image = decimated (2, 2)
    np.testing.assert_array_equal(np.stack([vertices["x"], vertices["y"], vertices["z"]], 1), node[keep])
    colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], 1)
    np.testing.assert_array_equal(colours, rgb[::2, ::2].reshape(-1, 3)[keep])
