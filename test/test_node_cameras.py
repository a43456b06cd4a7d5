"""One node, several cameras, one model, over real DDS (``cameras``): a 640x480 rgb8 camera, a 1280x720 bgr8 one, a
compressed (JPEG) 640x480 one and a camera that only ever sends bad input.

Each camera's depth and routing must equal what the same model gives for that frame alone (``engine.run`` in this
process, on the frame as the node decodes it), whether or not the frame shared a forward; two cameras of one size
must really share forwards; a bad or silent camera must not hold the others back; each camera's diagnostics
count its own frames.
"""

from __future__ import annotations

import array
import io
import time

import numpy as np
import pytest
import test_node_dds
from PIL import Image as PILImage
from ros_graph import start_node, stop_node, use_domain, wait_until
from test_node_dds import DOMAIN_ID

from zoedepth_ros.engine import open_engine
from zoedepth_ros.engine.encodings import decode_compressed
from zoedepth_ros.engine.intrinsics import Intrinsics
from zoedepth_ros.engine.pipeline import Settings

try:  # guarded, not a module-level skip: with launch_testing's pytest plugin that would skip the whole run
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from zoedepth_ros.msg import DepthRouting
except ImportError:
    rclpy = None

pytestmark = [*test_node_dds.pytestmark, pytest.mark.timeout(300)]

DOMAIN = DOMAIN_ID + 10
NODE = "zoedepth"
# camera -> (width, height, encoding on the wire); "jpg" is compressed, "bad" sends only broken input
CAMERAS = {"wide": (640, 480, "rgb8"), "hd": (1280, 720, "bgr8"), "jpg": (640, 480, "jpeg"), "bad": (64, 48, "rgb8")}
ENTRIES = ["wide", "hd", "jpg:compressed", "bad"]
TOLERANCE_M = 1e-5


