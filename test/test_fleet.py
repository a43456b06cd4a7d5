"""zoedepth-ros-fleet on a local Ray instance (2 CPUs, no dashboard) with the tiny checkpoint: outputs equal
zoedepth-ros-bag's for bags in both storages, a worker SIGKILLed mid-bag costs that bag a retry and nothing else
(every output exactly once, no partial folder left), a corrupt bag fails alone, and a re-run skips what is done."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_bag_tool import read_bag, two_camera_messages, write_bag

from zoedepth_ros.engine.pipeline import Settings
from zoedepth_ros.offline.bag_job import BagOptions
from zoedepth_ros.offline.common import settings_from_args
from zoedepth_ros.offline.fleet import EngineOptions, FleetConfig, FleetError, expand_inputs, plan, run_fleet
from zoedepth_ros.tools import bag as bag_tool
from zoedepth_ros.tools import fleet as fleet_tool


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="zoedepth-ros-fleet needs Ray (the test extra installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    return {
        "a": write_bag(root / "a", "mcap", two_camera_messages(3)),
        "b": write_bag(root / "b", "sqlite3", two_camera_messages(2)),
    }


def default_settings() -> Settings:
    """What zoedepth-ros-fleet (and zoedepth-ros-bag) use without options."""
    return settings_from_args(fleet_tool.build_parser().parse_args(["in", "--output-dir", "out"]))


def engine_options(tiny_checkpoint) -> EngineOptions:
    return EngineOptions(str(tiny_checkpoint("nk")), device="cpu", precision="fp32", execution="eager")


def assert_same_bag(got: Path, expected: Path) -> None:
    out, conns, _ = read_bag(got)
    ref, ref_conns, _ = read_bag(expected)
    assert set(out) == set(ref) and {t: c.msgtype for t, c in conns.items()} == {
        t: c.msgtype for t, c in ref_conns.items()
    }
    for topic, messages in ref.items():
        assert [t for t, _ in out[topic]] == [t for t, _ in messages], topic
        for (_, a), (_, b) in zip(out[topic], messages, strict=True):
            if topic.endswith("depth/image"):
                da = np.frombuffer(a.data.tobytes(), "<f4")
                db = np.frombuffer(b.data.tobytes(), "<f4")
                np.testing.assert_allclose(da, db, rtol=0, atol=1e-6, equal_nan=True)
                assert (a.height, a.width, a.encoding, a.header.frame_id) == (
                    b.height,
                    b.width,
                    b.encoding,
                    b.header.frame_id,
                )
            elif topic.endswith("routing"):
                assert (a.head, a.domain, a.forced) == (b.head, b.domain, b.forced)
            else:
                assert repr(a) == repr(b), topic


@pytest.mark.timeout(600)
def test_fleet_outputs_equal_zoedepth_ros_bag_and_a_rerun_skips_them(ray_local, bags, tiny_checkpoint, tmp_path):
    ckpt = str(tiny_checkpoint("nk"))
    (tmp_path / "single").mkdir()
    for name, path in bags.items():
        argv = [str(path), str(tmp_path / "single" / name), "--checkpoint", ckpt, "--device", "cpu", "--quiet"]
        assert bag_tool.main(argv) == 0
    pairs = plan(list(bags.values()), tmp_path / "fleet")
    config = FleetConfig(workers=2, cpus_per_worker=1)
    results = run_fleet(
        pairs, engine_options(tiny_checkpoint), default_settings(), BagOptions(), config, log=lambda _: None
    )
    assert [r.status for r in results] == ["done", "done"], results
    assert [r.frames_out for r in results] == [6, 4]
    for name in bags:
        assert_same_bag(tmp_path / "fleet" / name, tmp_path / "single" / name)
    assert not list((tmp_path / "fleet").glob(".*partial*"))
    again = run_fleet(
        pairs, engine_options(tiny_checkpoint), default_settings(), BagOptions(), config, log=lambda _: None
    )
    assert [r.status for r in again] == ["skipped", "skipped"]


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_bag_costs_a_retry_and_nothing_else(ray_local, bags, tiny_checkpoint, tmp_path):
    pairs = plan([bags["a"], bags["b"]], tmp_path / "out")
    killed: list[int] = []

    def kill_during_first_bag(actors) -> None:
        pid = ray_local.get(actors[0].pid.remote())

        def watch() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if list((tmp_path / "out").glob(".a.partial-*")):  # the first bag is being written
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.005)

        threading.Thread(target=watch, daemon=True).start()

    results = run_fleet(
        pairs,
        engine_options(tiny_checkpoint),
        Settings(),
        BagOptions(batch=1),
        FleetConfig(workers=1, retries=2),
        log=lambda _: None,
        on_start=kill_during_first_bag,
    )
    assert killed, "the worker was not killed mid-bag"
    assert [r.status for r in results] == ["done", "done"], results
    assert results[0].retries == 1 and results[1].retries == 0
    assert [r.frames_out for r in results] == [6, 4]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"]  # nothing partial, nothing twice
    out, _, _ = read_bag(tmp_path / "out" / "a")
    assert len(out["/cam0/depth/image"]) == 3 and len(out["/cam1/depth/image"]) == 3


@pytest.mark.timeout(600)
def test_the_command_fails_a_corrupt_bag_alone(ray_local, bags, tiny_checkpoint, tmp_path, capsys):
    corrupt = tmp_path / "broken.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n this is not a recording")
    summary = tmp_path / "summary.json"
    argv = [str(bags["a"]), str(corrupt), "--output-dir", str(tmp_path / "out"), "--checkpoint"]
    argv += [str(tiny_checkpoint("nk")), "--device", "cpu", "--summary-json", str(summary)]
    ray_local.shutdown()  # the command connects by itself (--address auto: starts a local instance)
    try:
        status = fleet_tool.main([*argv, "--local-cpus", "2"])
    finally:
        ray_local.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert status == 1
    report = json.loads(summary.read_text())
    by_input = {Path(r["input"]).name: r for r in report["per_input"]}
    assert by_input["a"]["status"] == "done" and by_input["a"]["frames_out"] == 6
    assert by_input["broken.mcap"]["status"] == "failed" and by_input["broken.mcap"]["error"]
    assert report["inputs"] == {"done": 1, "skipped": 0, "failed": 1, "pending": 0}
    assert (tmp_path / "out" / "a" / "metadata.yaml").is_file() and not (tmp_path / "out" / "broken").exists()
    err = capsys.readouterr().err
    assert "failed: " in err and "broken.mcap" in err


def test_inputs_globs_lists_and_bad_entries(bags, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two bags\n{bags['b']}\n{bags['a']}  # again below\n")
    found = expand_inputs([str(bags["a"].parent / "*"), f"@{listing}"])
    assert found == [bags["a"], bags["b"]]  # glob order, then the list's entries without duplicates
    with pytest.raises(FleetError, match="matches nothing"):
        expand_inputs([str(tmp_path / "nothing-*")])
    (tmp_path / "images").mkdir()
    with pytest.raises(FleetError, match="not a rosbag2 recording"):
        expand_inputs([str(tmp_path / "images")])
    with pytest.raises(FleetError, match="would both write"):
        plan([bags["a"], tmp_path / "other" / "a"], tmp_path / "out")
    with pytest.raises(FleetError, match="overlap"):
        plan([bags["a"]], bags["a"])


def test_usage_errors_exit_2(tmp_path, capsys):
    assert fleet_tool.main([str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert fleet_tool.main([str(tmp_path)]) == 2  # --output-dir is required


@pytest.mark.timeout(600)
def test_an_interrupted_job_leaves_no_partial_output(ray_local, bags, tiny_checkpoint, tmp_path):
    import _thread

    def interrupt_during_first_bag(actors) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if list((tmp_path / "out").glob(".a.partial-*")):
                    _thread.interrupt_main()  # Ctrl-C
                    return
                time.sleep(0.005)

        threading.Thread(target=watch, daemon=True).start()

    pairs = plan([bags["a"]], tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_fleet(
            pairs,
            engine_options(tiny_checkpoint),
            default_settings(),
            BagOptions(batch=1),
            FleetConfig(workers=1),
            log=lambda _: None,
            on_start=interrupt_during_first_bag,
        )
    time.sleep(1.0)  # a writer that outlived the sweep would show up now
    assert list((tmp_path / "out").iterdir()) == []
