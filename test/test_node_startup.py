"""Start-up: bad parameter values are one line and exit 1; warm-up trusts only a valid CameraInfo's image size."""

from __future__ import annotations

import subprocess

import pytest

try:
    import rclpy
    from test_node_dds import DOMAIN_ID, Graph, info_msg
except ImportError:  # a venv without ROS: the tests below skip
    rclpy = None

from zoedepth_ros.benchmarks.isolation import ros_args, start_python_module

pytestmark = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the node tests")

DOMAIN = (DOMAIN_ID + 6) if rclpy is not None else 0


def run_node(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    from ros_graph import run_module

    return run_module("zoedepth_ros.ros.node", args, DOMAIN, ZOEDEPTH_ROS_CACHE=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("max_depth:=-1", "max_depth must be a number in [0, 1000], got -1.0"),
        ("max_depth:=abc", "max_depth must be a number in [0, 1000], got 'abc'"),
        ("point_cloud.decimation:=0", "point_cloud.decimation must be an integer in [1, 32], got 0"),
        ("point_cloud.decimation:=2.5", "point_cloud.decimation must be an integer in [1, 32], got 2.5"),
        ("routing:=sideways", "routing must be one of auto, indoor, outdoor; got 'sideways'"),
        ("pad_input:=3", "pad_input must be a bool (true or false), got 3"),
    ],
)
def test_bad_parameter_is_one_line_and_exit_1(tmp_path, given, expected):
    result = run_node(["--ros-args", "-p", given], tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"zoedepth_node: invalid parameters: {expected}"], result.stderr


def test_bad_value_in_a_params_file_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    min_depth: 5\n    max_depth: 2.0\n")
    result = run_node(["--ros-args", "--params-file", str(params)], tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["zoedepth_node: invalid parameters: min_depth (5.0) must be below max_depth (2.0)"], result.stderr


def test_an_integer_is_accepted_where_a_float_is_expected(tmp_path):
    # the parameters pass; the node then stops, one line, at the checkpoint it cannot find (downloads off)
    result = run_node(
        ["--ros-args", "-p", "max_depth:=5", "-p", "camera_info_wait:=1", "-p", "download:=false"], tmp_path
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "invalid parameters" not in lines[0] and "ZoeD_M12_NK" in lines[0], result.stderr


@pytest.fixture
def fresh_node(tiny_checkpoint, tmp_path, monkeypatch):
    from ros_graph import stop_node, use_domain

    env = use_domain(monkeypatch, DOMAIN)
    log = tmp_path / "node.log"
    proc = start_python_module(
        "zoedepth_ros.ros.node", ros_args({"checkpoint": tiny_checkpoint("nk"), "device": "cpu"}), env, log
    )
    graph = Graph()
    try:
        graph.wait_for_node(proc, log, publisher=graph.pub_info)
        yield graph, proc, log
    finally:
        graph.close()
        stop_node(proc)


def test_warm_up_uses_the_binned_size_and_ignores_absurd_camera_info(fresh_node):
    graph, proc, log = fresh_node
    huge = info_msg(1, width=100_000, height=100_000)  # 10 gigapixels: must not be allocated
    graph.wait(
        lambda: (
            graph.pub_info.publish(huge),
            graph.spin(0.3),
            "not warming up for this CameraInfo" in log.read_text(),
        )[-1],
        "the refusal in the log",
        30,
    )
    assert "exceeds the 64 megapixel limit" in log.read_text()
    binned = info_msg(2, width=128, height=96)
    binned.binning_x = binned.binning_y = 2  # the images are 64x48
    binned.k = [104.0, 0.0, 63.0, 0.0, 100.0, 46.0, 0.0, 0.0, 1.0]
    binned.p = [104.0, 0.0, 63.0, 0.0, 0.0, 100.0, 46.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    graph.wait(
        lambda: (graph.pub_info.publish(binned), graph.spin(0.3), "warmed up for" in log.read_text())[-1],
        "the warm-up",
        60,
    )
    text = log.read_text()
    assert "warmed up for 64x48" in text and "128x96" not in text and "100000" not in text.split("warmed up")[1]
    assert proc.poll() is None