def scene(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth, structured uint8 (H, W, 3) image (noise would make every model output flat)."""
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    img = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys + 0.7 * seed)], axis=-1)
    return np.ascontiguousarray((255 * np.clip(img, 0, 1)).astype(np.uint8))


def camera_info(width: int, height: int, stamp_ns: int, frame: str) -> CameraInfo:
    f = 0.8 * width
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    _stamp(msg, stamp_ns, frame)
    return msg


def _stamp(msg, stamp_ns: int, frame: str):
    msg.header.frame_id = frame
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class Frame:
    """What the test sent for one stamp on one camera: the message and the pixels the node decodes from it."""

    def __init__(self, camera: str, stamp_ns: int, seed: int) -> None:
        width, height, kind = CAMERAS[camera]
        self.camera, self.stamp = camera, stamp_ns
        self.info = camera_info(width, height, stamp_ns, f"{camera}_optical")
        pixels = scene(width, height, seed)
        if kind == "jpeg":
            buf = io.BytesIO()
            PILImage.fromarray(pixels).save(buf, format="JPEG", quality=90)
            self.msg = _stamp(
                CompressedImage(format="rgb8; jpeg compressed rgb8", data=array.array("B", buf.getvalue())),
                stamp_ns,
                f"{camera}_optical",
            )
            self.raw, self.encoding = decode_compressed("jpeg", buf.getvalue()), "rgb8"
        else:
            self.raw, self.encoding = (pixels[..., ::-1].copy() if kind == "bgr8" else pixels), kind
            self.msg = _stamp(
                Image(
                    height=height,
                    width=width,
                    encoding=kind,
                    is_bigendian=0,
                    step=3 * width,
                    data=array.array("B", self.raw.tobytes()),
                ),
                stamp_ns,
                f"{camera}_optical",
            )


class Rig:
    """The test's cameras and viewers: per camera an image (or compressed) and camera_info publisher, and
    subscriptions to its depth image, depth camera info and routing; plus /diagnostics."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("cameras_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        self.pub_image, self.pub_info = {}, {}
        self.received: dict[str, dict[str, list]] = {}
        for cam, (_, _, kind) in CAMERAS.items():
            compressed = kind == "jpeg"
            topic = f"{cam}/image/compressed" if compressed else f"{cam}/image"
            self.pub_image[cam] = self.node.create_publisher(CompressedImage if compressed else Image, topic, reliable)
            self.pub_info[cam] = self.node.create_publisher(CameraInfo, f"{cam}/camera_info", reliable)
            self.received[cam] = {"depth": [], "info": [], "routing": []}
            for key, msg_type, out in (
                ("depth", Image, "depth/image"),
                ("info", CameraInfo, "depth/camera_info"),
                ("routing", DepthRouting, "routing"),
            ):
                self.node.create_subscription(
                    msg_type, f"{cam}/{out}", lambda m, c=cam, k=key: self.received[c][k].append(m), reliable
                )
        self.diag: DiagnosticArray | None = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg) -> None:
        if any(s.name.startswith(f"{NODE}: ") for s in msg.status):
            self.diag = msg

    def spin(self, seconds: float) -> None:
        """Handle whatever arrives for ``seconds`` (spin_once alone returns after one callback)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=left)

    def wait(self, predicate, what: str, timeout: float = 60.0) -> None:
        wait_until(predicate, timeout, self.spin, what)

    def send(self, frame: Frame) -> None:
        self.pub_info[frame.camera].publish(frame.info)
        self.pub_image[frame.camera].publish(frame.msg)

    def output(self, camera: str, topic: str, stamp_ns: int):
        return next((m for m in self.received[camera][topic] if stamp_of(m) == stamp_ns), None)

    def request(self, *frames: Frame, timeout: float = 60.0) -> None:
        """Send the frames (again each second: best-effort input may lose a copy) until each one's depth and
        routing have come back."""

        def done(f: Frame) -> bool:
            return all(self.output(f.camera, t, f.stamp) is not None for t in ("depth", "routing"))

        def arrived() -> bool:
            missing = [f for f in frames if not done(f)]
            for f in missing:
                self.send(f)
            deadline = time.monotonic() + 1.0
            while missing and time.monotonic() < deadline:
                self.executor.spin_once(timeout_sec=0.05)
                missing = [f for f in missing if not done(f)]
            return not missing

        self.wait(arrived, f"depth and routing for {[(f.camera, f.stamp) for f in frames]}", timeout)

    def status(self, name: str) -> dict[str, str]:
        if self.diag is None:
            return {}
        found = next((s for s in self.diag.status if s.name == name), None)
        return {kv.key: kv.value for kv in found.values} if found is not None else {}

    def camera_status(self, camera: str) -> dict[str, str]:
        return self.status(f"{NODE}: ZoeDepth camera {camera}")

    def engine_status(self) -> dict[str, str]:
        return self.status(f"{NODE}: ZoeDepth engine")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def rig(tiny_checkpoint, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    env = use_domain(mp, DOMAIN)
    log = tmp_path_factory.mktemp("cameras") / "node.log"
    proc = start_node(
        {"checkpoint": tiny_checkpoint("nk"), "device": "cpu", "cameras": ENTRIES, "max_batch": 4}, env, log
    )
    r = Rig()
    try:
        r.wait(
            lambda: all(p.get_subscription_count() > 0 for p in r.pub_image.values()) or proc.poll() is not None,
            "the node's subscriptions on every camera",
            90,
        )
        assert proc.poll() is None, log.read_text()
        yield r, proc, log
    finally:
        r.close()
        stop_node(proc)
        mp.undo()


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """The same checkpoint alone in this process: a frame's outputs when it is the only one in its forward."""
    engine = open_engine(str(tiny_checkpoint("nk")), "cpu", "fp32", "eager", download=False)

    def run(frame: Frame):
        intrinsics = Intrinsics.from_camera_info(frame.info)
        return engine.run(frame.raw, frame.encoding, intrinsics, Settings(points=False))

    return run


def assert_matches_reference(rig: Rig, frame: Frame, reference) -> None:
    expected = reference(frame)
    depth_msg = rig.output(frame.camera, "depth", frame.stamp)
    width, height, _ = CAMERAS[frame.camera]
    assert (depth_msg.width, depth_msg.height, depth_msg.encoding) == (width, height, "32FC1")
    assert depth_msg.header.frame_id == f"{frame.camera}_optical"
    depth = np.frombuffer(depth_msg.data, dtype="<f4").reshape(height, width)
    want = np.frombuffer(expected.depth, dtype=np.float32).reshape(height, width)
    assert np.isfinite(want).any()
    np.testing.assert_allclose(depth, want, rtol=0, atol=TOLERANCE_M, equal_nan=True, err_msg=frame.camera)
    routing = rig.output(frame.camera, "routing", frame.stamp)
    assert (routing.domain, routing.head, routing.forced) == (expected.domain, expected.head, expected.forced)
    np.testing.assert_allclose(routing.logits, expected.logits, rtol=1e-5, atol=1e-5)
    assert routing.probability == pytest.approx(expected.probability, abs=1e-5)


