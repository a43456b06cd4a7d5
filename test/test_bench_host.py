"""Host-side per-frame costs: structure, sanity of the numbers, one-thread cloud packing, rclpy-less fallback."""

from __future__ import annotations

import math

import pytest
import torch

from zoedepth_ros.benchmarks import host

SIZES = ((64, 48), (32, 24))
ITERS = 5


def summaries(tree, path=()):
    """Every summarize() dict in a report, with where it is."""
    if isinstance(tree, dict):
        if "p50_ms" in tree:
            yield path, tree
        else:
            for key, value in tree.items():
                yield from summaries(value, (*path, key))


def check_summary(where, s, iters):
    assert s["n"] == iters, where
    values = [s[k] for k in ("min_ms", "p50_ms", "p99_ms", "max_ms", "mean_ms")]
    assert all(math.isfinite(v) and v > 0 for v in values), (where, s)
    assert s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], (where, s)
    assert s["min_ms"] <= s["mean_ms"] <= s["max_ms"], (where, s)
    assert s["max_ms"] < 5_000, (where, s)


@pytest.fixture
def two_threads():
    """Run with 2 torch threads, so one-thread packing and the restore are both visible."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_cloud_packing_runs_on_one_thread_and_restores_the_setting(two_threads):
    out = host.cloud_costs(64, 48, ITERS)
    assert out["threads"] == 1
    assert out["threads_restored"] == two_threads == torch.get_num_threads()
    payloads = out.pop("_bytes")
    assert {k: len(v) for k, v in payloads.items()} == {
        "depth": 4 * 64 * 48,
        "xyz": 16 * 64 * 48,
        "xyzrgb": 32 * 64 * 48,
    }
    for where, s in summaries(out):
        check_summary(where, s, ITERS)
    assert {p for p, _ in summaries(out)} == {
        ("depth_to_bytes",),
        ("xyz", "pack"),
        ("xyz", "to_bytes"),
        ("xyzrgb", "pack"),
        ("xyzrgb", "to_bytes"),
    }


def test_time_calls_measures_the_call_not_the_gap():
    import time

    s = host.time_calls(lambda: time.sleep(0.002), 4, warmup=1, between=lambda: time.sleep(0.02))
    assert s["n"] == 4 and 1.5 < s["min_ms"] and s["max_ms"] < 15


def test_without_rclpy_the_ros_parts_are_skipped(monkeypatch, two_threads):
    monkeypatch.setattr(host, "_rclpy_missing", lambda: "rclpy not available: test")
    report = host.measure_host_costs(sizes=SIZES[:1], iters=ITERS)
    item = report["sizes"]["64x48"]
    for part in ("receive", "messages", "publish"):
        assert item[part] == {"skipped": "rclpy not available: test"}
    assert item["conversion"]["message"] == "stand-in"
    check_summary("conversion", item["conversion"]["image_array_from_msg"], ITERS)
    assert item["cloud"]["threads"] == 1 and torch.get_num_threads() == two_threads
    assert set(item["total_ms"]) == {"xyz", "xyzrgb", "xyz_gpu_cloud", "xyzrgb_gpu_cloud"}
    assert all(v is None for v in item["total_ms"].values())


def test_host_costs_with_a_real_subscriber(two_threads):
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is needed to measure publishing")
    report = host.measure_host_costs(sizes=SIZES, iters=ITERS)
    assert torch.get_num_threads() == two_threads == report["torch_threads"]
    assert list(report["sizes"]) == ["64x48", "32x24"]
    for label, item in report["sizes"].items():
        assert item["conversion"]["message"] == "sensor_msgs/Image"
        assert item["cloud"]["threads"] == 1
        assert (
            set(item["messages"])
            == set(item["publish"])
            == {"depth_image", "camera_info", "point_cloud_xyz", "point_cloud_xyzrgb"}
        )
        found = list(summaries({k: item[k] for k in ("conversion", "receive", "cloud", "messages", "publish")}))
        assert len(found) == 1 + 1 + 5 + 4 + 4, label
        for where, s in found:
            check_summary((label, *where), s, ITERS)
        for kind in ("xyz", "xyzrgb"):
            parts = [
                item["conversion"]["image_array_from_msg"],
                item["receive"]["deserialize_image"],
                item["cloud"][kind]["pack"],
                item["cloud"][kind]["to_bytes"],
                item["cloud"]["depth_to_bytes"],
            ]
            parts += [
                item[part][name]
                for part in ("messages", "publish")
                for name in ("depth_image", "camera_info", f"point_cloud_{kind}")
            ]
            assert item["total_ms"][kind] == pytest.approx(sum(p["p50_ms"] for p in parts))
            pack = item["cloud"][kind]["pack"]["p50_ms"]
            assert item["total_ms"][f"{kind}_gpu_cloud"] == pytest.approx(item["total_ms"][kind] - pack)


def test_built_messages_are_the_nodes_outputs():
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is needed to build messages")
    out = host.cloud_costs(32, 24, 1)
    msgs = host.build_messages(32, 24, out["_bytes"])
    assert (msgs["depth_image"].encoding, len(msgs["depth_image"].data)) == ("32FC1", 4 * 32 * 24)
    assert (msgs["camera_info"].width, msgs["camera_info"].height) == (32, 24)
    assert msgs["camera_info"].p[0] == pytest.approx(host.pinhole(32, 24)[0])
    for kind, step in (("xyz", 16), ("xyzrgb", 32)):
        cloud = msgs[f"point_cloud_{kind}"]
        assert (cloud.height, cloud.width, cloud.point_step, len(cloud.data)) == (24, 32, step, step * 32 * 24)
        assert bytes(cloud.data) == out["_bytes"][kind]
