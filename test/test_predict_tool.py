"""``zoedepth-ros-predict`` end to end on a tiny random checkpoint: the files hold what ``engine.run`` gives for the
same frame (npy / tiff bit-exact with --batch 1, png16 within 0.5 mm), skips are counted by reason, nothing is
overwritten without --force, and the PLY is the node's cloud with the calibration's P."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoedepth_ros.engine import FrameDropped, open_engine
from zoedepth_ros.engine.cloud import depth_to_points
from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.pipeline import Settings
from zoedepth_ros.offline import depth_files as DF
from zoedepth_ros.offline import image_outputs
from zoedepth_ros.tools import predict

try:
    import cv2
except ImportError:  # the video test skips; the rest runs
    cv2 = None

SETTINGS = Settings(points=False)  # the tool's defaults: the node's parameter defaults, no device-side extras

CAMERA_YAML = """\
image_width: 128
image_height: 96
camera_name: test
camera_matrix: {rows: 3, cols: 3, data: [100.0, 0.0, 63.5, 0.0, 100.0, 47.5, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.0, 0.0, 0.0, 0.0, 0.0]}
rectification_matrix: {rows: 3, cols: 3, data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}
projection_matrix: {rows: 3, cols: 4, data: [90.0, 0.0, 60.0, 0.0, 0.0, 92.0, 46.0, 0.0, 0.0, 0.0, 1.0, 0.0]}
"""


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth structured RGB image (noise would make a random model's depth flat)."""
    ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    rgb = np.stack([xs, ys * ys, 0.5 + 0.5 * np.sin(7 * xs * ys + seed)], axis=-1)
    return (255 * rgb).astype(np.uint8)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return open_engine(str(tiny_checkpoint("nk")), "cpu", "fp32", "eager", info=lambda _: None)


@pytest.fixture
def shared_engine(engine, monkeypatch):
    """The tool reuses the module's engine instead of loading the checkpoint in every test."""
    monkeypatch.setattr(predict, "engine_from_args", lambda *a, **k: engine)
    return engine


_REFERENCES: dict[tuple, np.ndarray] = {}