def batch_sizes_seen(rig: Rig) -> dict[int, int]:
    """The engine's "batch sizes seen", e.g. "1 (5), 2 (3)" -> {1: 5, 2: 3}."""
    text = rig.engine_status().get("batch sizes seen", "")
    sizes = {}
    for part in text.split(","):
        if "(" in part:
            size, count = part.strip().rstrip(")").split(" (")
            sizes[int(size)] = int(count)
    return sizes


def test_every_camera_gets_the_single_camera_outputs_of_its_own_frames(rig, reference):
    r, proc, _ = rig
    frames = [Frame(cam, 1_700_100_000_000_000_000 + i, seed=i) for i, cam in enumerate(("wide", "hd", "jpg"))]
    r.request(*frames)
    for frame in frames:
        assert_matches_reference(r, frame, reference)
        info = r.output(frame.camera, "info", frame.stamp)
        assert info is not None and info.header == r.output(frame.camera, "depth", frame.stamp).header
        assert (info.width, info.height) == CAMERAS[frame.camera][:2]
    assert proc.poll() is None


def test_two_cameras_of_one_size_share_forwards_and_keep_their_own_outputs(rig, reference):
    """While the 1280x720 frame keeps the model busy, the 640x480 rgb8 and JPEG frames wait together: one batch."""
    r, _, _ = rig
    r.wait(lambda: bool(r.engine_status()), "the engine's diagnostics")
    pairs_before = batch_sizes_seen(r).get(2, 0)
    batched_before = {c: int(r.camera_status(c)["frames batched with other cameras"]) for c in ("wide", "jpg")}
    sent: list[Frame] = []
    base = 1_700_100_100_000_000_000

    def batched() -> bool:
        i = len(sent)
        group = [Frame("hd", base + i, seed=i), Frame("wide", base + i + 1, i + 1), Frame("jpg", base + i + 2, i + 2)]
        sent.extend(group)
        for f in group:
            r.send(f)
        r.spin(0.5)
        return batch_sizes_seen(r).get(2, 0) > pairs_before

    r.wait(batched, "a batch of 2 in the engine's diagnostics", 90)
    r.wait(
        lambda: all(
            int(r.camera_status(c)["frames batched with other cameras"]) > batched_before[c] for c in batched_before
        ),
        "the pair counted by both cameras",
    )
    assert int(r.camera_status("hd")["frames batched with other cameras"]) == 0  # no other camera is 1280x720
    r.spin(2.0)
    compared = set()
    for frame in sent:  # every frame that came back, the batched pair among them, is its own single-camera result
        if r.output(frame.camera, "depth", frame.stamp) is not None:
            r.wait(lambda f=frame: r.output(f.camera, "routing", f.stamp) is not None, "its routing", 10)
            assert_matches_reference(r, frame, reference)
            compared.add(frame.camera)
    assert {"wide", "jpg"} <= compared
    assert "2 (" in r.engine_status()["batch sizes seen"]


