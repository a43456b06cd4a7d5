"""Frames the middleware loses are counted, never silently gone; frames with no valid depth are counted."""

from __future__ import annotations

import pytest

try:
    import rclpy
    from test_node_dds import DOMAIN_ID, Graph, diagnostics, rgb_image
except ImportError:  # a venv without ROS: the tests below skip
    rclpy = None

from zoedepth_ros.benchmarks.isolation import fastdds_profile, ros_args, start_python_module
from zoedepth_ros.ros.fastdds import PROFILE_NAME

pytestmark = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the node tests")

DOMAIN = (DOMAIN_ID + 8) if rclpy is not None else 0
SMALL_SEGMENT = 2 * 1024 * 1024  # 2 MB: a 1280x960 rgb8 image (3.7 MB) does not fit


@pytest.fixture
def ros(monkeypatch):
    from ros_graph import use_domain

    env = use_domain(monkeypatch, DOMAIN)
    return env


def small_segment_profile(tmp_path) -> str:
    """The shipped profile with a shared-memory segment too small for the test's images."""
    text = fastdds_profile().read_text()
    start, end = text.index("<segment_size>") + len("<segment_size>"), text.index("</segment_size>")
    path = tmp_path / PROFILE_NAME
    path.write_text(text[:start] + str(SMALL_SEGMENT) + text[end:])
    return str(path)


def test_an_image_too_large_for_the_transport_is_processed_or_counted(ros, tiny_checkpoint, tmp_path):
    from ros_graph import stop_node

    small = small_segment_profile(tmp_path)  # under whichever name(s) this distro's Fast DDS reads
    env = {**ros, **{k: small for k in ros if k.endswith("_DEFAULT_PROFILES_FILE")}}
    assert any(k.endswith("_DEFAULT_PROFILES_FILE") for k in env), "isolated_ros_env set no profile"
    node_log, camera_log = tmp_path / "node.log", tmp_path / "camera.log"
    node = start_python_module(
        "zoedepth_ros.ros.node",
        ros_args({"checkpoint": tiny_checkpoint("nk"), "device": "cpu", "output_scale": 0.1}),
        env,
        node_log,
    )
    camera = start_python_module(
        "zoedepth_ros.ros.demo_camera", ros_args({"rate": 5.0, "width": 1280, "height": 960}), env, camera_log
    )
    graph = Graph()
    try:

        def outcome() -> tuple[int, int, int]:
            graph.spin(0.5)
            d = diagnostics(graph)
            return (
                len(graph.received["depth"]),
                int(d.get("lost in transport (image)", 0)),
                int(d.get("camera_info without its image", 0)),
            )

        graph.wait(lambda: sum(outcome()) > 0, "depth for the large frames, or their loss in diagnostics", 60)
        graph.spin(3.0)
        depth, lost, missing = outcome()
        if depth == 0:  # never silently gone: counted (by the middleware's event or by its CameraInfo) and said
            assert lost > 0 or missing > 0
            text = node_log.read_text()
            assert "lost" in text or "came without their image" in text, text
            assert "README: large images" in text
    finally:
        graph.close()
        stop_node(camera)
        stop_node(node)


def test_frames_without_valid_depth_are_counted_and_warned(ros, tiny_checkpoint, tmp_path):
    from ros_graph import stop_node

    log = tmp_path / "node.log"
    node = start_python_module(
        "zoedepth_ros.ros.node",
        ros_args({"checkpoint": tiny_checkpoint("nk"), "device": "cpu", "min_depth": 999.0, "max_depth": 1000.0}),
        ros,
        log,
    )
    graph = Graph()
    try:
        graph.wait_for_node(node, log)
        graph.request(rgb_image(0), 1_700_003_000_000_000_000)  # still published: NaN is REP 118's "no depth"
        graph.wait(
            lambda: int(diagnostics(graph).get("frames with no valid depth", 0)) > 0, "the count in diagnostics", 10
        )
        assert "no valid depth in 1 frame(s) so far" in log.read_text()
        assert graph.received["diag"][-1].status[0].level == b"\x01"  # WARN
    finally:
        graph.close()
        stop_node(node)
