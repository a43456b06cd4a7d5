"""zoedepth-ros-bag: bags written here with rosbags, processed by the tool, read back with rosbags and compared with
the engine's own output for the same pixels (engine.run, a batch of one).

Most runs call ``main()`` in-process with ``open_engine`` replaced by a tiny random model at a 96x128 network size
(the tool's logic does not need 384x512; the CPU time would); one runs the real command on a checkpoint file.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import randomize_
from PIL import Image as PILImage
from rosbags.highlevel import AnyReader  # a hard requirement (requirements.txt): no skip without it
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

import zoedepth_ros.engine as engine_module  # the package: the tools import open_engine from it
from zoedepth_ros.engine import Engine
from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.pipeline import Settings
from zoedepth_ros.model import ZoeDepth, tiny_config
from zoedepth_ros.offline.bag_reader import BagError, ExactPairer, Paired, Unpaired, discover
from zoedepth_ros.offline.bag_writer import BagOutput
from zoedepth_ros.tools import bag as bag_tool

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
IMAGE, COMPRESSED, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo"
T0 = 1_700_000_000 * 10**9  # first stamp and log time (ns)
DT = 100_000_000  # 10 Hz
W, H = 64, 48
FX, FY, CX, CY = 52.0, 51.0, 31.5, 23.0


# ---------------------------------------------------------------------------------------------- writing input bags


def header(stamp: int, frame_id: str):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id
    )


def camera_info(stamp: int, frame_id: str, w: int = W, h: int = H):
    return T[INFO](
        header=header(stamp, frame_id),
        height=h,
        width=w,
        distortion_model="plumb_bob",
        d=np.array([0.1, -0.05, 0.0, 0.0, 0.01]),
        k=np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1.0]),
        r=np.eye(3).ravel(),
        p=np.array([FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1.0, 0]),
        binning_x=0,
        binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def pixels(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """A smooth, structured RGB image (noise would make every output flat)."""
    ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    phase = 0.7 * seed
    rgb = np.stack([xs, 0.5 + 0.5 * np.sin(6 * xs * ys + phase), 1 - ys], axis=-1)
    return np.round(255 * rgb).astype(np.uint8)


def raw_image(stamp: int, frame_id: str, rgb: np.ndarray, encoding: str = "rgb8", data: np.ndarray | None = None):
    h, w, _ = rgb.shape
    data = rgb.reshape(-1) if data is None else data
    return T[IMAGE](
        header=header(stamp, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0, step=3 * w, data=data
    )


def compressed_image(stamp: int, frame_id: str, rgb: np.ndarray | None, payload: bytes | None = None):
    if payload is None:
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format="PNG")  # lossless: the decoded pixels are ``rgb`` exactly
        payload = buf.getvalue()
    return T[COMPRESSED](
        header=header(stamp, frame_id), format="rgb8; png compressed", data=np.frombuffer(payload, np.uint8)
    )


def write_bag(path: Path, storage: str, messages: list[tuple[str, str, int, object]]) -> Path:
    """messages: (topic, msgtype, log time, message), written in log-time order."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, _, _ in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
        for topic, msgtype, t, msg in sorted(messages, key=lambda m: m[2]):
            writer.write(conns[topic], t, TS.serialize_cdr(msg, msgtype))
    return path


def two_camera_messages(n: int) -> list[tuple[str, str, int, object]]:
    """cam0: raw rgb8, CameraInfo logged before its image; cam1: PNG on image/compressed, CameraInfo after it."""
    out = []
    for i in range(n):
        s = T0 + i * DT
        out += [
            ("/cam0/camera_info", INFO, s, camera_info(s, "cam0_optical")),
            ("/cam0/image_raw", IMAGE, s + 1000, raw_image(s, "cam0_optical", pixels(i))),
            ("/cam1/image/compressed", COMPRESSED, s + 2000, compressed_image(s, "cam1_optical", pixels(100 + i))),
            ("/cam1/camera_info", INFO, s + 3000, camera_info(s, "cam1_optical")),
            ("/chatter", "std_msgs/msg/String", s + 4000, T["std_msgs/msg/String"](data=f"hello {i}")),
        ]
    return out


