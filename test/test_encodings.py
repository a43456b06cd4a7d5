"""sensor_msgs/Image and CompressedImage decoding: exact pixel values, padding, zero-copy and every rejection."""

from __future__ import annotations

import array
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from zoedepth_ros.engine import encodings
from zoedepth_ros.engine.encodings import (
    ENCODINGS,
    ImageError,
    array_to_tensor,
    decode_compressed,
    image_array,
    image_array_from_msg,
    to_rgb,
    to_rgb8,
)

try:  # real messages where ROS is installed; the tests that need one skip without it
    from sensor_msgs.msg import Image
except ImportError:
    Image = None


def real_image(**fields):
    if Image is None:
        pytest.skip("sensor_msgs is not installed (a venv set up with ZOEDEPTH_ROS_SKIP_ROS=1)")
    return Image(**fields)


# A 2x3 RGB reference image with distinct values in every channel.
RGB = np.array(
    [
        [[255, 0, 10], [1, 128, 254], [37, 73, 109]],
        [[0, 0, 0], [200, 100, 50], [12, 34, 56]],
    ],
    dtype=np.uint8,
)
PAD = 5  # bytes of row padding in the padded cases; filled with 0xEE so a view that reads it shows up


def padded(rows: np.ndarray, step: int) -> bytes:
    """Rows of an (H, W, C) uint8 array laid out every ``step`` bytes, padding filled with 0xEE."""
    h = rows.shape[0]
    flat = rows.reshape(h, -1)
    out = bytearray(b"\xee" * (step * h))
    for i in range(h):
        out[i * step : i * step + flat.shape[1]] = flat[i].tobytes()
    return bytes(out)


def encode_8bit(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The test's own encoder for the 8-bit packed encodings (alpha = 77, never read back)."""
    alpha = np.full((*rgb.shape[:2], 1), 77, np.uint8)
    return {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=-1),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=-1),
    }[encoding]


def decode(encoding: str, pixels: np.ndarray, *, is_bigendian: int = 0, pad: int = PAD) -> np.ndarray:
    """Full path: bytes -> view -> tensor -> to_rgb, returned as an (H, W, 3) float32 array."""
    h, w = pixels.shape[:2]
    raw_bytes = pixels.reshape(h, -1).view(np.uint8)
    step = raw_bytes.shape[1] + pad
    data = padded(raw_bytes.reshape(h, step - pad, 1), step)
    view = image_array(h, w, encoding, step, is_bigendian, data)
    out = to_rgb(array_to_tensor(view), encoding)
    assert out.shape == (1, 3, h, w) and out.dtype == torch.float32 and out.is_contiguous()
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_packed_colour_encodings_with_row_padding(encoding: str) -> None:
    got = decode(encoding, encode_8bit(RGB, encoding))
    expected = RGB.astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(got, expected)


def test_bgr_channel_order_is_swapped_and_alpha_dropped() -> None:
    # One pure-blue pixel in bgr8 is B=255 first: it must come out as RGB (0, 0, 1).
    bgr = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_array_equal(decode("bgr8", bgr, pad=0), [[[0, 0, 1], [1, 0, 0]]])
    bgra = np.array([[[255, 0, 0, 9], [0, 0, 255, 9]]], np.uint8)
    np.testing.assert_array_equal(decode("bgra8", bgra), [[[0, 0, 1], [1, 0, 0]]])
    rgba = np.array([[[255, 0, 0, 9], [0, 0, 255, 9]]], np.uint8)
    np.testing.assert_array_equal(decode("rgba8", rgba), [[[1, 0, 0], [0, 0, 1]]])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_to_rgb8_is_exact_for_8bit_colour(encoding: str) -> None:
    pixels = encode_8bit(RGB, encoding)
    h, w, c = pixels.shape
    view = image_array(h, w, encoding, w * c + PAD, 0, padded(pixels, w * c + PAD))
    out = to_rgb8(array_to_tensor(view), encoding)
    assert out.dtype == torch.uint8 and out.shape == (h, w, 3)
    np.testing.assert_array_equal(out.numpy(), RGB)


