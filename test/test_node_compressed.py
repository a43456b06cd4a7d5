"""The node with `input_transport: compressed`: PNG/JPEG frames on image/compressed, corrupt ones survived."""

from __future__ import annotations

import array
import io

import numpy as np
import pytest
import test_node_dds
from PIL import Image as PILImage
from ros_graph import isolated_ros_env, start_node, stop_node
from test_node_dds import DOMAIN_ID, Graph, diagnostics, expected_depth, info_msg, rgb_image

from zoedepth_ros.model import load

try:  # guarded, not a module-level skip: with launch_testing's pytest plugin that would skip the whole run
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CompressedImage
except ImportError:
    CompressedImage = None

pytestmark = test_node_dds.pytestmark  # skipped, with the reason, where test_node_dds is

DOMAIN = DOMAIN_ID + 1  # its own domain: never sees the other module's node


def compressed(pixels: np.ndarray, stamp_ns: int, fmt: str = "png") -> CompressedImage:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format=fmt.upper())
    msg = CompressedImage(format=f"rgb8; {fmt} compressed rgb8", data=array.array("B", buf.getvalue()))
    msg.header.frame_id = "cam_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory, monkeypatch_module):
    env = isolated_ros_env(DOMAIN)
    for k, v in env.items():
        monkeypatch_module.setenv(k, v)
    monkeypatch_module.setattr("test_node_dds.DOMAIN_ID", DOMAIN)
    log = tmp_path_factory.mktemp("node_c") / "node.log"
    proc = start_node({"checkpoint": tiny_checkpoint("nk"), "device": "cpu", "input_transport": "compressed"}, env, log)
    graph = Graph()
    pub = graph.node.create_publisher(
        CompressedImage, "image/compressed", QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    )
    try:
        graph.wait_for_node(proc, log, publisher=pub)
        yield graph, pub, proc, log
    finally:
        graph.close()
        stop_node(proc)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_png_frames_give_the_models_depth_and_corrupt_ones_are_dropped(setup, tiny_checkpoint):
    graph, pub, proc, log = setup
    pixels = rgb_image(7)
    stamp = 1_700_000_010_000_000_000

    def send_until_depth(stamp_ns: int, fmt: str) -> None:
        def arrived() -> bool:
            graph.pub_info.publish(info_msg(stamp_ns))
            pub.publish(compressed(pixels, stamp_ns, fmt))
            graph.spin(1.0)
            return graph.depth_for(stamp_ns) is not None

        graph.wait(arrived, f"depth for a {fmt} frame", 60)

    send_until_depth(stamp, "png")
    depth = np.frombuffer(graph.depth_for(stamp).data, dtype="<f4").reshape(pixels.shape[:2])
    np.testing.assert_allclose(depth, expected_depth(load(tiny_checkpoint("nk")), pixels), rtol=1e-5, atol=1e-6)

    corrupt = compressed(pixels, stamp + 1, fmt="jpeg")
    corrupt.data = array.array("B", bytes(corrupt.data)[:40])

    def counted() -> bool:
        graph.pub_info.publish(info_msg(stamp + 1))
        pub.publish(corrupt)
        graph.spin(0.5)
        return int(diagnostics(graph).get("dropped (bad_compressed)", 0)) > 0

    graph.wait(counted, "the corrupt JPEG to be counted", 30)
    assert proc.poll() is None
    send_until_depth(stamp + 2, "jpeg")
    assert "dropped frame" in log.read_text()