def read_bag(path: Path) -> tuple[dict[str, list[tuple[int, object]]], dict[str, object], AnyReader]:
    """{topic: [(log time, message)]}, {topic: connection}."""
    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path], default_typestore=TS) as reader:
        conns = {c.topic: c for c in reader.connections}
        for conn, t, data in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(data, conn.msgtype)))
    return out, conns, reader


# ---------------------------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def model() -> ZoeDepth:
    torch.manual_seed(5)
    return randomize_(ZoeDepth(replace(tiny_config("nk"), net_size=(96, 128))), 5).eval()


@pytest.fixture
def engines(model, monkeypatch) -> list[Engine]:
    """Replaces open_engine with the small model (fp32 eager, CPU); the engines the tool opened land here."""
    opened: list[Engine] = []

    def fake_open_engine(checkpoint, device="auto", precision="auto", execution="auto", **kw):
        e = Engine.build(
            model,
            torch.device("cpu"),
            "fp32",
            "eager",
            pad_input=kw.get("pad_input", True),
            flip_aug=kw.get("flip_aug", False),
            warn=kw.get("warn"),
            info=kw.get("info"),
            source=str(checkpoint),
        )
        opened.append(e)
        return e

    monkeypatch.setattr(engine_module, "open_engine", fake_open_engine)
    return opened


@pytest.fixture(scope="module")
def reference(model) -> Engine:
    return Engine.build(model, torch.device("cpu"), "fp32", "eager")


def run_tool(*argv: str) -> int:
    return bag_tool.main([str(a) for a in argv])


INTR = Intrinsics(FX, FY, CX, CY, W, H)