def test_mono8_is_replicated() -> None:
    grey = np.array([[[0], [128], [255]], [[1], [2], [3]]], np.uint8)
    got = decode("mono8", grey)
    expected = np.repeat(grey.astype(np.float32) / np.float32(255.0), 3, axis=2)
    np.testing.assert_array_equal(got, expected)
    raw = array_to_tensor(image_array(2, 3, "mono8", 3, 0, grey.tobytes()))
    np.testing.assert_array_equal(to_rgb8(raw, "mono8").numpy(), np.repeat(grey, 3, axis=2))


@pytest.mark.parametrize("big", [0, 1])
def test_mono16_both_byte_orders(big: int) -> None:
    values = np.array([[0, 0x1234, 65535], [1, 32768, 0xABCD]], np.uint16)
    dtype = ">u2" if big else "<u2"
    pixels = values.astype(dtype)[..., None]
    # Byte-level check of what we are feeding in: 0x1234 is 12 34 big-endian, 34 12 little-endian.
    assert pixels[0, 1].tobytes() == (b"\x12\x34" if big else b"\x34\x12")
    got = decode("mono16", pixels, is_bigendian=big, pad=4)
    expected = np.repeat(values.astype(np.float32)[..., None] / np.float32(65535.0), 3, axis=2)
    np.testing.assert_array_equal(got, expected)
    # to_rgb8 rounds v * 255 / 65535: 0x1234 = 4660 -> 18.13 -> 18; 32768 -> 127.5 -> 128; 0xABCD = 43981 -> 171.1
    h, w = values.shape
    view = image_array(h, w, "mono16", w * 2, big, pixels.tobytes())
    out = to_rgb8(array_to_tensor(view), "mono16")
    np.testing.assert_array_equal(out[..., 0].numpy(), [[0, 18, 255], [0, 128, 171]])


def test_mono16_from_int16_tensor_matches_uint16() -> None:
    values = torch.tensor([[0, 40000, 65535]], dtype=torch.int32)
    as_int16 = values.to(torch.int16)  # wraps 40000 and 65535 to negative numbers: same bits
    as_uint16 = values.to(torch.uint16)
    a = to_rgb(as_int16.unsqueeze(-1), "mono16")
    b = to_rgb(as_uint16.unsqueeze(-1), "mono16")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert b[0, 0, 0, 1].item() == pytest.approx(40000 / 65535)


# Two pixel pairs, hand-computed with full-range BT.601:
#   pair 1: U=100, Y0=50, V=200, Y1=150 (U-128 = -28, V-128 = 72)
#     R0 = 50 + 1.402*72 = 150.944
#     G0 = 50 - 0.344136*(-28) - 0.714136*72 = 50 + 9.635808 - 51.417792 = 8.218016
#     B0 = 50 + 1.772*(-28) = 0.384
#     R1 = 250.944, G1 = 108.218016, B1 = 100.384 (Y1 = Y0 + 100, same chroma)
#   pair 2: U=255, Y0=250, V=0, Y1=10 (U-128 = 127, V-128 = -128)
#     R0 = 250 - 179.456 = 70.544;  G0 = 250 - 43.705272 + 91.409408 = 297.704136 -> 255;  B0 = 250 + 225.044 -> 255
#     R1 = 10 - 179.456 -> 0;  G1 = 10 - 43.705272 + 91.409408 = 57.704136;  B1 = 10 + 225.044 = 235.044
YUV_EXPECTED_255 = np.array(
    [
        [150.944, 8.218016, 0.384],
        [250.944, 108.218016, 100.384],
        [70.544, 255.0, 255.0],
        [0.0, 57.704136, 235.044],
    ]
)
YUV_EXPECTED_8 = np.array([[151, 8, 0], [251, 108, 100], [71, 255, 255], [0, 58, 235]], np.uint8)
UYVY_ROW = bytes([100, 50, 200, 150, 255, 250, 0, 10])  # U0 Y0 V0 Y1 | U2 Y2 V2 Y3
YUYV_ROW = bytes([50, 100, 150, 200, 250, 255, 10, 0])  # Y0 U0 Y1 V0 | Y2 U2 Y3 V2


