"""``zoedepth-ros-fleet INPUT... --output-dir DIR``: zoedepth-ros-bag and zoedepth-ros-predict on a Ray cluster.

Each INPUT is a rosbag2 recording (a folder, or one .mcap / .db3 file), a folder of images, a glob (quote it:
``'runs/*/'``) or ``@list.txt`` (one per line). A bag becomes ``DIR/<name>``, exactly what ``zoedepth-ros-bag INPUT
DIR/<name>`` writes; a folder of images becomes ``DIR/<name>/``, the files ``zoedepth-ros-predict FOLDER --output
DIR/<name>`` writes (videos in it are left to zoedepth-ros-predict). Ray runs one worker actor per GPU (or
``--workers`` CPU actors), each holding one engine loaded once: bags go to them whole, images stream through Ray
Data (decoded and written by CPU tasks). A worker that dies is restarted by Ray and its work retried, nothing
partial is left; a bad bag or image fails alone; complete outputs are skipped, so re-running a job finishes it.

``--address auto`` (default) joins the cluster that ``ray start --head`` started on this machine (or
``$RAY_ADDRESS``), else starts a local one; ``local`` always starts a local one; ``ray://HOST:10001`` is a remote
cluster's client address. Exit status: 0 every input done or complete already, 1 some failed, 2 bad arguments or
inputs, 130 interrupted (what was in progress leaves nothing behind).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ..offline.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EngineOptions,
    Progress,
    ToolExit,
    add_engine_arguments,
    check_settings_args,
    number,
    settings_from_args,
    sigterm_as_interrupt,
)
from ..offline.depth_files import FORMATS
from ..offline.fleet import (
    FleetConfig,
    FleetError,
    InputResult,
    bag_frames,
    expand_inputs,
    is_bag,
    is_complete,
    plan,
    run_fleet,
)
from ..offline.fleet_images import FolderPlan, ImageJobOptions, plan_folder, run_images
from .bag import add_bag_options, bag_options_from_args
from .predict import add_intrinsics_arguments, checked_intrinsics, output_spec

PROG = "zoedepth-ros-fleet"
WORKERS = number(int, "an integer 1..1024", lambda v: 1 <= v <= 1024)
FRACTION = number(float, "a number in (0, 64]", lambda v: 0 < v <= 64)
RETRIES = number(int, "an integer 0..10", lambda v: 0 <= v <= 10)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="bag folders or files, globs, or @list.txt")
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="where DIR/<name> bags go")
    fleet = p.add_argument_group("fleet")
    fleet.add_argument("--address", default="auto", help="auto (default), local, or ray://HOST:PORT")
    fleet.add_argument("--workers", type=WORKERS, help="worker actors (default: one per GPU in the cluster, else 1)")
    fleet.add_argument("--gpus-per-worker", type=FRACTION, help="GPUs per actor (default: 1 with GPUs, else 0)")
    fleet.add_argument("--cpus-per-worker", type=FRACTION, default=1.0, help="CPUs Ray reserves per actor (1)")
    fleet.add_argument("--local-cpus", type=WORKERS, help="CPUs of a local Ray instance (default: all)")
    fleet.add_argument("--retries", type=RETRIES, default=2, help="attempts after a worker died on a bag (2)")
    fleet.add_argument("--force", action="store_true", help="redo bags whose output is complete already")
    fleet.add_argument("--summary-json", metavar="PATH", help="per-input and total figures as JSON (- for stdout)")
    fleet.add_argument("--quiet", action="store_true", help="no progress bar or lines (errors and summary still print)")
    bag = p.add_argument_group("bags (as zoedepth-ros-bag; --batch applies to images too)")
    add_bag_options(bag)
    images = p.add_argument_group("image folders (as zoedepth-ros-predict)")
    images.add_argument("--format", choices=FORMATS, default="png16", help="depth file: png16 (mm), npy or tiff (m)")
    images.add_argument("--preview", dest="colormap", action="store_true", help="also <stem>_depth_preview.png")
    images.add_argument("--ply", dest="points", action="store_true", help="also <stem>_points.ply; needs intrinsics")
    images.add_argument("-r", "--recursive", action="store_true", help="also take images in subfolders")
    add_intrinsics_arguments(images)
    add_engine_arguments(p)
    return p


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def connect(address: str, local_cpus: int | None, images: bool = False):
    """Ray, initialised: a running cluster (auto / ray://), else a local instance; FleetError without Ray (or
    without Ray Data, which image folders need)."""
    try:
        import ray

        if images:
            import ray.data  # needs pandas and pyarrow
    except ImportError as e:
        what = "Ray" if e.name == "ray" else "Ray Data"
        raise FleetError(
            f"{PROG} needs {what} ({e.name or e} is missing): pip install 'zoedepth_ros[fleet]' (or 'ray[data]')"
        ) from None
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=local_cpus, include_dashboard=False, **quiet)
    elif address == "auto":
        try:
            ray.init(address="auto", **quiet)
            _say("joined the running Ray cluster")
        except ConnectionError:
            ray.init(num_cpus=local_cpus, include_dashboard=False, **quiet)
            _say("no running Ray cluster: started a local one")
    else:
        ray.init(address=address, **quiet)
    return ray


def summary_dict(results: list[InputResult], seconds: float, status: int) -> dict:
    frames = sum(r.frames_out for r in results)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "interrupted")}
    return {
        "tool": PROG,
        "exit_status": status,
        "seconds": round(seconds, 3),
        "frames_out": frames,
        "frames_per_second": round(frames / seconds, 3) if seconds > 0 else 0.0,
        "inputs": counts,
        "per_input": [r.as_dict() for r in results],
    }


class Bar:
    """The one progress bar: frames done (bags count when they finish, images as they come back) and inputs."""

    def __init__(self, total_frames: int, inputs: int, quiet: bool) -> None:
        self.progress = Progress(total_frames or None, PROG, disable=quiet)
        self.inputs, self.finished = inputs, 0
        self.progress.set_postfix(self.inputs_text())

    def inputs_text(self) -> str:
        return f"inputs {self.finished}/{self.inputs}"

    def frames(self, n: int) -> None:
        self.progress.update(n)

    def input_done(self) -> None:
        self.finished += 1
        self.progress.set_postfix(self.inputs_text())

    def say(self, line: str) -> None:
        self.progress.write(f"{PROG}: {line}")


def folder_result(folder: FolderPlan, tally, seconds: float) -> InputResult:
    """A folder's InputResult from its plan (decided on the driver) and its tally (what came back)."""
    result = InputResult(str(folder.folder), str(folder.output), worker="ray-data actor pool")
    result.frames_in = folder.listed
    skipped = dict(folder.skipped)
    if tally is not None:
        result.frames_out = tally.frames_out
        for reason, n in tally.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    if folder.complete:
        skipped["complete_already"] = folder.complete
    result.skipped, result.seconds = skipped, round(seconds, 3)
    tried = len(folder.todo)
    if folder.error:
        result.status, result.error = "failed", folder.error
    elif not tried:
        result.status = "skipped" if folder.complete else "failed"
        result.error = "" if folder.complete else "no images in it"
    elif result.frames_out == 0 and folder.complete:
        result.status = "skipped"  # complete already; what is left cannot be used (skipped again, counted)
    elif result.frames_out == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(tally.skipped.items()))
        result.status, result.error = "failed", f"none of the {tried} image(s) could be used ({reasons})"
    else:
        result.status = "done"
    return result