def check_frame_outputs(out, conns, camera: str, seeds: list[int], reference: Engine, settings: Settings, tol: float):
    """Every output of ``camera`` against engine.run on the same pixels (the ones the test generated)."""
    depth, infos, routing = out[f"{camera}/depth/image"], out[f"{camera}/depth/camera_info"], out[f"{camera}/routing"]
    assert len(depth) == len(infos) == len(routing) == len(seeds)
    for k, seed in enumerate(seeds):
        stamp = T0 + seed % 100 * DT
        expected = reference.run(pixels(seed), "rgb8", INTR, settings)
        t, img = depth[k]
        assert t == stamp + (1000 if camera == "/cam0" else 2000)  # the input image's log time
        assert (img.header.stamp.sec, img.header.stamp.nanosec) == (stamp // 10**9, stamp % 10**9)
        assert img.header.frame_id == f"{camera[1:]}_optical"
        assert (img.encoding, img.width, img.height, img.step, img.is_bigendian) == ("32FC1", W, H, 4 * W, 0)
        got = np.frombuffer(img.data.tobytes(), np.float32)
        want = np.frombuffer(expected.depth, np.float32)
        assert np.isfinite(want).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
        _, info = infos[k]
        assert info.header.frame_id == img.header.frame_id and info.header.stamp == img.header.stamp
        np.testing.assert_allclose(info.k, [FX, 0, CX, 0, FY, CY, 0, 0, 1])
        np.testing.assert_allclose(info.p, [FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1, 0])
        assert info.distortion_model == "plumb_bob" and list(info.d) == [0.1, -0.05, 0.0, 0.0, 0.01]
        _, r = routing[k]
        assert (r.domain, r.head, r.forced) == (expected.domain, expected.head, expected.forced)
        np.testing.assert_allclose(r.logits, expected.logits, atol=1e-4)
        assert r.probability == pytest.approx(expected.probability, abs=1e-5)
        if settings.points:
            _, cloud = out[f"{camera}/points"][k]
            assert (cloud.height, cloud.width, cloud.point_step) == (expected.cloud_height, expected.cloud_width, 16)
            assert [f.name for f in cloud.fields] == ["x", "y", "z"]
            np.testing.assert_allclose(
                np.frombuffer(cloud.data.tobytes(), np.float32),
                np.frombuffer(expected.cloud, np.float32),
                atol=tol * 10,
            )
    assert "float32[] logits" in conns[f"{camera}/routing"].msgdef.data  # DepthRouting's definition is in the bag


# ---------------------------------------------------------------------------------------------- tests: whole runs


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_two_cameras_raw_and_compressed(tmp_path, storage, engines, reference):
    bag = write_bag(tmp_path / "in", storage, two_camera_messages(3))
    summary = tmp_path / "summary.json"
    status = run_tool(bag, tmp_path / "out", "--points", "--decimation", "2", "--batch", "1", "--summary-json", summary)
    assert status == 0
    out, conns, _ = read_bag(tmp_path / "out")
    settings = Settings(points=True, decimation=2)
    check_frame_outputs(out, conns, "/cam0", [0, 1, 2], reference, settings, tol=1e-6)
    check_frame_outputs(out, conns, "/cam1", [100, 101, 102], reference, settings, tol=1e-6)
    assert "/chatter" not in out and "/cam0/image_raw" not in out  # not copied without --copy-input
    assert conns["/cam0/depth/image"].msgtype == IMAGE
    assert conns["/cam0/routing"].msgtype == "zoedepth_ros/msg/DepthRouting"
    metadata = (tmp_path / "out" / "metadata.yaml").read_text()
    assert f"storage_identifier: {storage}" in metadata
    report = json.loads(summary.read_text())
    assert report["frames_in"] == 6 and report["frames_out"] == 6 and report["skipped"] == {}
    assert report["exit_status"] == 0 and report["cameras"] == ["/cam0/image_raw", "/cam1/image/compressed"]
    assert report["engine"]["rung"] == "fp32 eager" and report["storage"] == storage
    assert not list(tmp_path.glob(".out.*"))  # no temporary left beside OUTPUT


def test_batches_span_cameras_and_match_batch_of_one(tmp_path, engines, reference):
    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(3))
    argv = ["--batch", "4", "--storage", "sqlite3", "--copy-input", "--points", "--colormap"]
    assert run_tool(bag, tmp_path / "out", *argv) == 0
    (engine,) = engines
    assert engine.status()["batch_sizes"] == {2: 1, 4: 1}  # 6 frames of one size, two cameras: 4 + 2
    out, conns, _ = read_bag(tmp_path / "out")
    settings = Settings(points=True)
    check_frame_outputs(out, conns, "/cam0", [0, 1, 2], reference, settings, tol=1e-5)
    check_frame_outputs(out, conns, "/cam1", [100, 101, 102], reference, settings, tol=1e-5)
    assert "storage_identifier: sqlite3" in (tmp_path / "out" / "metadata.yaml").read_text()
    # --copy-input: the original topics, byte for byte the same messages at the same log times
    original, _, _ = read_bag(bag)
    for topic in ("/cam0/image_raw", "/cam1/camera_info", "/chatter"):
        assert [t for t, _ in out[topic]] == [t for t, _ in original[topic]]
    assert [m.data for _, m in out["/chatter"]] == ["hello 0", "hello 1", "hello 2"]
    colormap = out["/cam1/depth/colormap"]
    assert len(colormap) == 3 and (colormap[0][1].encoding, colormap[0][1].step) == ("rgb8", 3 * W)


