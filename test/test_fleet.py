"""zoedepth-ros-fleet on a local Ray instance (2 CPUs, no dashboard) with the tiny checkpoint: outputs equal
zoedepth-ros-bag's for bags in both storages and zoedepth-ros-predict's for image folders, a worker SIGKILLed
mid-bag or mid-folder costs a retry and nothing else (every output exactly once, nothing partial left), a corrupt bag
or an unreadable image fails alone, an interrupted job leaves nothing partial, and a re-run skips what is done."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_bag_tool import read_bag, two_camera_messages, write_bag
from test_predict_tool import picture

from zoedepth_ros.engine.pipeline import Settings
from zoedepth_ros.offline.bag_job import BagOptions
from zoedepth_ros.offline.common import settings_from_args
from zoedepth_ros.offline.depth_files import read_depth, read_ply
from zoedepth_ros.offline.fleet import EngineOptions, FleetConfig, FleetError, expand_inputs, plan, run_fleet
from zoedepth_ros.offline.fleet_images import ImageJobOptions, plan_folder, run_images
from zoedepth_ros.offline.image_outputs import OutputSpec
from zoedepth_ros.tools import bag as bag_tool
from zoedepth_ros.tools import fleet as fleet_tool
from zoedepth_ros.tools import predict as predict_tool


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="zoedepth-ros-fleet needs Ray (the test extra installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ctrl_c():
    """SIGINT as Python's KeyboardInterrupt while a test needs it (and in the processes it starts, which inherit an
    ignored SIGINT but not a handler): something earlier in the suite can leave SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


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
            elif topic.endswith(("points", "depth/colormap")):  # computed from the depth: its tolerance carries
                fields = ("height", "width", "is_dense", "point_step", "row_step", "fields", "encoding", "step")
                assert [repr(getattr(a, f, None)) for f in fields] == [repr(getattr(b, f, None)) for f in fields]
                assert repr(a.header) == repr(b.header)
                if topic.endswith("points"):  # x y z (and the packed colour) as float32
                    da = np.frombuffer(a.data.tobytes(), "<f4")
                    db = np.frombuffer(b.data.tobytes(), "<f4")
                    np.testing.assert_allclose(da, db, rtol=0, atol=1e-5, equal_nan=True, err_msg=topic)
                else:  # rgb8: one colour level
                    assert np.abs(a.data.astype(int) - b.data.astype(int)).max() <= 1, topic
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
    assert report["inputs"] == {"done": 1, "skipped": 0, "failed": 1, "interrupted": 0}
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
    (tmp_path / "notes.txt").write_text("neither")
    with pytest.raises(FleetError, match="neither a rosbag2 recording"):
        expand_inputs([str(tmp_path / "notes.txt")])
    (tmp_path / "images").mkdir()
    assert expand_inputs([str(tmp_path / "images")]) == [tmp_path / "images"]  # a folder of images
    with pytest.raises(FleetError, match="would both write"):
        plan([bags["a"], tmp_path / "other" / "a"], tmp_path / "out")
    with pytest.raises(FleetError, match="overlap"):
        plan([bags["a"]], bags["a"])