@pytest.mark.parametrize(
    ("encoding", "row"),
    [("yuv422", UYVY_ROW), ("uyvy", UYVY_ROW), ("yuv422_yuy2", YUYV_ROW), ("yuyv", YUYV_ROW)],
)
def test_yuv422_hand_computed(encoding: str, row: bytes) -> None:
    # Two rows (the second row's pairs swapped) and 3 bytes of padding per row.
    row2 = row[4:] + row[:4]
    step = len(row) + 3
    data = row + b"\xee" * 3 + row2 + b"\xee" * 3
    view = image_array(2, 4, encoding, step, 0, data)
    assert view.shape == (2, 4, 2)
    raw = array_to_tensor(view)
    rgb = to_rgb(raw, encoding)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(rgb[0], YUV_EXPECTED_255 / 255.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rgb[1], YUV_EXPECTED_255[[2, 3, 0, 1]] / 255.0, rtol=0, atol=1e-6)
    rgb8 = to_rgb8(raw, encoding).numpy()
    np.testing.assert_array_equal(rgb8[0], YUV_EXPECTED_8)
    np.testing.assert_array_equal(rgb8[1], YUV_EXPECTED_8[[2, 3, 0, 1]])


def test_every_listed_encoding_decodes() -> None:
    expected = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "uyvy", "yuv422_yuy2", "yuyv"}
    assert set(ENCODINGS) == expected
    for name, info in ENCODINGS.items():
        w = 4
        view = image_array(3, w, name, w * info.bytes_per_pixel, 0, bytes(3 * w * info.bytes_per_pixel))
        assert to_rgb(array_to_tensor(view), name).shape == (1, 3, 3, w)
        assert to_rgb8(array_to_tensor(view), name).shape == (3, w, 3)


# --- rejections -------------------------------------------------------------------------------------------------


def test_step_smaller_than_row() -> None:
    with pytest.raises(ImageError, match=r"step 1900 is smaller than width\*3 = 1920 for rgb8"):
        image_array(480, 640, "rgb8", 1900, 0, bytes(1900 * 480))


@pytest.mark.parametrize("size", [1000, 921599, 921601])
def test_data_length_must_be_step_times_height(size: int) -> None:
    with pytest.raises(ImageError, match=rf"data has {size} bytes, expected step\*height = 921600"):
        image_array(480, 640, "rgb8", 1920, 0, bytes(size))


def test_unsupported_encoding_lists_supported() -> None:
    with pytest.raises(ImageError, match=r"unsupported encoding 'bayer_rggb8'; supported: rgb8, bgr8"):
        image_array(2, 2, "bayer_rggb8", 2, 0, bytes(4))


def test_encoding_names_are_case_insensitive() -> None:
    assert image_array(1, 2, " RGB8", 6, 0, bytes(6)).shape == (1, 2, 3)


@pytest.mark.parametrize(("h", "w"), [(480, 0), (0, 640), (-1, 5)])
def test_zero_size(h: int, w: int) -> None:
    with pytest.raises(ImageError, match=rf"zero-size image {w}x{h}"):
        image_array(h, w, "rgb8", 3 * max(w, 1), 0, b"")


def test_size_limit_checked_before_data() -> None:
    # No data at all: the size check must come first (no attempt to read 30 GB).
    with pytest.raises(ImageError, match="image 100000x100000 exceeds the 64 megapixel limit"):
        image_array(100000, 100000, "rgb8", 300000, 0, b"")
    with pytest.raises(ImageError, match="exceeds the 1e-05 megapixel limit"):
        image_array(4, 4, "mono8", 4, 0, bytes(16), max_pixels=10)


def test_size_limit_constant_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encodings, "MAX_PIXELS", 15)
    with pytest.raises(ImageError, match="exceeds"):
        image_array(4, 4, "mono8", 4, 0, bytes(16))
    monkeypatch.setattr(encodings, "MAX_PIXELS", 16)
    assert image_array(4, 4, "mono8", 4, 0, bytes(16)).shape == (4, 4, 1)


def test_yuv422_needs_even_width() -> None:
    with pytest.raises(ImageError, match="width 3 is odd; yuv422"):
        image_array(1, 3, "yuv422", 6, 0, bytes(6))
    with pytest.raises(ImageError, match="width 3 is odd"):
        to_rgb(torch.zeros(1, 3, 2, dtype=torch.uint8), "yuyv")


