"""Bags on a Ray cluster: one engine per worker actor, loaded once; Ray restarts dead workers, we retry their bag.
(Image folders go through Ray Data: :mod:`.fleet_images`.)

Scheduling, placement, restarts and the dashboard are Ray's (actors with ``max_restarts``); this module only keeps
one bag per worker at a time, retries a bag whose worker died (``RayActorError``) on the next free worker, and
reports. A bag is a whole unit (its image/CameraInfo pairing is sequential) and is written exactly as
``zoedepth-ros-bag`` writes it, through the same ``run_bag``: under ``.NAME.partial-PID`` and renamed when
complete, so a killed worker leaves no output; the driver removes what a dead worker left. Bad input (a corrupt
bag, no camera) fails that bag alone. Outputs already complete are skipped, so a re-run finishes a job.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..engine.pipeline import Settings
from .bag_job import BagOptions
from .common import EngineOptions

BAG_SUFFIXES = (".mcap", ".db3")
WORKER_NAME = "zoedepth-fleet-worker-{}"  # what the Ray dashboard shows
RESTART_WAIT_S = 600.0  # how long a dead worker may take to come back (Ray restarts it; it reloads the model)


class FleetError(ValueError):
    """Bad fleet input (no inputs, an input that is neither a bag nor a folder, an output folder inside an input)."""


@dataclass
class InputResult:
    """One input's outcome, as the summary reports it."""

    input: str
    output: str
    status: str = "pending"  # done, skipped (complete already), failed, interrupted
    error: str = ""
    frames_in: int = 0
    frames_out: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    worker: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def is_input(path: Path) -> bool:
    """A rosbag2 recording, or a folder (of images: one without metadata.yaml)."""
    return is_bag(path) or path.is_dir()


def expand_inputs(items: Sequence[str]) -> list[Path]:
    """Paths, glob patterns (``runs/*/``) and ``@list.txt`` files (one input per line, ``#`` comments), in order,
    without duplicates. FleetError for an entry that matches nothing or is neither a bag nor a folder."""
    found: list[Path] = []
    for item in items:
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            entries = [line.split("#")[0].strip() for line in lines]
            found += expand_inputs([e for e in entries if e])
            continue
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise FleetError(f"{item!r} matches nothing")
        for m in matches:
            path = Path(m)
            if not path.exists():
                raise FleetError(f"{m}: no such file or folder")
            if not is_input(path):
                raise FleetError(
                    f"{m}: neither a rosbag2 recording (a folder with metadata.yaml, or a .mcap / .db3 file) nor a "
                    "folder of images"
                )
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def output_for(path: Path, output_dir: Path) -> Path:
    """``DIR/<name>``: the bag folder's name, or a single file's stem."""
    return output_dir / (path.stem if path.is_file() else path.name)


def plan(inputs: Sequence[Path], output_dir: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs; FleetError when two inputs would write the same output or one overlaps another."""
    pairs, seen = [], {}
    for path in inputs:
        out = output_for(path, output_dir)
        if out in seen:
            raise FleetError(f"{seen[out]} and {path} would both write {out}; give them different names")
        src, dst = path.resolve(), out.resolve()
        if dst == src or src in dst.parents or dst in src.parents:
            raise FleetError(f"the output {out} and the input {path} overlap; use another --output-dir")
        seen[out] = path
        pairs.append((path, out))
    return pairs


def bag_frames(path: Path, cameras: Sequence[str] = ()) -> int:
    """The camera images ``path`` holds (the progress bar's total; 0 for a bag the driver cannot read: its worker
    will say why)."""
    from .bag_reader import BagSource, discover

    try:
        with BagSource(path) as source:
            topics = source.topics()
            return sum(topics[c.image_topic][1] for c in discover(topics, cameras))
    except Exception:  # a corrupt bag fails in its worker, with the reason
        return 0


def is_complete(output: Path) -> bool:
    """A bag that ``run_bag`` renamed into place (it only ever renames a finished one)."""
    return output.is_dir() and (output / "metadata.yaml").is_file()


def remove_partials(output: Path) -> list[Path]:
    """What writers of ``output`` left behind (``.NAME.partial-PID``): only call with no writer running."""
    leftovers = sorted(output.parent.glob(f".{output.name}.partial-*"))
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return leftovers


def use_threads(cpus: float) -> None:
    """Compute threads for a worker given ``cpus``: its share of the machine, whatever Ray reserved for it (Ray's
    default is the floor of the reservation, and the image path reserves less to leave room for decoding)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))


class DepthWorker:
    """A Ray actor's body: one engine, opened once, serving bag after bag (plain class; ``ray.remote`` wraps it)."""

    def __init__(self, options: EngineOptions, name: str, cpus: float = 1.0) -> None:
        self.name = name
        use_threads(cpus)
        self.engine = options.open(info=lambda line: None, warn=lambda line: print(f"{name}: {line}", flush=True))

    def pid(self) -> int:
        return os.getpid()

    def process(
        self, input_path: str, output_path: str, settings: Settings, options: BagOptions, storage: str | None
    ) -> dict[str, Any]:
        """One bag; returns the summary's dict (exit_status 0, or 2 with the error for bad input)."""
        from .bag_job import run_bag
        from .bag_reader import BagError
        from .bag_writer import OutputError
        from .common import Summary

        summary = Summary("zoedepth-ros-fleet", input_path, output_path)
        try:
            run_bag(
                Path(input_path), Path(output_path), lambda: self.engine, settings, options, summary, storage=storage
            )
        except (BagError, OutputError, ValueError) as e:
            summary.finish(2, (str(e).strip().splitlines() or [""])[0])
            return {**summary.as_dict(), "pid": os.getpid()}
        summary.finish(0)
        return {**summary.as_dict(), "pid": os.getpid()}