def reference(engine, raw: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
    """``engine.run``'s depth for one frame (a batch of one: the node's path), computed once per frame."""
    key = (encoding, raw.shape, raw.dtype.str, raw.tobytes())
    if key not in _REFERENCES:
        h, w = raw.shape[:2]
        out = engine.run(raw, encoding, Intrinsics(50.0, 50.0, w / 2, h / 2, w, h), SETTINGS)
        _REFERENCES[key] = np.frombuffer(out.depth, np.float32).reshape(out.height, out.width)
    return _REFERENCES[key]


def rgb_of(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def run(args: list[str], tmp_path: Path) -> tuple[int, dict]:
    summary = tmp_path / "summary.json"
    status = predict.main([*args, "--summary-json", str(summary)])
    return status, json.loads(summary.read_text()) if summary.exists() else {}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a.png and b.jpg (64x48), c.png (60x40), a broken bad.png, sub/d.png, and a depth file named like ours."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(picture(48, 64, 0)).save(root / "a.png")
    Image.fromarray(picture(48, 64, 1)).save(root / "b.jpg", quality=95)
    Image.fromarray(picture(40, 60, 2)).save(root / "c.png")
    Image.fromarray(picture(40, 60, 3)).save(root / "sub" / "d.png")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(root / "old_depth.png")
    return root


def test_folder_npy_is_exactly_the_engines_depth_and_skips_are_counted(
    tiny_checkpoint, engine, folder: Path, tmp_path: Path, capsys
) -> None:
    args = [str(folder), "--format", "npy", "--batch", "1", "--checkpoint", str(tiny_checkpoint("nk"))]
    status, summary = run([*args, "--device", "cpu"], tmp_path)
    assert status == 0
    assert (summary["frames_in"], summary["frames_out"], summary["skipped"]) == (4, 3, {"unreadable": 1})
    assert summary["exit_status"] == 0 and summary["engine"]["device"] == "cpu"
    assert summary["ignored_output_like_files"] == 1  # old_depth.png is not taken as an image
    for name in ("a.png", "b.jpg", "c.png"):
        depth = np.load(folder / f"{Path(name).stem}_depth.npy")
        np.testing.assert_array_equal(depth, reference(engine, rgb_of(folder / name)))
    assert not (folder / "sub" / "d_depth.npy").exists()  # not --recursive
    err = capsys.readouterr().err
    assert "skipped" in err and "bad.png" in err and "Traceback" not in err


def test_batches_of_two_sizes_png16_and_tiff_match_the_engine(shared_engine, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    status, summary = run([str(folder), "-r", "--output", str(out), "--batch", "4"], tmp_path)
    assert status == 0 and summary["frames_out"] == 4
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a_depth.png",
        "b_depth.png",
        "c_depth.png",
        "sub/d_depth.png",
    ]
    for rel in ("a.png", "b.jpg", "c.png", "sub/d.png"):
        expected = reference(shared_engine, rgb_of(folder / rel))
        got = DF.read_png16(out / f"{rel.rsplit('.', 1)[0]}_depth.png")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        assert np.nanmax(np.abs(got - expected)) <= 0.0005 + 1e-5  # mm rounding + batch-vs-single (1e-5 m)
    status, _ = run([str(folder / "c.png"), "--output", str(out), "--format", "tiff", "--batch", "1"], tmp_path)
    assert status == 0
    np.testing.assert_array_equal(
        DF.read_tiff(out / "c_depth.tiff"), reference(shared_engine, rgb_of(folder / "c.png"))
    )


def test_existing_outputs_are_refused_without_force(shared_engine, tmp_path: Path, capsys) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(picture(48, 64)).save(image)
    assert run([str(image), "--preview"], tmp_path)[0] == 0
    assert (tmp_path / "a_depth_preview.png").exists()
    (tmp_path / "a_depth.png").write_bytes(b"keep me")
    status, summary = run([str(image), "--preview"], tmp_path)
    assert status == 2 and summary["exit_status"] == 2
    assert "exist already" in summary["error"] and "--force" in capsys.readouterr().err
    assert (tmp_path / "a_depth.png").read_bytes() == b"keep me"
    assert run([str(image), "--preview", "--force"], tmp_path)[0] == 0
    expected = reference(shared_engine, picture(48, 64))
    assert np.nanmax(np.abs(DF.read_png16(tmp_path / "a_depth.png") - expected)) <= 0.0005 + 1e-6
    assert not list(tmp_path.glob(".*.part"))


def test_ply_uses_the_calibrations_p_scaled_to_the_image(shared_engine, tmp_path: Path, capsys) -> None:
    image = tmp_path / "a.png"
    rgb = picture(48, 64)
    Image.fromarray(rgb).save(image)
    (tmp_path / "cam.yaml").write_text(CAMERA_YAML)
    args = [str(image), "--ply", "--color", "--camera-info", str(tmp_path / "cam.yaml"), "--format", "npy"]
    status, _ = run([*args, "--batch", "1"], tmp_path)
    assert status == 0
    assert "scaled its intrinsics to 64x48" in capsys.readouterr().err
    depth = np.load(tmp_path / "a_depth.npy")
    # P of the 128x96 calibration halved, pixel-centre convention: cx' = (60 + 0.5) / 2 - 0.5 = 29.75.
    intr = Intrinsics(fx=45.0, fy=46.0, cx=29.75, cy=22.75, width=64, height=48)
    vertices = DF.read_ply(tmp_path / "a_points.ply")
    valid = np.isfinite(depth).ravel()
    assert len(vertices) == valid.sum() > 0
    node = depth_to_points(torch.from_numpy(depth), intr).numpy().reshape(-1, 3)[valid]
    np.testing.assert_array_equal(np.stack([vertices["x"], vertices["y"], vertices["z"]], 1), node)
    v, u = divmod(int(np.flatnonzero(valid)[0]), 64)  # first valid pixel, by hand
    assert vertices["x"][0] == pytest.approx((u - 29.75) * depth[v, u] / 45.0, rel=1e-6)
    colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], 1)
    np.testing.assert_array_equal(colours, rgb.reshape(-1, 3)[valid])


