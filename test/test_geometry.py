"""Intrinsics from CameraInfo, back-projection against an independent loop, PointCloud2 bytes and colouring."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch

from zoedepth_ros.engine.cloud import (
    FLOAT32,
    POINT_STEP_XYZ,
    POINT_STEP_XYZRGB,
    cloud_fields,
    depth_to_cloud,
    depth_to_points,
    pack_points,
)
from zoedepth_ros.engine.colormap import colorize_depth
from zoedepth_ros.engine.intrinsics import CameraInfoError, Intrinsics, camera_info_fields, fill_camera_info

NAN = math.nan


try:  # real messages where ROS is installed; the tests that need one skip without it
    from sensor_msgs.msg import CameraInfo
except ImportError:
    CameraInfo = None


def real_camera_info(**fields) -> CameraInfo:
    if CameraInfo is None:
        pytest.skip("sensor_msgs is not installed (a venv set up with ZOEDEPTH_ROS_SKIP_ROS=1)")
    return CameraInfo(**fields)


def make_info(
    k: tuple[float, float, float, float] = (500.0, 510.0, 320.0, 240.0),
    p: tuple[float, float, float, float] | None = None,
    width: int = 640,
    height: int = 480,
    binning: tuple[int, int] = (0, 0),
    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> CameraInfo:
    """A real CameraInfo with K = (fx, fy, cx, cy) and P likewise (P = K unless given; all zero if p == ())."""
    fx, fy, cx, cy = k
    info = real_camera_info(width=width, height=height, distortion_model="plumb_bob")
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    pfx, pfy, pcx, pcy = k if p is None else (p if p else (0.0, 0.0, 0.0, 0.0))
    info.p = [pfx, 0.0, pcx, 0.0, 0.0, pfy, pcy, 0.0, 0.0, 0.0, 1.0 if p != () else 0.0, 0.0]
    info.d = [0.1, -0.2, 0.001, 0.002, 0.03]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.binning_x, info.binning_y = binning
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    return info


# --- Intrinsics.from_camera_info ---------------------------------------------------------------------------------


def test_plain_camera_info() -> None:
    intr = Intrinsics.from_camera_info(make_info())
    assert intr == Intrinsics(fx=500.0, fy=510.0, cx=320.0, cy=240.0, width=640, height=480)


def test_p_wins_over_k() -> None:
    intr = Intrinsics.from_camera_info(make_info(p=(490.0, 495.0, 315.5, 245.25)))
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (490.0, 495.0, 315.5, 245.25)


def test_roi_offsets_shift_principal_point_and_set_size() -> None:
    intr = Intrinsics.from_camera_info(make_info(roi=(100, 50, 320, 240)))
    assert intr == Intrinsics(fx=500.0, fy=510.0, cx=220.0, cy=190.0, width=320, height=240)


def test_binning_two() -> None:
    intr = Intrinsics.from_camera_info(make_info(binning=(2, 2)))
    assert intr == Intrinsics(fx=250.0, fy=255.0, cx=160.0, cy=120.0, width=320, height=240)
    # Binning 1 is the same as 0.
    assert Intrinsics.from_camera_info(make_info(binning=(1, 1))) == Intrinsics.from_camera_info(make_info())


def test_roi_and_binning_by_hand() -> None:
    # P: fx 500, fy 510, cx 320, cy 240; roi 320x240 at (64, 32); binning 2 across, 4 down.
    #   cx = (320 - 64) / 2 = 128,  cy = (240 - 32) / 4 = 52,  fx = 500 / 2 = 250,  fy = 510 / 4 = 127.5
    #   size = 320 / 2 by 240 / 4 = 160x60
    intr = Intrinsics.from_camera_info(make_info(roi=(64, 32, 320, 240), binning=(2, 4)))
    assert intr == Intrinsics(fx=250.0, fy=127.5, cx=128.0, cy=52.0, width=160, height=60)


def test_roi_with_zero_size_uses_full_size() -> None:
    intr = Intrinsics.from_camera_info(make_info(roi=(10, 20, 0, 0)))
    assert (intr.cx, intr.cy, intr.width, intr.height) == (310.0, 220.0, 640, 480)


def test_all_zero_p_falls_back_to_k() -> None:
    intr = Intrinsics.from_camera_info(make_info(p=()))
    assert intr == Intrinsics(fx=500.0, fy=510.0, cx=320.0, cy=240.0, width=640, height=480)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": (), "k": (0.0, 0.0, 0.0, 0.0)}, r"no usable intrinsics: P is zero and K has fx=0\.0, fy=0\.0"),
        ({"p": (NAN, 500.0, 320.0, 240.0)}, r"P has unusable focal lengths fx=nan, fy=500\.0"),
        ({"p": (500.0, -500.0, 320.0, 240.0)}, r"P has unusable focal lengths fx=500\.0, fy=-500\.0"),
        ({"p": (math.inf, 500.0, 320.0, 240.0)}, r"fx=inf"),
        ({"p": (500.0, 0.0, 320.0, 240.0)}, r"P has unusable focal lengths fx=500\.0, fy=0\.0"),
        ({"p": (), "k": (NAN, 500.0, 320.0, 240.0)}, r"P is zero and K has fx=nan"),
        ({"p": (500.0, 500.0, NAN, 240.0)}, r"P has an unusable principal point cx=nan"),
        ({"width": 0, "height": 0}, r"CameraInfo image size is 0x0"),
        ({"roi": (400, 0, 320, 240)}, r"roi 320x240\+400\+0 does not fit in the 640x480 image"),
    ],
)
def test_unusable_camera_info(kwargs: dict, message: str) -> None:
    with pytest.raises(CameraInfoError, match=message):
        Intrinsics.from_camera_info(make_info(**kwargs))


def test_intrinsics_constructor_validates() -> None:
    with pytest.raises(CameraInfoError, match="focal"):
        Intrinsics(fx=0.0, fy=1.0, cx=0.0, cy=0.0, width=2, height=2)
    with pytest.raises(CameraInfoError, match="zero-size"):
        Intrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=0, height=2)


def test_check_image() -> None:
    intr = Intrinsics.from_camera_info(make_info())
    intr.check_image(640, 480)
    with pytest.raises(CameraInfoError, match="CameraInfo is for 640x480 images but the image is 320x240"):
        intr.check_image(320, 240)


def test_scaled_by_hand() -> None:
    intr = Intrinsics(fx=500.0, fy=510.0, cx=319.5, cy=239.5, width=640, height=480)
    # Halving: sx = sy = 0.5. An exactly centred principal point stays centred:
    #   cx' = (319.5 + 0.5) * 0.5 - 0.5 = 159.5 (the centre of 320 pixels), cy' = 240 * 0.5 - 0.5 = 119.5
    assert intr.scaled(320, 240) == Intrinsics(fx=250.0, fy=255.0, cx=159.5, cy=119.5, width=320, height=240)
    # Off-centre, anisotropic: 640x480 -> 384x360, sx = 0.6, sy = 0.75, cx = 300, cy = 200:
    #   cx' = 300.5 * 0.6 - 0.5 = 179.8,  cy' = 200.5 * 0.75 - 0.5 = 149.875,  fx' = 300,  fy' = 382.5
    off = Intrinsics(fx=500.0, fy=510.0, cx=300.0, cy=200.0, width=640, height=480).scaled(384, 360)
    assert (off.width, off.height) == (384, 360)
    assert off.fx == pytest.approx(300.0) and off.fy == pytest.approx(382.5)
    assert off.cx == pytest.approx(179.8) and off.cy == pytest.approx(149.875)
    # Doubling maps pixel 0's centre (0) to the centre of output pixels 0 and 1 (0.5).
    up = Intrinsics(fx=10.0, fy=10.0, cx=0.0, cy=0.0, width=4, height=4).scaled(8, 8)
    assert (up.fx, up.cx, up.cy) == (20.0, 0.5, 0.5)
    assert intr.scaled(640, 480) is intr
    with pytest.raises(CameraInfoError, match="zero-size"):
        intr.scaled(0, 10)


def test_camera_info_fields_round_trip_through_real_message() -> None:
    template = make_info(p=(490.0, 495.0, 315.5, 245.25), roi=(64, 32, 320, 240), binning=(2, 2))
    intr = Intrinsics.from_camera_info(template).scaled(200, 150)
    fields = camera_info_fields(intr, template)
    assert fields["p"] == [intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0]
    assert fields["k"] == [intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1]
    msg = fill_camera_info(real_camera_info(), intr, template)
    assert (msg.width, msg.height, msg.binning_x, msg.binning_y) == (200, 150, 0, 0)
    assert (msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height) == (0, 0, 0, 0)
    assert msg.distortion_model == "plumb_bob"
    assert list(msg.d) == list(template.d) and list(msg.r) == list(template.r)
    assert msg.p[3] == 0.0 and msg.p[7] == 0.0  # Tx = Ty = 0
    assert Intrinsics.from_camera_info(msg) == intr  # image_geometry's reading gives back exactly intr


# --- back-projection --------------------------------------------------------------------------------------------

INTR_5x7 = Intrinsics(fx=3.3, fy=2.7, cx=3.1, cy=1.9, width=7, height=5)


def depth_5x7() -> torch.Tensor:
    d = torch.linspace(0.5, 9.7, 35, dtype=torch.float32).reshape(5, 7)
    d[0, 0] = NAN
    d[1, 3] = NAN
    d[2, 2] = math.inf
    d[4, 6] = -math.inf
    d[3, 1] = 0.0  # zero depth is a valid float depth in depth_image_proc: point at the origin
    return d


def reference_points(depth: np.ndarray, intr: Intrinsics, d: int) -> np.ndarray:
    """Per-pixel loop of depth_image_proc's float32 formula, written independently of the implementation."""
    f32 = np.float32
    center_x, center_y = f32(intr.cx), f32(intr.cy)
    constant_x, constant_y = f32(1.0 / intr.fx), f32(1.0 / intr.fy)  # double division, then cast
    rows = range(0, depth.shape[0], d)
    cols = range(0, depth.shape[1], d)
    out = np.empty((len(rows), len(cols), 3), np.float32)
    for i, v in enumerate(rows):
        for j, u in enumerate(cols):
            z = f32(depth[v, u])
            if not np.isfinite(z):
                out[i, j] = (np.nan, np.nan, np.nan)
                continue
            x = (f32(u) - center_x) * z * constant_x
            y = (f32(v) - center_y) * z * constant_y
            out[i, j] = (x, y, z)
    return out


