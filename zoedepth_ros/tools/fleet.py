"""``zoedepth-ros-fleet INPUT... --output-dir DIR``: zoedepth-ros-bag over many bags on a Ray cluster.

Each INPUT is a rosbag2 recording (a folder, or one .mcap / .db3 file), a glob (quote it: ``'runs/*/'``) or
``@list.txt`` (one per line). Every bag becomes ``DIR/<name>``, exactly what ``zoedepth-ros-bag INPUT DIR/<name>``
writes, with the same options. Ray runs one worker actor per GPU (or ``--workers`` CPU actors), each holding one
engine loaded once; a worker that dies is restarted by Ray and its bag retried elsewhere, nothing partial is left;
a bad bag fails alone; complete outputs are skipped, so re-running a job finishes it.

``--address auto`` (default) joins the cluster that ``ray start --head`` started on this machine (or
``$RAY_ADDRESS``), else starts a local one; ``local`` always starts a local one; ``ray://HOST:10001`` is a remote
cluster's client address. Exit status: 0 every bag done or complete already, 1 some failed, 2 bad arguments or
inputs, 130 interrupted (the bags in progress leave nothing behind).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..offline.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EngineOptions,
    add_engine_arguments,
    check_settings_args,
    number,
    settings_from_args,
)
from ..offline.fleet import FleetConfig, FleetError, expand_inputs, plan, run_fleet
from .bag import add_bag_options, bag_options_from_args

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
    fleet.add_argument("--summary-json", metavar="PATH", help="per-bag and total figures as JSON (- for stdout)")
    bag = p.add_argument_group("bag (as zoedepth-ros-bag)")
    add_bag_options(bag)
    add_engine_arguments(p)
    return p


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def connect(address: str, local_cpus: int | None):
    """Ray, initialised: a running cluster (auto / ray://), else a local instance; FleetError without Ray."""
    try:
        import ray
    except ImportError:
        raise FleetError(f"{PROG} needs Ray: pip install 'zoedepth_ros[fleet]' (or pip install ray)") from None
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


def summary_dict(results, seconds: float, status: int) -> dict:
    frames = sum(r.frames_out for r in results)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "pending")}
    return {
        "tool": PROG,
        "exit_status": status,
        "seconds": round(seconds, 3),
        "frames_out": frames,
        "frames_per_second": round(frames / seconds, 3) if seconds > 0 else 0.0,
        "inputs": counts,
        "per_input": [r.as_dict() for r in results],
    }


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
        args.output_dir.mkdir(parents=True, exist_ok=True)
        ray = connect(args.address, args.local_cpus)
    except (FleetError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    gpus = float(ray.cluster_resources().get("GPU", 0)) if args.device in ("auto", "cuda") else 0.0
    gpus_per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = args.workers or (max(1, int(gpus / gpus_per_worker)) if gpus_per_worker else 1)
    config = FleetConfig(workers, gpus_per_worker, args.cpus_per_worker, args.retries, args.force, args.storage)
    engine = EngineOptions.from_args(args)
    _say(f"{len(pairs)} bag(s) on {workers} worker(s) into {args.output_dir}")
    status, results = EXIT_OK, []
    try:
        results = run_fleet(pairs, engine, settings_from_args(args), bag_options_from_args(args), config, log=_say)
        status = EXIT_FAILURE if any(r.status == "failed" for r in results) else EXIT_OK
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        _say("interrupted; the bags in progress were removed, complete ones stay (a re-run skips them)")
    finally:
        ray.shutdown()
    seconds = time.monotonic() - t0
    report = summary_dict(results, seconds, status)
    n = report["inputs"]
    _say(
        f"{n['done']} done, {n['skipped']} complete already, {n['failed']} failed; {report['frames_out']} frames "
        f"in {seconds:.1f} s ({report['frames_per_second']:.2f} frames/s)"
    )
    for r in results:
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