def test_flag_intrinsics_output_scale_and_decimated_coloured_ply(shared_engine, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    rgb = picture(48, 64)
    Image.fromarray(rgb).save(image)
    flags = ["--fx", "40", "--fy", "41", "--cx", "31.5", "--cy", "23.5", "--output-scale", "0.5", "--decimation", "2"]
    assert run([str(image), "--ply", "--color", "--format", "npy", *flags], tmp_path)[0] == 0
    depth = np.load(tmp_path / "a_depth.npy")
    assert depth.shape == (24, 32)
    # The depth image's intrinsics, as the node's depth/camera_info: (31.5 + 0.5) * 0.5 - 0.5 = 15.5.
    intr = Intrinsics(20.0, 20.5, 15.5, 11.5, 32, 24)
    points = depth_to_points(torch.from_numpy(depth), intr, 2).numpy().reshape(-1, 3)
    valid = np.isfinite(points).all(axis=1)
    vertices = DF.read_ply(tmp_path / "a_points.ply")
    np.testing.assert_array_equal(np.stack([vertices["x"], vertices["y"], vertices["z"]], 1), points[valid])
    # Colours: nearest down-scaling by 2 takes the even pixels, decimation by 2 every other of those.
    colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], 1)
    np.testing.assert_array_equal(colours, rgb[::4, ::4].reshape(-1, 3)[valid])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ply"], "--ply needs the camera's intrinsics"),
        (["--ply", "--fx", "40", "--fy", "40"], "--fx --fy also need --cx --cy"),
        (["--color"], "use it with --ply"),
        (["--camera-info", "/nonexistent/cam.yaml", "--ply"], "cannot read /nonexistent/cam.yaml"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(picture(48, 64)).save(image)
    assert predict.main([str(image), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_paths_and_nothing_usable_exit_2(shared_engine, tmp_path: Path, capsys) -> None:
    assert predict.main([str(tmp_path / "missing.png")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict.main([str(tmp_path / "empty")]) == 2
    assert "no images or videos" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(b"junk")
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tiff")
    status, summary = run([str(tmp_path / "x.png"), str(tmp_path / "f.tiff")], tmp_path)
    assert status == 2 and summary["skipped"] == {"unreadable": 1, "unsupported_format": 1}
    assert "none of the 2 frame(s) could be used" in capsys.readouterr().err
    assert predict.main([str(tmp_path / "x.png"), "--batch", "0"]) == 2  # argparse's own usage error


def test_grey_images_stay_mono8_and_mono16_as_the_node_takes_them(shared_engine, tmp_path: Path) -> None:
    # (RGBA, palette and EXIF-rotated files become the rgb8 arrays test_image_files checks.)
    grey = picture(48, 64)[..., 0]
    grey16 = grey.astype(np.uint16) * 257 + 3
    Image.fromarray(grey).save(tmp_path / "l.png")
    Image.fromarray(grey16).save(tmp_path / "i16.png")
    status, _ = run([str(tmp_path), "--format", "npy", "--batch", "1"], tmp_path)
    assert status == 0
    np.testing.assert_array_equal(np.load(tmp_path / "l_depth.npy"), reference(shared_engine, grey, "mono8"))
    np.testing.assert_array_equal(np.load(tmp_path / "i16_depth.npy"), reference(shared_engine, grey16, "mono16"))


def test_too_large_image_and_device_failure_retry(shared_engine, tmp_path: Path, monkeypatch, capsys) -> None:
    Image.fromarray(picture(48, 64)).save(tmp_path / "a.png")
    Image.fromarray(picture(100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr("zoedepth_ros.engine.encodings.MAX_PIXELS", 5000)
    real = type(shared_engine).submit_batch
    calls = []

    def flaky(self, frames):
        calls.append(len(frames))
        if len(calls) == 1:
            raise FrameDropped("out_of_memory", "CUDA out of memory (injected)")
        return real(self, frames)

    monkeypatch.setattr(type(shared_engine), "submit_batch", flaky)
    status, summary = run([str(tmp_path)], tmp_path)
    assert status == 0 and calls == [1, 1]
    assert (summary["frames_out"], summary["skipped"]) == (1, {"too_large": 1})
    assert "trying it once more" in capsys.readouterr().err


@pytest.mark.parametrize(("failures", "written"), [(1, 1), (2, 0)])
def test_device_failure_while_waiting_is_retried_once(shared_engine, tmp_path: Path, monkeypatch, failures, written):
    """A batch lost on the device after submission runs once more; lost again, its frames are skipped."""
    Image.fromarray(picture(48, 64)).save(tmp_path / "a.png")
    real = type(shared_engine).results
    calls = []

    def flaky(self, inflight):
        calls.append(1)
        if len(calls) <= failures:
            raise FrameDropped("out_of_memory", "CUDA out of memory (injected)")
        return real(self, inflight)

    monkeypatch.setattr(type(shared_engine), "results", flaky)
    status, summary = run([str(tmp_path)], tmp_path)
    assert len(calls) == 2 and summary["frames_out"] == written
    assert sorted(p.name for p in tmp_path.glob("*_depth*")) == ["a_depth.png"] * written
    if written:
        assert status == 0 and summary["skipped"] == {}
    else:  # not one frame usable: bad input
        assert status == 2 and summary["skipped"] == {"device_failure": 1}


def stopped_while_writing_the_second(tmp_path: Path, monkeypatch, stop) -> None:
    """Two images, ``stop()`` called as the second depth file is about to be written: exit 130, one whole file."""
    for i in range(2):
        Image.fromarray(picture(48, 64, i)).save(tmp_path / f"{i}.png")
    real, written = image_outputs.write_depth, []

    def stop_at_second(path, depth, fmt):
        if written:
            stop()
        written.append(path)
        return real(path, depth, fmt)

    monkeypatch.setattr(image_outputs, "write_depth", stop_at_second)
    status, summary = run([str(tmp_path), "--batch", "1"], tmp_path)
    assert status == 130 and summary["exit_status"] == 130 and summary["frames_out"] == 1
    assert sorted(p.name for p in tmp_path.glob("*_depth*")) == ["0_depth.png"]
    assert not list(tmp_path.glob(".*"))


def test_ctrl_c_leaves_only_complete_files_and_exits_130(shared_engine, tmp_path: Path, monkeypatch) -> None:
    def ctrl_c():
        raise KeyboardInterrupt

    stopped_while_writing_the_second(tmp_path, monkeypatch, ctrl_c)


def test_sigterm_stops_like_ctrl_c(shared_engine, tmp_path: Path, monkeypatch) -> None:
    """A scheduler's SIGTERM, delivered to this process: the handler main installed makes it an interrupt."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stopped_while_writing_the_second(tmp_path, monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.skipif(cv2 is None, reason="opencv-python-headless is not installed (pip install opencv-python-headless)")
def test_video_every_second_frame_matches_the_engine(shared_engine, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.ascontiguousarray(picture(48, 64, i)[..., ::-1]))  # OpenCV writes BGR
    writer.release()
    cap, decoded = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == 5
    status, summary = run([str(video), "--every", "3", "--format", "npy", "--batch", "1"], tmp_path)
    assert status == 0 and (summary["frames_in"], summary["frames_out"]) == (2, 2)
    assert sorted(p.name for p in tmp_path.glob("clip_f*")) == ["clip_f000000_depth.npy", "clip_f000003_depth.npy"]
    for i in (0, 3):
        expected = reference(shared_engine, decoded[i], "bgr8")
        np.testing.assert_array_equal(np.load(tmp_path / f"clip_f{i:06d}_depth.npy"), expected)
    status, summary = run([str(video), "--format", "npy"], tmp_path)
    assert status == 2 and "exist already" in summary["error"]
    assert run([str(video), "--every", "5"], tmp_path)[0] == 0  # png16 files are other files: not refused
    assert (tmp_path / "clip_f000000_depth.png").exists() and not (tmp_path / "clip_f000003_depth.png").exists()


@pytest.mark.parametrize(
    ("option", "text", "expected"),
    [
        ("--fx", "0", "a focal length > 0 (pixels)"),
        ("--cx", "inf", "a finite number"),
        ("--every", "0", "a whole number >= 1"),
    ],
)
def test_numeric_options_refuse_bad_values_in_one_line(option, text, expected, capsys):
    assert predict.main(["x.png", option, text]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"argument {option}: expected {expected}, got {text!r}")
    args = predict.build_parser().parse_args(["x.png", "--fx", "500.5", "--cx", "-3", "--every", "2"])
    assert (args.fx, args.cx, args.every) == (500.5, -3.0, 2)


def test_backend_onnxruntime_writes_the_engines_depth(engine, tiny_checkpoint, tmp_path: Path, monkeypatch) -> None:
    """--backend onnxruntime reaches the engine: the ONNX graph serves (cached under ZOEDEPTH_ROS_CACHE), and its
    depth file equals the torch engine's within 1e-4 m."""
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (the test extra installs it)")
    pytest.importorskip("onnxscript", reason="exporting needs onnxscript (the test extra installs it)")
    monkeypatch.setenv("ZOEDEPTH_ROS_CACHE", str(tmp_path / "cache"))
    Image.fromarray(picture(48, 64, 5)).save(tmp_path / "a.png")
    common = ["--checkpoint", str(tiny_checkpoint("nk")), "--device", "cpu", "--precision", "fp32", "--format", "npy"]
    status, summary = run([str(tmp_path / "a.png"), *common, "--backend", "onnxruntime"], tmp_path)
    assert status == 0 and summary["frames_out"] == 1
    assert summary["engine"]["rung"] == "fp32 ort_cpu" and summary["engine"]["fallbacks"] == 0
    depth = np.load(tmp_path / "a_depth.npy")
    np.testing.assert_allclose(depth, reference(engine, picture(48, 64, 5)), rtol=0, atol=1e-4)
    graphs = sorted(p.name for p in (tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert any(name.startswith("nk_64x48_b1_pad_noflip_auto_fp32_") for name in graphs), graphs