def test_nothing_usable_is_an_error(tmp_path, engines, capsys):
    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(2))
    assert run_tool(bag, tmp_path / "out", "--start", "5") == 2
    assert "no images of /cam0/image_raw, /cam1/image/compressed in the selected range" in capsys.readouterr().err
    msgs = []
    for i in range(2):  # CameraInfos half a frame off their images' stamps: nothing pairs exactly
        s = T0 + i * DT
        msgs.append(("/cam0/camera_info", INFO, s, camera_info(s + DT // 2, "cam0_optical")))
        msgs.append(("/cam0/image_raw", IMAGE, s + 1000, raw_image(s, "cam0_optical", pixels(i))))
    bag = write_bag(tmp_path / "in2", "mcap", msgs)
    assert run_tool(bag, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "none of the 2 image(s) could be used (no_camera_info 2); nothing written" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    summary = tmp_path / "s.json"
    assert run_tool(bag, tmp_path / "out", "--camera-info-tolerance", "0.06", "--summary-json", summary) == 0
    report = json.loads(summary.read_text())
    assert report["frames_out"] == 2 and report["pairing"]["/cam0/image_raw"] == {"exact": 0, "tolerance": 2}


def test_bad_frames_are_skipped_and_counted(tmp_path, engines, reference, capsys):
    msgs = []
    for i in range(5):
        s = T0 + i * DT
        msgs.append(("/cam0/camera_info", INFO, s, camera_info(s, "cam0_optical")))
    good = [0, 3]
    msgs += [
        ("/cam0/image_raw", IMAGE, T0 + 1000, raw_image(T0, "cam0_optical", pixels(0))),
        (
            "/cam0/image_raw",
            IMAGE,
            T0 + DT + 1000,
            raw_image(T0 + DT, "cam0_optical", pixels(1), encoding="bayer_rggb8"),
        ),
        (  # data shorter than step * height
            "/cam0/image_raw",
            IMAGE,
            T0 + 2 * DT + 1000,
            raw_image(T0 + 2 * DT, "cam0_optical", pixels(2), data=pixels(2).reshape(-1)[:100]),
        ),
        ("/cam0/image_raw", IMAGE, T0 + 3 * DT + 1000, raw_image(T0 + 3 * DT, "cam0_optical", pixels(3))),
        # a stamp no CameraInfo has (the next CameraInfo shows its own will not come)
        ("/cam0/image_raw", IMAGE, T0 + 3 * DT + 2000, raw_image(T0 + 3 * DT + 5, "cam0_optical", pixels(4))),
        # CameraInfo of a different size
        ("/cam1/camera_info", INFO, T0, camera_info(T0, "cam1_optical", w=32, h=24)),
        ("/cam1/image/compressed", COMPRESSED, T0 + 2, compressed_image(T0, "cam1_optical", pixels(0))),
        ("/cam1/camera_info", INFO, T0 + DT, camera_info(T0 + DT, "cam1_optical")),
        (
            "/cam1/image/compressed",
            COMPRESSED,
            T0 + DT + 2,
            compressed_image(T0 + DT, "cam1_optical", None, b"\x89PNGxx"),
        ),
    ]
    bag = write_bag(tmp_path / "in", "mcap", msgs)
    summary = tmp_path / "s.json"
    assert run_tool(bag, tmp_path / "out", "--summary-json", summary) == 0
    report = json.loads(summary.read_text())
    assert report["frames_in"] == 7 and report["frames_out"] == 2
    assert report["skipped"] == {"bad_camera_info": 1, "bad_compressed": 1, "bad_image": 2, "no_camera_info": 1}
    out, conns, _ = read_bag(tmp_path / "out")
    check_frame_outputs(out, conns, "/cam0", good, reference, Settings(points=False), tol=1e-5)
    err = capsys.readouterr().err
    assert "unsupported encoding 'bayer_rggb8'" in err and "Traceback" not in err
    assert "CameraInfo is for 32x24 images but the image is 64x48" in err


def test_start_end_every(tmp_path, engines):
    msgs = []
    for i in range(10):
        s = T0 + i * DT
        msgs.append(("/cam0/camera_info", INFO, s - 50_000_000, camera_info(s, "cam0_optical")))  # 50 ms early
        msgs.append(("/cam0/image_raw", IMAGE, s, raw_image(s, "cam0_optical", pixels(i))))
    bag = write_bag(tmp_path / "in", "mcap", msgs)
    summary = tmp_path / "s.json"
    # the bag starts with the first CameraInfo (T0 - 50 ms): images at 0.3 .. 0.7 s are 0.35 .. 0.75 s in
    status = run_tool(
        bag, tmp_path / "out", "--start", "0.33", "--end", "0.8", "--every", "2", "--summary-json", summary
    )
    assert status == 0
    out, _, _ = read_bag(tmp_path / "out")
    assert [t for t, _ in out["/cam0/depth/image"]] == [T0 + 3 * DT, T0 + 5 * DT, T0 + 7 * DT]
    report = json.loads(summary.read_text())
    assert report["frames_in"] == 5 and report["frames_out"] == 3 and report["skipped"] == {"every": 2}


def test_existing_output_needs_force(tmp_path, engines, capsys):
    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(1))
    target = tmp_path / "out"
    assert run_tool(bag, target) == 0
    first = (target / "metadata.yaml").read_text()
    assert run_tool(bag, target, "--camera", "/cam0") == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert (target / "metadata.yaml").read_text() == first
    assert run_tool(bag, target, "--camera", "/cam0", "--force") == 0
    out, _, _ = read_bag(target)
    assert "/cam0/depth/image" in out and "/cam1/depth/image" not in out
    not_a_bag = tmp_path / "notes"
    not_a_bag.mkdir()
    (not_a_bag / "keep.txt").write_text("mine")
    assert run_tool(bag, not_a_bag, "--force") == 2
    assert (not_a_bag / "keep.txt").read_text() == "mine"
    assert run_tool(bag, bag, "--force") == 2  # never over its own input
    assert "overlap" in capsys.readouterr().err and (bag / "metadata.yaml").is_file()


def test_interrupt_leaves_no_output(tmp_path, engines, monkeypatch, capsys):
    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(4))
    real_write = BagOutput.write
    calls = []

    def write(self, topic, msg, log_time):
        calls.append(topic)
        if len(calls) > 5:  # inside the second frame's messages
            raise KeyboardInterrupt
        real_write(self, topic, msg, log_time)

    monkeypatch.setattr(BagOutput, "write", write)
    summary = tmp_path / "s.json"
    assert run_tool(bag, tmp_path / "out", "--batch", "1", "--summary-json", summary) == 130
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "s.json"]  # no partial bag beside it either
    err = capsys.readouterr().err
    assert "interrupted; nothing written to" in err and "Traceback" not in err
    report = json.loads(summary.read_text())
    assert report["exit_status"] == 130 and report["frames_out"] == 1


def test_truncated_and_foreign_input(tmp_path, engines, capsys):
    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(4))
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    summary = tmp_path / "s.json"
    assert run_tool(bag, tmp_path / "out", "--summary-json", summary) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any("corrupt or truncated bag" in line for line in lines), lines
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert json.loads(summary.read_text())["exit_status"] == 2

    db = write_bag(tmp_path / "in_db", "sqlite3", two_camera_messages(2))
    (db3,) = db.glob("*.db3")
    db3.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    assert run_tool(db, tmp_path / "out") == 2
    assert "corrupt or truncated bag" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_tool(empty, tmp_path / "out") == 2
    assert "not a rosbag2 bag" in capsys.readouterr().err
    assert run_tool(tmp_path / "missing", tmp_path / "out") == 2
    assert "no such bag" in capsys.readouterr().err