@pytest.mark.parametrize(("decimation", "shape"), [(1, (5, 7)), (2, (3, 4)), (3, (2, 3)), (7, (1, 1))])
def test_depth_to_points_matches_reference_loop(decimation: int, shape: tuple[int, int]) -> None:
    depth = depth_5x7()
    points = depth_to_points(depth, INTR_5x7, decimation)
    assert points.shape == (*shape, 3) and points.dtype == torch.float32
    expected = reference_points(depth.numpy(), INTR_5x7, decimation)
    np.testing.assert_array_equal(points.numpy(), expected)  # bit-exact, NaN == NaN


def test_depth_to_points_invalid_is_all_nan_and_depth_untouched() -> None:
    depth = depth_5x7()
    before = depth.clone()
    points = depth_to_points(depth, INTR_5x7)
    for v, u in [(0, 0), (1, 3), (2, 2), (4, 6)]:
        assert torch.isnan(points[v, u]).all()
    assert torch.isfinite(points[3, 2]).all()
    torch.testing.assert_close(depth, before, equal_nan=True, rtol=0, atol=0)


def test_depth_to_points_checks_size_and_arguments() -> None:
    with pytest.raises(CameraInfoError, match="CameraInfo is for 7x5 images but the image is 6x5"):
        depth_to_points(torch.ones(5, 6), INTR_5x7)
    with pytest.raises(ValueError, match="decimation must be >= 1"):
        depth_to_points(torch.ones(5, 7), INTR_5x7, 0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        depth_to_points(torch.ones(1, 5, 7), INTR_5x7)
    with pytest.raises(ValueError, match="floating-point"):
        depth_to_points(torch.ones(5, 7, dtype=torch.int32), INTR_5x7)


def test_depth_to_points_accepts_float64() -> None:
    depth = depth_5x7()
    a = depth_to_points(depth.double(), INTR_5x7)
    np.testing.assert_array_equal(a.numpy(), depth_to_points(depth, INTR_5x7).numpy())


# --- PointCloud2 layout -----------------------------------------------------------------------------------------


def cloud_dtype(color: bool) -> np.dtype:
    """Structured dtype built from cloud_fields(), so the test also checks the advertised field list."""
    fields = cloud_fields(color)
    return np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": ["<f4"] * len(fields),
            "offsets": [f[1] for f in fields],
            "itemsize": POINT_STEP_XYZRGB if color else POINT_STEP_XYZ,
        }
    )


