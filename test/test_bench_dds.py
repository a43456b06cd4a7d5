"""The end-to-end DDS benchmark (camera process -> node process -> this process) and its process-isolation helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoedepth_ros.benchmarks import dds, isolation
from zoedepth_ros.ros import fastdds


def child_pids() -> set[int]:
    """This process's live children (Linux /proc), to check the benchmark leaves none behind."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return pids


# ------------------------------------------------------------------ without ROS


def test_profile_resolves_to_the_source_tree_config_and_is_optional(monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    assert isolation.fastdds_profile() == repo / "config" / "fastdds_large_shm.xml"
    env = isolation.isolated_ros_env(123)
    assert env["ROS_DOMAIN_ID"] == "123" and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    monkeypatch.setenv("ROS_DISTRO", "humble")  # Humble reads the older variable
    humble = isolation.isolated_ros_env(123)
    assert humble["ROS_LOCALHOST_ONLY"] == "1" and "ROS_AUTOMATIC_DISCOVERY_RANGE" not in humble
    monkeypatch.delenv("ROS_DISTRO")
    names = fastdds.profile_env_names(fastdds.ros_distro())  # FASTRTPS_ on Fast DDS 2.x (Jazzy), FASTDDS_ on 3.x
    assert all(Path(env[name]).read_text().count("<segment_size>50331648<") == 1 for name in names)
    monkeypatch.setattr(isolation, "fastdds_profile", lambda: None)
    assert not any(name.endswith("_DEFAULT_PROFILES_FILE") for name in isolation.isolated_ros_env(123))


def test_default_domain_is_clear_of_the_node_tests():
    from test_node_dds import DOMAIN_ID

    domain = isolation.default_domain_id()
    assert 0 <= domain <= 232 and domain not in (DOMAIN_ID, DOMAIN_ID + 1)


def test_ros_args_spell_parameters_for_the_command_line():
    assert isolation.ros_args({"flip_aug": True, "max_depth": 10.0, "device": "cpu"}) == [
        "--ros-args",
        "-p",
        "flip_aug:=true",
        "-p",
        "max_depth:=10.0",
        "-p",
        "device:=cpu",
    ]


def test_applied_env_restores_the_previous_environment(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    with isolation.applied_env({"ROS_DOMAIN_ID": "9", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}):
        assert os.environ["ROS_DOMAIN_ID"] == "9"
    assert os.environ["ROS_DOMAIN_ID"] == "7" and "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=isolation.PACKAGE_PARENT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def test_a_child_stops_when_its_parent_closes_stdin():
    proc = child("from zoedepth_ros.benchmarks.isolation import stop_when_stdin_closes as s; print(s().wait(30))")
    try:
        time.sleep(0.2)
        assert proc.poll() is None  # stdin open: the child waits
        isolation.stop_via_stdin(proc)
        assert proc.returncode == 0 and proc.stdout.read().strip() == "True"  # the event was set, not timed out
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deaf = child("import time; time.sleep(60)")  # ignores stdin: killed once the wait runs out
    t0 = time.monotonic()
    isolation.stop_via_stdin(deaf, timeout=0.5)
    deaf.stdout.close()
    assert deaf.returncode == -9 and time.monotonic() - t0 < 10


def test_child_entry_points_take_only_their_verb(capsys):
    assert dds.main([]) == 2 and dds.main(["sink"]) == 2
    lines = capsys.readouterr().err.splitlines()
    usage = "usage: python -m zoedepth_ros.benchmarks.dds camera --width W --height H --rate HZ --result PATH [...]"
    assert lines == [usage, usage]
    assert isolation.child_main(["sink", "--x", "1"], "m", "sink", "", lambda rest: len(rest)) == 2  # rest passed on


def test_topic_stats_count_only_the_measured_window():
    samples = [
        (1_000, 1_000 + 5_000_000),
        (2_000_000_000, 2_010_000_000),
        (2_100_000_000, 2_130_000_000),
        (2_200_000_000, 2_220_000_000),
        (3_000_000_000, 3_001_000_000),
    ]
    stats = dds._topic_stats(samples, 2_000_000_000, 3_000_000_000)
    assert (stats["received"], stats["received_total"], stats["n"]) == (3, 5, 3)
    assert (stats["min_ms"], stats["p50_ms"], stats["max_ms"]) == pytest.approx((10.0, 20.0, 30.0))
    assert stats["rate_hz"] == pytest.approx(2 / 0.21)  # 3 arrivals over 2.010 .. 2.220 s
    empty = dds._topic_stats(samples, 5_000_000_000, 6_000_000_000)
    assert empty["received"] == 0 and math.isnan(empty["rate_hz"]) and math.isnan(empty["p50_ms"])


def test_drop_counters_are_read_from_the_node_diagnostics():
    values = {
        "frames processed": "12",
        "rate (Hz)": "4.80",
        "dropped (newer frame arrived)": "21",
        "skipped (no subscribers)": "3",
        "dropped (no_camera_info)": "1",
        "model": "ZoeD_NK",
    }
    assert dds._drops(values) == (
        {"latest_frame_rule": 21, "other": {"skipped (no subscribers)": 3, "dropped (no_camera_info)": 1}},
        12,
    )
    assert dds._drops(None) == ({"latest_frame_rule": None, "other": {}}, None)


def test_results_are_strict_json():
    safe = dds.json_safe({"a": math.nan, "b": [1.5, math.inf], "c": {"d": 2}})
    assert safe == {"a": None, "b": [1.5, None], "c": {"d": 2}}
    json.dumps(safe, allow_nan=False)


def test_node_parameters_are_checked_before_anything_starts():
    params = dds.node_parameters("x.pt", {"device": "cpu"}, color=True)
    assert params == {"checkpoint": "x.pt", "point_cloud.color": True, "device": "cpu"}
    with pytest.raises(ValueError, match="unknown node parameter"):
        dds.node_parameters("x.pt", {"devise": "cpu"}, color=False)
    with pytest.raises(ValueError, match="routing"):
        dds.node_parameters("x.pt", {"routing": "sideways"}, color=False)


def test_end_to_end_config_is_checked_when_built():
    assert dds.EndToEndConfig(64, 48, 10.0, 2.0, warmup_s=0.0).warmup_s == 0.0  # no warm-up is allowed
    for bad in ({"width": 0}, {"height": -1}, {"rate_hz": 0.0}, {"duration_s": 0.0}, {"warmup_s": -0.5}):
        fields = {"width": 64, "height": 48, "rate_hz": 10.0, "duration_s": 2.0, **bad}
        with pytest.raises(ValueError, match="need positive width, height, rate_hz and duration_s"):
            dds.EndToEndConfig(**fields)


def test_camera_command_line_follows_the_config_and_the_node_qos(tmp_path):
    config = dds.EndToEndConfig(64, 48, 10.0, 2.0, encoding="mono16", warmup_s=0.5, timeout_s=60.0)
    params = dds.node_parameters("x.pt", {"qos.input_reliability": "reliable"}, color=False)
    args = dds._camera_args(config, params, 2, tmp_path / "camera.json")
    assert args == [
        "camera",
        "--width", "64", "--height", "48", "--rate", "10.0", "--encoding", "mono16", "--bytes-per-pixel", "2",
        "--reliability", "reliable", "--depth", "1", "--match-timeout", "60.0",
        "--max-duration", "122.5",  # every wait of the run (2 x 60 s) plus warm-up and window
        "--result", str(tmp_path / "camera.json"),
    ]  # fmt: skip
    default = dds._camera_args(dds.EndToEndConfig(64, 48, 10.0, 2.0), {}, 3, tmp_path / "c.json")
    assert default[default.index("--reliability") + 1] == "best_effort"  # the node's default input QoS


def test_camera_frame_and_intrinsics_are_plausible():
    frame = dds.texture(64, 48, 3)
    assert len(frame) == 64 * 48 * 3 and frame == dds.texture(64, 48, 3)
    assert len(set(frame)) > 50  # textured, not flat
    fx, fy, cx, cy = dds.pinhole(640, 480)
    assert fx == fy and 400 < fx < 600 and (cx, cy) == (319.5, 239.5)


def test_pinhole_camera_info_is_laid_out_as_ros_wants():
    pytest.importorskip("sensor_msgs.msg", reason="the ROS message packages are needed for CameraInfo")
    info = dds.pinhole_info(640, 480)
    f = 492.7568  # 640 / (2 tan 33 deg): the 66 degree horizontal field of view
    assert (info.width, info.height, info.distortion_model, list(info.d)) == (640, 480, "plumb_bob", [0.0] * 5)
    assert list(info.k) == pytest.approx([f, 0, 319.5, 0, f, 239.5, 0, 0, 1], abs=1e-4)  # row-major 3x3
    assert list(info.p) == pytest.approx([f, 0, 319.5, 0, 0, f, 239.5, 0, 0, 0, 1, 0], abs=1e-4)  # 3x4, no baseline
    assert list(info.r) == [1, 0, 0, 0, 1, 0, 0, 0, 1]


# ------------------------------------------------------------------ over DDS


@pytest.fixture
def ros():
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is needed for the end-to-end benchmark")
    before = child_pids()
    yield
    assert child_pids() <= before, "the benchmark left a child process running"


def test_end_to_end_through_dds(ros, tiny_checkpoint):
    rate, duration = 10.0, 2.0
    config = dds.EndToEndConfig(64, 48, rate, duration, warmup_s=0.5, timeout_s=60.0)
    result = dds.run_end_to_end(str(tiny_checkpoint("nk")), {"device": "cpu"}, config)
    json.dumps(result, allow_nan=False)
    assert result["node_params"] == {
        "checkpoint": str(tiny_checkpoint("nk")),
        "point_cloud.color": False,
        "device": "cpu",
    }
    assert (result["width"], result["height"], result["rate_hz"], result["duration_s"]) == (64, 48, rate, duration)
    # the camera keeps its schedule: ~rate * duration frames stamped inside the measured window (a loaded 2-core
    # machine delays some: 12 of 20 was seen with a load average of 11)
    assert rate * duration / 2 <= result["published_measured"] <= rate * duration + 1
    assert result["published"] >= result["published_measured"]
    assert 0 < result["first_output_s"] < 60

    depth, points = result["depth"], result["points"]
    for topic in (depth, points):
        assert 2 <= topic["received"] == topic["n"] <= result["published_measured"]
        assert topic["received"] <= topic["received_total"] <= result["published"]
        assert 0 < topic["min_ms"] <= topic["p50_ms"] <= topic["p99_ms"] <= topic["max_ms"] < 10_000
        assert 0 < topic["rate_hz"] <= 2 * rate
    assert points["received_total"] == depth["received_total"]  # both outputs of every processed frame

    # what the node counted accounts for what it was sent and what came back
    assert result["diagnostics_final"] is True
    dropped = result["dropped"]
    assert dropped["latest_frame_rule"] >= 0 and all(n >= 0 for n in dropped["other"].values())
    assert depth["received_total"] <= result["node_processed"]
    assert (
        result["node_processed"] + dropped["latest_frame_rule"] + sum(dropped["other"].values()) <= result["published"]
    )
    assert result["lost"] == result["published_measured"] - depth["received"] >= 0


def test_a_node_that_dies_at_start_is_reported_with_its_log(ros, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(dds.NodeStartError, match="exited with code 1") as info:
        dds.run_end_to_end(str(missing), {"device": "cpu"}, dds.EndToEndConfig(64, 48, 10.0, 1.0, timeout_s=60.0))
    assert f"checkpoint file not found: {missing}" in str(info.value)