def test_missing_camera_lists_topics(tmp_path, engines, capsys):
    bag = write_bag(tmp_path / "in", "mcap", two_camera_messages(1))
    assert run_tool(bag, tmp_path / "out", "--camera", "/front", "--summary-json", "-") == 2
    captured = capsys.readouterr()
    assert "no camera in namespace /front" in captured.err
    assert "/cam0/image_raw (sensor_msgs/msg/Image, 1 messages)" in captured.err
    report = json.loads(captured.out)
    assert report["exit_status"] == 2 and report["frames_in"] == 0
    assert engines == []  # the model is not loaded for a bag without the camera


def test_command_line(tmp_path, tiny_checkpoint):
    """The real command, on a checkpoint file: a processed bag, then a missing checkpoint (exit 2, one line)."""
    bag = write_bag(tmp_path / "in", "sqlite3", two_camera_messages(1))
    cmd = [sys.executable, "-m", "zoedepth_ros.tools.bag", str(bag)]
    done = subprocess.run(
        [
            *cmd,
            str(tmp_path / "out"),
            "--checkpoint",
            str(tiny_checkpoint("nk")),
            "--device",
            "cpu",
            "--camera",
            "cam0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "1 frames in, 1 out, 0 skipped" in done.stderr
    out, _, _ = read_bag(tmp_path / "out")
    assert len(out["/cam0/depth/image"]) == 1 and "/cam1/depth/image" not in out
    missing = subprocess.run(
        [*cmd, str(tmp_path / "out2"), "--checkpoint", str(tmp_path / "nope.pt"), "--no-download"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    errors = [line for line in missing.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "nope.pt" in errors[0] and "Traceback" not in missing.stderr
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------------------------------- tests: pieces


def test_discover_naming_rules():
    bag = {
        "/a/image_raw": (IMAGE, 3),
        "/a/image_raw/compressed": (COMPRESSED, 3),  # the raw topic of the same camera wins
        "/a/camera_info": (INFO, 3),
        "/b/image/compressed": (COMPRESSED, 3),
        "/b/camera_info": (INFO, 3),
        "/c/image": (IMAGE, 3),  # no /c/camera_info: not a camera
        "/a/depth/image": (IMAGE, 3),  # a depth map (e.g. our own output), not a camera
        "/a/depth/camera_info": (INFO, 3),
        "/image": (IMAGE, 1),
        "/camera_info": (INFO, 1),
    }
    cams = discover(bag)
    assert [(c.namespace, c.image_topic, c.info_topic, c.compressed) for c in cams] == [
        ("/a", "/a/image_raw", "/a/camera_info", False),
        ("/b", "/b/image/compressed", "/b/camera_info", True),
        ("", "/image", "/camera_info", False),
    ]
    assert cams[1].topic("depth/image") == "/b/depth/image" and cams[2].topic("routing") == "/routing"
    assert [c.image_topic for c in discover(bag, ["b/", "/a"])] == ["/b/image/compressed", "/a/image_raw"]
    with pytest.raises(BagError, match=r"no camera in namespace /c.*the bag holds /a/camera_info"):
        discover(bag, ["/c"])
    with pytest.raises(BagError, match=r"no camera found.*/c/image"):
        discover({"/c/image": (IMAGE, 3)})


def test_exact_pairer_either_order_and_bounds():
    p = ExactPairer[str]()
    assert p.add_image(10, "img10") == []  # waits for its CameraInfo
    (r,) = p.add_info(10, "info10")
    assert isinstance(r, Paired) and (r.image, r.info, r.exact) == ("img10", "info10", True)
    (r,) = p.add_image(10, "img10b")  # CameraInfo logged before the image
    assert isinstance(r, Paired) and r.info == "info10"
    assert p.add_image(30, "img30") == []
    (r,) = p.add_info(40, "info40")  # a newer CameraInfo: img30's own will not come
    assert isinstance(r, Unpaired) and r.reason == "no_camera_info" and "no CameraInfo with its stamp" in r.message
    (r,) = p.add_image(35, "img35")  # older than the newest CameraInfo and not in the history
    assert isinstance(r, Unpaired)
    assert p.add_image(50, "img50") == []
    (r,) = p.flush()
    assert isinstance(r, Unpaired) and r.image == "img50"

    near = ExactPairer[str](tolerance=0.01)
    near.add_info(1_000_000_000, "info")
    assert near.add_image(1_005_000_000, "img") == []
    (r,) = near.flush()
    assert isinstance(r, Paired) and not r.exact and (near.exact, near.nearby) == (0, 1)

    bounded = ExactPairer[int](max_pending=3)
    out = [r for i in range(5) for r in bounded.add_image(100 + i, i)]
    assert [r.image for r in out] == [0, 1] and bounded.waiting == 3  # the oldest are given up, not kept


def _node_messages():
    """The node's message builders and rclpy's serializer, or a skip where ROS is not installed."""
    try:
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import CameraInfo
        from std_msgs.msg import Header

        from zoedepth_ros.ros import messages

        messages.routing_type()
    except ImportError as e:
        pytest.skip(f"rclpy / sensor_msgs / the built DepthRouting are not installed ({e})")
    return messages, serialize_message, CameraInfo, Header


def same_fields(a, b, path: str = "") -> None:
    """Recursive field-by-field equality of two rosbags messages (arrays compared bit for bit)."""
    if hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            same_fields(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_fields(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_messages_equal_the_nodes(reference):
    """The bag's messages hold exactly what the node's (messages.py, rclpy) hold: the node's bytes, read back with
    rosbags, equal ours field for field (the bytes themselves differ only in CDR padding, which rclpy leaves
    uninitialised)."""
    from zoedepth_ros.offline.bag_writer import Messages, output_typestore

    node, serialize, RosCameraInfo, RosHeader = _node_messages()
    store = output_typestore()
    bag = Messages(store)
    settings = Settings(points=True, color=True, decimation=3, colormap=True, output_scale=0.5)
    frame = reference.run(pixels(7), "rgb8", INTR, settings)
    stamp = T0 + 123
    ours_header = header(stamp, "cam_optical")
    ros_header = RosHeader(frame_id="cam_optical")
    ros_header.stamp.sec, ros_header.stamp.nanosec = stamp // 10**9, stamp % 10**9
    template = camera_info(stamp, "cam_optical")
    ros_template = RosCameraInfo(
        distortion_model=template.distortion_model,
        d=list(template.d),
        k=list(template.k),
        r=list(template.r),
        p=list(template.p),
        width=W,
        height=H,
    )
    pairs = [
        (bag.depth_image(frame, ours_header), node.depth_image(frame, ros_header)),
        (bag.depth_camera_info(frame, ours_header, template), node.depth_camera_info(frame, ros_header, ros_template)),
        (bag.point_cloud(frame, ours_header, True), node.point_cloud(frame, ros_header, True)),
        (bag.colormap_image(frame, ours_header), node.colormap_image(frame, ros_header)),
        (bag.routing(frame, ours_header), node.routing(frame, ros_header)),
    ]
    cloud, colormap = pairs[2][0], pairs[3][0]  # both sides share message_fields: its values, derived by hand
    assert (cloud.point_step, cloud.row_step, cloud.is_bigendian, cloud.is_dense) == (32, 32 * cloud.width, 0, 0)
    assert (colormap.encoding, colormap.step, colormap.width) == ("rgb8", 3 * frame.width, frame.width)
    for ours, theirs in pairs:
        msgtype = ours.__msgtype__
        same_fields(ours, store.deserialize_cdr(serialize(theirs), msgtype), msgtype)
        same_fields(ours, store.deserialize_cdr(store.serialize_cdr(ours, msgtype), msgtype), msgtype)


def test_bench_bag_section(tmp_path):
    """zoedepth-ros-bench --sections bag with a tiny random model: the tool and model-only figures of one run."""
    from zoedepth_ros.tools import bench

    out = tmp_path / "bench.json"
    argv = ["--random", "tiny-nk", "--device", "cpu", "--sections", "bag", "--sizes", "64x48"]
    assert bench.main([*argv, "--bag-frames", "3", "--bag-batch", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    bag = report["bag"]
    assert (bag["frames"], bag["frames_out"], bag["batch"], bag["width"], bag["height"]) == (3, 3, 2, 64, 48)
    assert bag["rung"] == "fp32 eager" and bag["model_only_s"] > 0 and bag["tool_s"] > 0
    assert bag["tool_fps"] == pytest.approx(3 / bag["tool_s"])
    assert bag["overhead_share"] == pytest.approx(bag["tool_s"] / bag["model_only_s"] - 1)
    (target,) = [t for t in report["targets"] if t["target"].startswith("zoedepth-ros-bag overhead")]
    assert (
        target["measured"] == pytest.approx(100 * bag["overhead_share"], abs=0.01) and target["passed"] is None
    )  # tiny: n/a


def test_progress_lines_and_summary_json(tmp_path, capsys):
    """offline.Progress without a terminal: plain lines with the count, rate and ETA; tqdm's bar on one."""
    from zoedepth_ros.offline.common import Progress, Summary

    stream = io.StringIO()
    with Progress(4, "tool", stream=stream, interval=0.0) as progress:
        for _ in range(4):
            progress.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("tool: 1/4 frames, ") and ", ETA " in lines[0]
    assert lines[-1].startswith("tool: 4/4 frames, ") and "ETA" not in lines[-1]  # the last one, not twice
    bar = io.StringIO()
    with Progress(3, "tool", stream=bar, tty=True) as progress:
        progress.update(3)
    assert "3/3" in bar.getvalue() and "frame/s" in bar.getvalue()  # tqdm's bar, with its rate

    summary = Summary("tool", "in", "out", cameras=["/a/image"], frames_in=5, frames_out=3)
    summary.skip("bad_image")
    summary.skip("every", 1)
    summary.finish(0)
    summary.write_json(tmp_path / "s.json")
    summary.write_json("-")
    from_file, from_stdout = json.loads((tmp_path / "s.json").read_text()), json.loads(capsys.readouterr().out)
    assert from_file == from_stdout
    assert from_file["skipped"] == {"bad_image": 1, "every": 1} and from_file["frames_out"] == 3
    assert from_file["frames_per_second"] == pytest.approx(3 / summary.seconds, rel=1e-2)
    summary.print()
    assert "5 frames in, 3 out, 2 skipped (bad_image 1, every 1)" in capsys.readouterr().err


def test_run_guarded_turns_each_ending_into_its_status_and_one_line(tmp_path, capsys):
    """The offline tools' common ending: exit status, the error kept in the summary, one stderr line each."""
    from zoedepth_ros.offline.common import Summary, fail, run_guarded

    def raising(exc: BaseException):
        def body():
            raise exc

        return body

    def guarded(body):
        return run_guarded("tool", body, interrupted=lambda: "stopped", bad_input=(BagError,), failures=(OSError,))

    assert guarded(lambda: None) == (0, "")
    assert guarded(lambda: 3) == (3, "")
    assert capsys.readouterr().err == ""
    assert guarded(lambda: fail("tool", "no such file\nsecond line")) == (2, "no such file")
    assert guarded(raising(BagError("corrupt bag\nmore"))) == (2, "corrupt bag")
    assert guarded(raising(OSError("disk full"))) == (1, "OSError: disk full")
    assert guarded(raising(KeyboardInterrupt())) == (130, "interrupted")
    assert capsys.readouterr().err.splitlines() == [
        "tool: error: no such file",
        "tool: error: corrupt bag",
        "tool: error: OSError: disk full",
        "tool: stopped",
    ]
    with pytest.raises(ValueError):  # neither bad input nor a listed failure: not hidden
        guarded(raising(ValueError("bug")))

    summary = Summary("tool", "in", "out", frames_in=2, frames_out=1)
    assert summary.report(0, "", str(tmp_path / "s.json"), show=True) == 0
    assert json.loads((tmp_path / "s.json").read_text())["exit_status"] == 0
    assert "2 frames in, 1 out" in capsys.readouterr().err
    unwritable = str(tmp_path / "missing" / "s.json")
    assert summary.report(0, "", unwritable, show=False) == 1  # the JSON was asked for: its loss is a failure
    assert summary.report(2, "bad", unwritable, show=False) == 2  # ... but not worse than the run's own status
    err = capsys.readouterr().err.splitlines()
    assert err == [f"tool: error: cannot write --summary-json {unwritable}: No such file or directory"] * 2


@pytest.mark.parametrize(
    ("option", "text", "expected"),
    [
        ("--every", "0", "an integer >= 1"),
        ("--every", "1.5", "an integer >= 1"),
        ("--batch", "257", "an integer 1..256"),
        ("--start", "-1", "seconds >= 0"),
        ("--end", "nan", "seconds >= 0"),
        ("--camera-info-tolerance", "soon", "seconds >= 0"),
    ],
)
def test_numeric_options_refuse_bad_values_in_one_line(option, text, expected, capsys):
    with pytest.raises(SystemExit) as info:
        bag_tool.build_parser().parse_args(["in", "out", option, text])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"argument {option}: expected {expected}, got {text!r}")
    args = bag_tool.build_parser().parse_args(["in", "out", "--every", "3", "--batch", "256", "--start", "0"])
    assert (args.every, args.batch, args.start) == (3, 256, 0.0)