def test_cloud_fields() -> None:
    assert cloud_fields(False) == [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
    assert cloud_fields(True)[-1] == ("rgb", 16, 7, 1)
    assert (POINT_STEP_XYZ, POINT_STEP_XYZRGB) == (16, 32)


def test_pack_points_xyz_layout_and_zero_padding() -> None:
    points = depth_to_points(depth_5x7(), INTR_5x7)
    data = pack_points(points)
    assert data.dtype == torch.uint8 and data.shape == (5, 7 * POINT_STEP_XYZ)  # row_step = width * point_step
    raw = data.numpy()
    decoded = np.frombuffer(raw.tobytes(), dtype=cloud_dtype(False)).reshape(5, 7)
    for i, name in enumerate("xyz"):
        np.testing.assert_array_equal(decoded[name], points[..., i].numpy())
    assert not raw.reshape(5, 7, 16)[..., 12:16].any()


def test_pack_points_rgb_bits_and_padding() -> None:
    points = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    rgb = torch.zeros(2, 3, 3, dtype=torch.uint8)
    rgb[0, 0] = torch.tensor([255, 128, 1])
    rgb[1, 2] = torch.tensor([1, 2, 3])
    raw = pack_points(points, rgb).numpy()
    assert raw.shape == (2, 3 * POINT_STEP_XYZRGB)
    per_point = raw.reshape(2, 3, 32)
    assert per_point[0, 0, 16:20].view("<u4")[0] == 0xFF8001
    assert per_point[1, 2, 16:20].view("<u4")[0] == 0x010203
    decoded = np.frombuffer(raw.tobytes(), dtype=cloud_dtype(True)).reshape(2, 3)
    assert decoded["rgb"][0, 0].view(np.uint32) == 0xFF8001  # same bits through the FLOAT32 field
    for i, name in enumerate("xyz"):
        np.testing.assert_array_equal(decoded[name], points[..., i].numpy())
    assert not per_point[..., 12:16].any() and not per_point[..., 19:32].any()


def test_pack_points_reuses_out_and_clears_padding() -> None:
    points = depth_to_points(depth_5x7(), INTR_5x7)
    rgb = torch.full((5, 7, 3), 9, dtype=torch.uint8)
    out = torch.full((5, 7 * 32), 0xEE, dtype=torch.uint8)
    result = pack_points(points, rgb, out=out)
    assert result.data_ptr() == out.data_ptr()
    np.testing.assert_array_equal(result.numpy(), pack_points(points, rgb).numpy())
    with pytest.raises(ValueError, match="out must be a contiguous"):
        pack_points(points, out=out)  # xyz needs (5, 112), not (5, 224)


def test_pack_points_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"points must be \(h, w, 3\)"):
        pack_points(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"rgb must be a \(2, 3, 3\) uint8 tensor"):
        pack_points(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))