def test_usage_errors_exit_2(tmp_path, capsys):
    assert fleet_tool.main([str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert fleet_tool.main([str(tmp_path)]) == 2  # --output-dir is required


@pytest.mark.timeout(600)
def test_an_interrupted_job_leaves_no_partial_output(ray_local, bags, tiny_checkpoint, tmp_path, ctrl_c):
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


# ------------------------------------------------------------------------------------------------ image folders


def write_images(folder: Path, count: int, size: tuple[int, int] = (48, 64)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(picture(*size, seed=i)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """A folder as cameras leave them: two sizes, greyscale 8 and 16 bit, a subfolder, a broken file, a video."""
    root = tmp_path_factory.mktemp("images") / "shots"
    write_images(root, 3)
    write_images(root / "left", 2, (40, 72))
    Image.fromarray(picture(48, 64, 9)[..., 0]).save(root / "grey.png")
    Image.fromarray(picture(48, 64, 7)[..., 1].astype(np.uint16) * 257).save(root / "grey16.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "clip.mp4").write_bytes(b"a video: zoedepth-ros-predict's work")
    return root


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_same_files(got: Path, expected: Path) -> None:
    """Depth within 1e-6 m, clouds within 1e-6 m, previews within one colour level; the same names."""
    names = files_under(expected)
    assert files_under(got) == names
    for name in names:
        a, b = got / name, expected / name
        if name.endswith(("_depth.npy", "_depth.png", "_depth.tiff")):
            da, db = read_depth(a), read_depth(b)
            atol = 1e-6 if name.endswith((".npy", ".tiff")) else 1e-3  # png16 rounds to millimetres
            np.testing.assert_allclose(da, db, rtol=0, atol=atol, equal_nan=True, err_msg=name)
        elif name.endswith("_points.ply"):
            pa, pb = read_ply(a), read_ply(b)
            assert pa.dtype == pb.dtype and pa.shape == pb.shape, name
            for field in pa.dtype.names:
                np.testing.assert_allclose(pa[field], pb[field], rtol=0, atol=1e-5, err_msg=name)
        else:
            ia, ib = np.asarray(Image.open(a)).astype(int), np.asarray(Image.open(b)).astype(int)
            assert ia.shape == ib.shape and np.abs(ia - ib).max() <= 1, name


@pytest.mark.timeout(600)
def test_bags_and_image_folders_in_one_job_equal_the_single_machine_tools(
    ray_local, bags, shots, tiny_checkpoint, tmp_path
):
    ckpt = str(tiny_checkpoint("nk"))
    engine = ["--checkpoint", ckpt, "--device", "cpu"]
    files = ["--format", "npy", "--preview", "--ply", "--color", "--fx", "60", "--fy", "60", "--cx", "32", "--cy", "24"]
    single = tmp_path / "single"
    assert predict_tool.main([str(shots), "-r", "--output", str(single / "shots"), *files, *engine]) == 0
    # --preview and --ply are the bags' --colormap and --points (the same options)
    bag_argv = [str(bags["b"]), str(single / "b"), "--colormap", "--points", "--color", *engine, "--quiet"]
    assert bag_tool.main(bag_argv) == 0
    summary = tmp_path / "summary.json"
    argv = [str(shots), str(bags["b"]), "--output-dir", str(tmp_path / "fleet"), "-r", *files, *engine]
    argv += ["--summary-json", str(summary), "--local-cpus", "2", "--quiet"]
    ray_local.shutdown()  # the command connects by itself
    try:
        assert fleet_tool.main(argv) == 0
        report = json.loads(summary.read_text())
        assert fleet_tool.main([*argv, "--summary-json", str(tmp_path / "again.json")]) == 0
        again = json.loads((tmp_path / "again.json").read_text())
    finally:
        ray_local.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert_same_files(tmp_path / "fleet" / "shots", single / "shots")
    assert_same_bag(tmp_path / "fleet" / "b", single / "b")
    by_input = {Path(r["input"]).name: r for r in report["per_input"]}
    folder = by_input["shots"]
    assert folder["status"] == "done" and folder["frames_in"] == 9 and folder["frames_out"] == 7
    assert folder["skipped"] == {"unreadable": 1, "video": 1}
    assert by_input["b"]["status"] == "done" and by_input["b"]["frames_out"] == 4
    assert report["frames_out"] == 11 and report["inputs"]["done"] == 2
    assert again["inputs"] == {"done": 0, "skipped": 2, "failed": 0, "interrupted": 0}  # nothing redone
    assert again["per_input"][0]["skipped"]["complete_already"] == 7


def depth_actor_pids() -> list[int]:
    """This machine's Ray Data depth actors: their process title names the class."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::") and b"DepthActor" in cmdline:
            pids.append(int(entry.name))
    return pids


def run_folder(folder: Path, output: Path, tiny_checkpoint, spec: OutputSpec, **kwargs):
    options = ImageJobOptions(spec, batch=1)
    plans = [plan_folder(folder, output, options, force=False)]
    settings = Settings(points=False, colormap=False)
    engine = engine_options(tiny_checkpoint)
    tallies = run_images(plans, engine, settings, options, workers=1, cpus_per_worker=1, gpus_per_worker=0, **kwargs)
    return plans, tallies


@pytest.mark.timeout(600)
def test_a_depth_actor_killed_mid_folder_costs_a_retry_and_nothing_else(ray_local, tiny_checkpoint, tmp_path):
    images = write_images(tmp_path / "many", 12)
    spec = OutputSpec("npy", preview=True)
    out = tmp_path / "out" / "many"
    killed: list[int] = []

    def kill_at_first_output() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = depth_actor_pids()
            if pids and out.is_dir() and any(out.glob("*_depth.npy")):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.005)

    threading.Thread(target=kill_at_first_output, daemon=True).start()
    _, [tally] = run_folder(tmp_path / "many", out, tiny_checkpoint, spec)
    assert killed, "no depth actor was killed mid-folder"
    assert tally.frames_out == 12 and not tally.skipped  # every image once
    assert files_under(out) == sorted(f"{p.stem}{tail}" for p in images for tail in spec.tails())  # nothing partial
    reference = tmp_path / "reference"
    argv = [str(tmp_path / "many"), "--output", str(reference), "--format", "npy", "--preview"]
    assert predict_tool.main([*argv, "--checkpoint", str(tiny_checkpoint("nk")), "--device", "cpu"]) == 0
    assert_same_files(out, reference)


@pytest.mark.timeout(600)
def test_an_interrupted_folder_leaves_whole_images_and_a_rerun_finishes_it(
    ray_local, tiny_checkpoint, tmp_path, ctrl_c
):
    import _thread

    images = write_images(tmp_path / "many", 16)
    spec = OutputSpec("npy", preview=True)
    out = tmp_path / "out" / "many"

    def interrupt_at_first_output() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.is_dir() and any(out.glob("*_depth.npy")):
                _thread.interrupt_main()  # Ctrl-C
                return
            time.sleep(0.005)

    threading.Thread(target=interrupt_at_first_output, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_folder(tmp_path / "many", out, tiny_checkpoint, spec)
    time.sleep(1.0)  # a writer that outlived the clean-up would show up now
    names = files_under(out)
    assert not [n for n in names if n.endswith(".part")]
    stems = {n.split("_depth")[0] for n in names}
    assert len(stems) < 16, "the job was not interrupted"
    for stem in stems:  # each image has all of its files or none
        assert f"{stem}_depth.npy" in names and f"{stem}_depth_preview.png" in names, stem
    plans, [tally] = run_folder(tmp_path / "many", out, tiny_checkpoint, spec)
    assert plans[0].complete == len(stems) and tally.frames_out == 16 - len(stems)
    assert files_under(out) == sorted(f"{p.stem}{tail}" for p in images for tail in spec.tails())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_bench_fleet_section_times_every_command_on_the_same_frames(tmp_path):
    pytest.importorskip("ray.data", reason="the fleet section needs Ray Data (the test extra installs it)")
    from zoedepth_ros.tools import bench

    report_path = tmp_path / "bench.json"
    argv = ["--random", "tiny-nk", "--device", "cpu", "--sections", "fleet", "--fleet-size", "64x48"]
    assert bench.main([*argv, "--fleet-bags", "2", "--fleet-frames", "2", "--json", str(report_path)]) == 0
    fleet = json.loads(report_path.read_text())["fleet"]
    commands = [r["command"] for r in fleet["rows"]]
    assert commands == [
        "zoedepth-ros-bag each bag",
        "zoedepth-ros-fleet 1 worker",
        "zoedepth-ros-fleet 2 workers",
        "zoedepth-ros-predict folder",
        "zoedepth-ros-fleet folder 1 worker",
    ]
    assert all(r["frames_out"] == 4 and r["seconds"] > 0 for r in fleet["rows"])  # every frame, every command
    base, one = fleet["rows"][0]["seconds"], fleet["rows"][1]["seconds"]
    assert fleet["fleet_overhead_share"] == pytest.approx(one / base - 1.0, abs=1e-3)


@pytest.mark.timeout(600)
def test_ctrl_c_exits_130_and_says_what_finished(bags, tiny_checkpoint, tmp_path, ctrl_c):
    """The command in its own process, SIGINT once the folder after the bag is being written."""
    import subprocess

    pytest.importorskip("ray.data", reason="zoedepth-ros-fleet needs Ray Data (the test extra installs it)")
    write_images(tmp_path / "many", 24)
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    argv = [sys.executable, "-m", "zoedepth_ros.tools.fleet", str(bags["a"]), str(tmp_path / "many")]
    argv += ["--output-dir", str(out), "--checkpoint", str(tiny_checkpoint("nk")), "--device", "cpu", "--batch", "1"]
    argv += ["--address", "local", "--local-cpus", "2", "--summary-json", str(summary), "--preview"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        # a preview is written after its depth file: that image is whole, and stays
        if (out / "many").is_dir() and any((out / "many").glob("*_depth_preview.png")):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    report = json.loads(summary.read_text())
    by_input = {Path(r["input"]).name: r for r in report["per_input"]}
    assert by_input["a"]["status"] == "done" and by_input["a"]["frames_out"] == 6  # finished before the stop
    assert by_input["many"]["status"] == "interrupted" and report["inputs"]["interrupted"] == 1
    assert "interrupted" in err
    names = files_under(out / "many")
    stems = {n.split("_depth")[0] for n in names}
    assert not [n for n in names if n.endswith(".part")] and 0 < len(stems) < 24
    assert all(f"{stem}_depth.png" in names and f"{stem}_depth_preview.png" in names for stem in stems)
    assert by_input["many"]["frames_out"] <= len(stems)  # what the driver saw written is there
    assert sorted(p.name for p in out.iterdir()) == ["a", "many"]  # no partial bag


@pytest.mark.parametrize("missing, what", [("ray", "needs Ray ("), ("ray.data", "needs Ray Data (")])
def test_without_ray_the_command_says_how_to_install_it(monkeypatch, bags, tmp_path, capsys, missing, what):
    if missing == "ray.data":
        pytest.importorskip("ray", reason="without Ray at all the message names Ray (the other case)")
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    write_images(tmp_path / "photos", 1)
    argv = [str(bags["a"]), str(tmp_path / "photos"), "--output-dir", str(tmp_path / "out")]
    assert fleet_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert what in err and "pip install 'zoedepth_ros[fleet]'" in err and "Traceback" not in err