def test_a_bad_or_silent_camera_does_not_hold_the_others_back(rig, reference):
    r, proc, log = rig
    r.wait(lambda: bool(r.camera_status("bad")), "the bad camera's diagnostics")
    width, height, _ = CAMERAS["bad"]
    good = scene(width, height, 1)
    stamp = 1_700_100_200_000_000_000
    wrong_encoding = Image(
        height=height, width=width, encoding="bayer_rggb8", step=3 * width, data=array.array("B", good.tobytes())
    )
    broken = [
        ("bad_image", _stamp(wrong_encoding, stamp, "bad_optical"), camera_info(width, height, stamp, "bad_optical")),
        (
            "bad_camera_info",
            Frame("bad", stamp + 1, 1).msg,
            camera_info(2 * width, height, stamp + 1, "bad_optical"),  # CameraInfo for another image size
        ),
    ]
    r.spin(3.0)  # the earlier tests' last hd frame may still be in the model
    r.wait(lambda: int(r.camera_status("hd")["frames processed"]) == len(r.received["hd"]["routing"]), "hd settled")
    before_hd = int(r.camera_status("hd")["frames processed"])
    for n, (reason, image, info) in enumerate(broken):
        key = f"dropped ({reason})"
        start = int(r.camera_status("bad").get(key, 0))

        def counted(image=image, info=info, key=key, start=start) -> bool:
            r.pub_info["bad"].publish(info)
            r.pub_image["bad"].publish(image)
            r.spin(0.3)
            return int(r.camera_status("bad").get(key, 0)) > start

        r.wait(counted, f"{key} on the bad camera", 30)
        # meanwhile the other cameras are served (hd has gone silent: it sends nothing in this test)
        frames = [Frame("wide", stamp + 10 + 2 * n, 5 + n), Frame("jpg", stamp + 11 + 2 * n, 6 + n)]
        r.request(*frames, timeout=30)
        for frame in frames:
            assert_matches_reference(r, frame, reference)
    # images whose CameraInfo never comes wait camera_info_wait, then are dropped for the bad camera alone
    lone = Frame("bad", stamp + 5_000_000_000, 2)  # 5 s from any CameraInfo it had: beyond the tolerance
    start = int(r.camera_status("bad").get("dropped (camera_info_late)", 0))

    def unpaired() -> bool:
        r.pub_image["bad"].publish(lone.msg)
        r.spin(0.5)
        return int(r.camera_status("bad").get("dropped (camera_info_late)", 0)) > start

    r.wait(unpaired, "dropped (camera_info_late) on the bad camera", 30)
    r.request(Frame("wide", stamp + 200, 9), timeout=30)
    for cam in ("wide", "hd", "jpg"):
        status = r.camera_status(cam)
        assert not any(k.startswith(("dropped (bad", "dropped (camera_info")) for k in status), (cam, status)
    assert int(r.camera_status("hd")["frames processed"]) == before_hd  # silent, and nothing else moved for it
    assert int(r.camera_status("bad")["frames processed"]) == 0
    assert proc.poll() is None and "Traceback" not in log.read_text()


def test_each_camera_has_its_own_diagnostics(rig):
    r, _, _ = rig
    r.spin(3.0)  # the earlier tests' last frames may still be in the model

    def counts() -> dict[str, tuple[int, int]]:  # camera -> (frames processed, routing messages received)
        return {c: (int(r.camera_status(c)["frames processed"]), len(r.received[c]["routing"])) for c in CAMERAS}

    before = counts()
    stamp = 1_700_100_300_000_000_000
    sent = {"wide": Frame("wide", stamp, 3), "hd": Frame("hd", stamp + 1, 4), "jpg": Frame("jpg", stamp + 2, 5)}
    r.request(*sent.values())

    def settled() -> bool:  # every frame published since is counted by its own camera, and only there
        now = counts()
        return all(now[c][0] - before[c][0] == now[c][1] - before[c][1] >= (c in sent) for c in CAMERAS)

    r.wait(settled, "frames processed grew as the routing messages received, per camera", 30)
    names = [s.name for s in r.diag.status]
    assert names == [f"{NODE}: ZoeDepth camera {c}" for c in CAMERAS] + [f"{NODE}: ZoeDepth engine"]
    wide, jpg = r.camera_status("wide"), r.camera_status("jpg")
    assert (wide["image topic"], wide["camera_info topic"]) == ("/wide/image", "/wide/camera_info")
    assert jpg["image topic"] == "/jpg/image/compressed"
    assert int(wide["images received"]) >= int(wide["frames processed"]) > 0
    assert int(wide["pairing exact"]) >= int(wide["frames processed"])
    assert float(wide["latency p50 (ms)"]) > 0 and wide["domain"] in ("indoor", "outdoor")
    engine = r.engine_status()
    assert engine["state"] == "active" and engine["cameras"] == "wide, hd, jpg, bad"
    assert (engine["max batch"], engine["precision"], engine["device"]) == ("4", "fp32", "cpu")
    levels = {s.name: s.level for s in r.diag.status}
    assert levels[f"{NODE}: ZoeDepth camera bad"] == b"\x01"  # WARN: it dropped frames