@pytest.mark.parametrize("decimation", [1, 2, 3])
@pytest.mark.parametrize("color", [False, True])
def test_depth_to_cloud_equals_two_step_path(decimation: int, color: bool) -> None:
    depth = depth_5x7()
    rgb = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fused = depth_to_cloud(depth, INTR_5x7, rgb if color else None, decimation)
    points = depth_to_points(depth, INTR_5x7, decimation)
    two_step = pack_points(points, rgb[::decimation, ::decimation] if color else None)
    assert fused.shape == two_step.shape
    np.testing.assert_array_equal(fused.numpy(), two_step.numpy())
    with pytest.raises(ValueError, match="rgb must be"):
        depth_to_cloud(depth, INTR_5x7, rgb[:4], decimation)


# --- colouring --------------------------------------------------------------------------------------------------


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(c / 255.0))[0] * 360.0 for c in rgb.astype(np.float64)])


def test_colorize_shape_dtype_and_invalid_black() -> None:
    depth = torch.full((4, 5), 2.0)
    depth[0, 0] = NAN
    depth[1, 1] = math.inf
    depth[2, 2] = -math.inf
    out = colorize_depth(depth, 0.5, 10.0)
    assert out.shape == (4, 5, 3) and out.dtype == torch.uint8
    for v, u in [(0, 0), (1, 1), (2, 2)]:
        assert out[v, u].tolist() == [0, 0, 0]
    assert (out.reshape(-1, 3).sum(-1) > 0).sum() == 17  # every valid pixel is coloured, none black


def test_colorize_hue_is_monotone_from_near_warm_to_far_cool() -> None:
    depths = torch.linspace(1.0, 9.0, 200).reshape(1, -1)
    colours = colorize_depth(depths, 1.0, 9.0)[0].numpy()
    hue = hue_degrees(colours)
    assert hue[0] < 20 and hue[-1] > 200  # near is red, far is blue
    assert np.all(np.diff(hue) >= -0.5), hue  # never turns back (0.5 degree slack for uint8 rounding)
    # Out-of-range depths take the end colours.
    ends = colorize_depth(torch.tensor([[0.1, 1.0, 9.0, 50.0]]), 1.0, 9.0)[0]
    assert ends[0].tolist() == ends[1].tolist() and ends[2].tolist() == ends[3].tolist()


def test_colorize_rejects_bad_range() -> None:
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        colorize_depth(torch.ones(2, 2), 5.0, 5.0)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        colorize_depth(torch.ones(2, 2), 0.0, math.inf)