@dataclass
class FleetConfig:
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    retries: int = 2  # further attempts of a bag whose worker died
    force: bool = False  # redo complete outputs
    storage: str | None = None


def _record(result: InputResult, d: dict[str, Any]) -> None:
    result.frames_in, result.frames_out, result.skipped = d["frames_in"], d["frames_out"], d["skipped"]
    if d["exit_status"] == 0:
        result.status = "done"
    else:
        result.status, result.error = "failed", d["error"]


def run_fleet(
    pairs: Sequence[tuple[Path, Path]],
    engine_options: EngineOptions,
    settings: Settings,
    bag_options: BagOptions,
    config: FleetConfig,
    *,
    log: Callable[[str], None] = print,
    on_start: Callable[[list], None] | None = None,
    on_result: Callable[[InputResult], None] = lambda result: None,
) -> list[InputResult]:
    """Process every (input, output) on ``config.workers`` actors of an initialised Ray; results in input order.

    ``on_start(actors)`` is called once the actors exist (tests use it to kill one), ``on_result`` as each bag is
    finished (done, failed or complete already). Ctrl-C kills the actors, removes what they were writing and
    re-raises KeyboardInterrupt.
    """
    import ray
    from ray.exceptions import RayActorError

    results = [InputResult(str(i), str(o)) for i, o in pairs]
    for _, out in pairs:
        out.parent.mkdir(parents=True, exist_ok=True)
    queue: deque[int] = deque()
    for index, (_, out) in enumerate(pairs):
        if is_complete(out) and not config.force:
            results[index].status = "skipped"
            log(f"{out}: complete already, skipped (--force redoes it)")
            on_result(results[index])
        else:
            remove_partials(out)  # a previous, killed job's
            queue.append(index)
    if not queue:
        return results
    count = max(1, min(config.workers, len(queue)))
    actor_class = ray.remote(DepthWorker)
    resources = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker}
    names = [WORKER_NAME.format(i) for i in range(count)]
    actors = [
        actor_class.options(name=n, max_restarts=-1, max_task_retries=0, **resources).remote(
            engine_options, n, config.cpus_per_worker
        )
        for n in names
    ]
    if on_start is not None:
        on_start(actors)
    idle = list(range(count))
    running: dict[Any, tuple[int, int, float]] = {}  # ref -> (input index, worker index, start time)
    probing: dict[Any, tuple[int, float]] = {}  # ref of a pid() call -> (worker, first probe): a dead worker's return
    try:
        while queue or running:
            while idle and queue:
                index, worker = queue.popleft(), idle.pop(0)
                src, out = pairs[index]
                # absolute: a worker on another node (or in a `ray start` cluster) has another working directory
                src_abs, out_abs = str(src.absolute()), str(out.absolute())
                ref = actors[worker].process.remote(src_abs, out_abs, settings, bag_options, config.storage)
                running[ref] = (index, worker, time.monotonic())
            if not running and not probing:
                break  # every worker is gone (cannot happen with max_restarts=-1, but never spin)
            done, _ = ray.wait([*running, *probing], num_returns=1, timeout=1.0)
            for ref in done:
                if ref in probing:
                    worker, since = probing.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(worker)  # restarted by Ray, engine loaded: back to work
                    except RayActorError:
                        if time.monotonic() - since > RESTART_WAIT_S:
                            log(f"{names[worker]} did not come back within {RESTART_WAIT_S:.0f} s; going on without it")
                        else:
                            time.sleep(0.5)
                            probing[actors[worker].pid.remote()] = (worker, since)
                    continue
                index, worker, t0 = running.pop(ref)
                result, out = results[index], pairs[index][1]
                result.worker, result.seconds = names[worker], time.monotonic() - t0
                try:
                    d = ray.get(ref)
                except RayActorError as e:
                    # the worker died with this bag (killed, out of memory): Ray restarts it; the bag goes back
                    probing[actors[worker].pid.remote()] = (worker, time.monotonic())
                    remove_partials(out)
                    if result.retries < config.retries:
                        result.retries += 1
                        queue.append(index)
                        log(f"{pairs[index][0]}: worker {names[worker]} died ({type(e).__name__}); retrying")
                    else:
                        result.status, result.error = "failed", f"worker died {result.retries + 1} times"
                        log(f"{pairs[index][0]}: failed: {result.error}")
                        on_result(result)
                    continue
                except Exception as e:
                    # raised inside the worker and not bad input (a bug, a full disk): this bag fails
                    idle.append(worker)
                    remove_partials(out)
                    cause = getattr(e, "cause", None) or e
                    result.status = "failed"
                    result.error = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}"[:300]
                    log(f"{pairs[index][0]}: failed: {result.error}")
                    on_result(result)
                    continue
                idle.append(worker)
                _record(result, d)
                if result.status == "done":
                    log(f"{out}: {d['frames_out']} frames in {result.seconds:.1f} s ({names[worker]})")
                else:
                    remove_partials(out)
                    log(f"{pairs[index][0]}: failed: {result.error}")
                on_result(result)
        for index in queue:  # only when every worker is gone
            results[index].status, results[index].error = "failed", "no worker left"
    except KeyboardInterrupt:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        in_progress = [pairs[index][1] for index, _, _ in running.values()]
        deadline = time.monotonic() + 10.0  # ray.kill returns before the process is gone: sweep until quiet
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            quiet = 0 if any(remove_partials(out) for out in in_progress) else quiet + 1
            time.sleep(0.2)
        raise
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return results