def run_folders(folders, engine, settings, options, config, bar: Bar, record, written: Counter) -> None:
    """Every folder through Ray Data on the actor pool; ``record(result)`` for each folder as it is known,
    ``written[folder input]`` counts the images written so far (what an interrupted job reports)."""
    t0 = time.monotonic()
    remaining = [len(f.todo) for f in folders]
    seconds = [0.0] * len(folders)
    for folder in folders:
        if not folder.todo:
            result = folder_result(folder, None, 0.0)
            record(result)
            bar.input_done()
            bar.say(f"{folder.folder}: " + (result.error or "complete already, skipped (--force redoes it)"))

    def on_row(index: int, reason: str) -> None:
        bar.frames(1)
        written[str(folders[index].folder)] += not reason
        remaining[index] -= 1
        if remaining[index] == 0:
            seconds[index] = time.monotonic() - t0
            bar.input_done()

    todo_index = [i for i, f in enumerate(folders) if f.todo]
    tallies = run_images(
        [folders[i] for i in todo_index],
        engine,
        settings,
        options,
        workers=config.workers,
        cpus_per_worker=config.cpus_per_worker,
        gpus_per_worker=config.gpus_per_worker,
        on_row=lambda k, reason: on_row(todo_index[k], reason),
    )
    for i, tally in zip(todo_index, tallies, strict=True):
        folder = folders[i]
        result = folder_result(folder, tally, seconds[i])
        record(result)
        if result.status == "done":
            bar.say(f"{folder.output}: {result.frames_out} image(s) in {result.seconds:.1f} s")
        for message in tally.errors:
            bar.say(f"{folder.folder}: skipped: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check_settings_args(parser, args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    t0 = time.monotonic()
    try:
        pairs = plan(expand_inputs(args.inputs), args.output_dir)
        bags = [(i, o) for i, o in pairs if is_bag(i)]
        folders: list[FolderPlan] = []
        if len(bags) < len(pairs):  # --ply / --preview are the bags' --points / --colormap: intrinsics only here
            try:
                intrinsics = checked_intrinsics(args, PROG)
            except ToolExit as exc:
                return exc.status
            options = ImageJobOptions(output_spec(args), args.recursive, args.batch, intrinsics)
            folders = [plan_folder(i, o, options, args.force) for i, o in pairs if not is_bag(i)]
        args.output_dir.mkdir(parents=True, exist_ok=True)
        ray = connect(args.address, args.local_cpus, images=bool(folders))
    except (FleetError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    sigterm_as_interrupt()  # a scheduler's SIGTERM: the same clean stop as Ctrl-C
    gpus = float(ray.cluster_resources().get("GPU", 0)) if args.device in ("auto", "cuda") else 0.0
    gpus_per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = args.workers or (max(1, int(gpus / gpus_per_worker)) if gpus_per_worker else 1)
    config = FleetConfig(workers, gpus_per_worker, args.cpus_per_worker, args.retries, args.force, args.storage)
    engine, settings = EngineOptions.from_args(args), settings_from_args(args)
    todo = [(i, o) for i, o in bags if args.force or not is_complete(o)]
    estimates = {str(i): bag_frames(i, args.camera) for i, _ in todo}  # the bar counts the frames of work to do
    total = sum(estimates.values()) + sum(len(f.todo) for f in folders)
    _say(f"{len(bags)} bag(s) and {len(folders)} image folder(s) on {workers} worker(s) into {args.output_dir}")
    bar = Bar(total, len(pairs), args.quiet)
    results = {str(i): InputResult(str(i), str(o)) for i, o in pairs}  # in input order; "pending" until known
    written: Counter[str] = Counter()

    def record(result: InputResult) -> None:
        results[result.input] = result

    def bag_finished(result: InputResult) -> None:
        record(result)
        bar.frames(estimates.get(result.input, 0))
        bar.input_done()

    status = EXIT_OK
    try:
        if bags:
            run_fleet(bags, engine, settings, bag_options_from_args(args), config, log=bar.say, on_result=bag_finished)
        if folders:
            image_settings = replace(settings, points=False, color=False, colormap=False)  # files, not messages
            run_folders(folders, engine, image_settings, options, config, bar, record, written)
        status = EXIT_FAILURE if any(r.status == "failed" for r in results.values()) else EXIT_OK
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        for r in results.values():
            if r.status == "pending":  # bags in progress left nothing; a folder keeps the images it finished
                r.status, r.frames_out = "interrupted", written.get(r.input, 0)
        bar.say("interrupted; what was in progress was removed, complete outputs stay (a re-run skips them)")
    finally:
        bar.progress.close()
        ray.shutdown()
    report = summary_dict(list(results.values()), time.monotonic() - t0, status)
    n = report["inputs"]
    stopped = f", {n['interrupted']} interrupted" if n["interrupted"] else ""
    _say(
        f"{n['done']} done, {n['skipped']} complete already, {n['failed']} failed{stopped}; {report['frames_out']} "
        f"frames in {report['seconds']:.1f} s ({report['frames_per_second']:.2f} frames/s)"
    )
    for r in results.values():
        if r.status == "failed":
            _say(f"failed: {r.input}: {r.error}")
    if args.summary_json:
        text = json.dumps(report, indent=2) + "\n"
        if args.summary_json == "-":
            sys.stdout.write(text)
        else:
            Path(args.summary_json).write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