def test_header_fields_must_be_integers() -> None:
    with pytest.raises(ImageError, match="step must be an integer"):
        image_array(1, 1, "mono8", 1.0, 0, b"\x00")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # numpy 1.x casts these to uint8 silently (300 -> 44, 256 -> 0, -1 -> 255); numpy 2 raises OverflowError.
        ([1, 300], "300 at index 1 is out of range"),
        ((256, 0), "256 at index 0 is out of range"),
        ([0, -1], "-1 at index 1 is out of range"),
        ([[1], [-300]], "-300 at index 1 is out of range"),
        ([np.int64(7), np.int64(1000)], "1000 at index 1 is out of range"),
        ([1, 2**70], "values are object, not integers"),  # beyond 64 bits
        ([1.0, 2.5], "values are float64, not integers"),  # no silent truncation to 2
        (["a", "b"], "values are <U1, not integers"),
        ([1, None], "values are object, not integers"),
    ],
)
def test_list_data_out_of_byte_range(data, message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 1.24-1.26 only warn (DeprecationWarning) and then wrap
        with pytest.raises(ImageError, match=rf"image data is not a sequence of bytes \(0\.\.255\): .*{message}"):
            image_array(1, 2, "mono8", 2, 0, data)


def test_ragged_list_data() -> None:
    # numpy >= 1.24 refuses ragged nesting (ValueError); 1.21-1.23 make an object array (and warn): both rejected.
    with pytest.raises(ImageError, match=r"not a sequence of bytes \(0\.\.255\): .*(inhomogeneous|object)"):
        image_array(1, 2, "mono8", 2, 0, [[1, 2], [3]])


@pytest.mark.parametrize("data", [[1, 255], (0, 255), [True, False], [np.uint8(3), np.int64(4)], [[5], [6]]])
def test_list_data_in_byte_range(data) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        view = image_array(2, 1, "mono8", 1, 0, data)
    assert view.dtype == np.uint8 and view.reshape(-1).tolist() == np.asarray(data).reshape(-1).astype(int).tolist()
    with pytest.raises(ImageError, match="data has 0 bytes, expected step\\*height = 2"):
        image_array(2, 1, "mono8", 1, 0, [])


@pytest.mark.parametrize("make", [bytes, bytearray, lambda b: array.array("B", b), memoryview])
def test_buffers_never_take_the_per_value_list_path(make, monkeypatch: pytest.MonkeyPatch) -> None:
    # bytes and array('B') (what rclpy gives) hold bytes by construction: no range check, no copy.
    def refuse(data):
        raise AssertionError(f"{type(data).__name__} data took the list path")

    monkeypatch.setattr(encodings, "_sequence_bytes", refuse)
    view = image_array(1, 3, "mono8", 3, 0, make(b"\x00\x80\xff"))
    assert view.reshape(-1).tolist() == [0, 128, 255]


def test_to_rgb_rejects_wrong_shape_and_dtype() -> None:
    with pytest.raises(ImageError, match=r"rgb8 needs a \(H, W, 3\) tensor, got shape \(2, 2, 4\)"):
        to_rgb(torch.zeros(2, 2, 4, dtype=torch.uint8), "rgb8")
    with pytest.raises(ImageError, match=r"rgb8 needs a tensor of dtype torch\.uint8"):
        to_rgb(torch.zeros(2, 2, 3, dtype=torch.float32), "rgb8")
    with pytest.raises(ImageError, match="zero-size image 0x2"):
        to_rgb(torch.zeros(2, 0, 3, dtype=torch.uint8), "rgb8")
    with pytest.raises(ImageError, match="unsupported encoding"):
        to_rgb8(torch.zeros(2, 2, 3, dtype=torch.uint8), "8UC3")


# --- zero copy --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [bytearray, lambda b: array.array("B", b)])
def test_view_is_zero_copy(make) -> None:
    source = make(padded(RGB, 3 * 3 + PAD))
    view = image_array(2, 3, "rgb8", 3 * 3 + PAD, 0, source)
    assert view.shape == (2, 3, 3)
    assert np.shares_memory(view, np.frombuffer(source, np.uint8))
    np.testing.assert_array_equal(view, RGB)
    tensor = array_to_tensor(view)
    assert tensor.data_ptr() == view.ctypes.data  # torch shares the message's memory as well
    assert tensor.stride() == (3 * 3 + PAD, 3, 1)


def test_read_only_bytes_share_memory_without_warnings() -> None:
    data = RGB.tobytes()
    view = image_array(2, 3, "rgb8", 9, 0, data)
    assert not view.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = array_to_tensor(view)
    assert tensor.data_ptr() == view.ctypes.data


def test_big_endian_and_odd_step_tensors_are_copied_correctly() -> None:
    values = np.array([[1, 0x1234, 65535]], np.uint16)
    be = image_array(1, 3, "mono16", 6, 1, values.astype(">u2").tobytes())
    t = array_to_tensor(be)
    assert t.dtype == torch.uint16 and t[0, :, 0].tolist() == [1, 0x1234, 65535]
    # step 7 is not a multiple of 2: torch cannot express the stride, so the rows are compacted.
    rows = np.array([[1, 2], [3, 0xFFFF]], "<u2")
    data = rows[0].tobytes() + b"\x00" * 3 + rows[1].tobytes() + b"\x00" * 3
    odd = image_array(2, 2, "mono16", 7, 0, data)
    assert array_to_tensor(odd)[..., 0].tolist() == [[1, 2], [3, 0xFFFF]]


def test_real_image_message_zero_copy() -> None:
    msg = real_image(height=2, width=3, encoding="bgr8", is_bigendian=0, step=3 * 3 + PAD)
    msg.data = array.array("B", padded(encode_8bit(RGB, "bgr8"), msg.step))
    view = image_array_from_msg(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(to_rgb8(array_to_tensor(view), msg.encoding).numpy(), RGB)


def test_real_image_message_mono16_big_endian_from_bytes() -> None:
    values = np.array([[0, 1000], [30000, 65535]], np.uint16)
    msg = real_image(height=2, width=2, encoding="mono16", is_bigendian=1, step=4)
    msg.data = values.astype(">u2").tobytes()  # rclpy stores it as array('B')
    rgb = to_rgb(array_to_tensor(image_array_from_msg(msg)), msg.encoding)
    np.testing.assert_array_equal(rgb[0, 1].numpy(), values.astype(np.float32) / np.float32(65535.0))


# --- compressed -------------------------------------------------------------------------------------------------


def encoded(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def smooth_image(h: int = 16, w: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 10, yy * 15, 255 - xx * 5], axis=-1).astype(np.uint8)


def test_png_rgb_is_exact() -> None:
    img = smooth_image()
    out = decode_compressed("rgb8; png compressed rgb8", encoded(img, "PNG"))
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


def test_png_grey_rgba_and_16bit() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(decode_compressed("png", encoded(grey, "PNG")), np.repeat(grey[..., None], 3, 2))
    rgba = np.concatenate([RGB, np.full((2, 3, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(decode_compressed("png", encoded(rgba, "PNG")), RGB)
    deep = np.array([[0, 257, 4660], [32768, 65535, 1000]], np.uint16)
    out = decode_compressed("mono16; png compressed", encoded(deep, "PNG"))
    expected = np.rint(deep * 255.0 / 65535.0).astype(np.uint8)  # 0, 1, 18, 128, 255, 4
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, 2))


def test_jpeg_is_close() -> None:
    img = smooth_image()
    data = array.array("B", encoded(img, "JPEG", quality=95))  # the type rclpy gives CompressedImage.data
    out = decode_compressed("bgr8; jpeg compressed bgr8", data)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 3


@pytest.mark.parametrize("data", [b"not an image at all", bytes(range(256)) * 4, [0xFF, 0xD8, 0xFF, 0x00]])
def test_garbage_is_rejected(data) -> None:
    with pytest.raises(ImageError, match=r"cannot decode CompressedImage \(format 'jpeg'"):
        decode_compressed("jpeg", data)


def test_truncated_jpeg_and_empty_data() -> None:
    data = encoded(smooth_image(64, 64), "JPEG")
    with pytest.raises(ImageError, match="cannot decode CompressedImage"):
        decode_compressed("jpeg", data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"format 'png'.* empty data"):
        decode_compressed("png", b"")


def test_other_formats_and_compressed_depth_are_rejected() -> None:
    with pytest.raises(ImageError, match="not a JPEG or PNG"):
        decode_compressed("bmp", encoded(smooth_image(), "BMP"))
    with pytest.raises(ImageError, match="compressed depth map"):
        decode_compressed("16UC1; compressedDepth png", encoded(smooth_image(), "PNG"))


def test_compressed_size_limit() -> None:
    with pytest.raises(ImageError, match="image 24x16 exceeds"):
        decode_compressed("png", encoded(smooth_image(), "PNG"), max_pixels=100)
