"""Image folders on a Ray cluster through Ray Data: CPU tasks decode, an actor pool (one engine each) computes depth,
CPU tasks write the files; the files are exactly ``zoedepth-ros-predict FOLDER --output DIR/<name>``'s.

The stages stream, so decoding and file writing scale on the cluster's CPUs while the actors keep their devices
busy. Ray Data restarts a dead actor and retries its batch (its default for actor pools); a file is written aside and
renamed, so a killed writer leaves no partial file, and the driver sweeps what killed writers left aside. An image
that cannot be used is skipped and counted, as predict does; an image whose files all exist is not redone, so a
re-run finishes an interrupted job.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.intrinsics import CameraInfoError, Intrinsics
from ..engine.pipeline import FrameError, FrameInput, Settings, batch_key
from .common import EngineOptions
from .depth_files import Calibration, DepthFileError
from .fleet import use_threads
from .image_files import InputError, decode_image, is_video, list_folder
from .image_outputs import FixedIntrinsics, OutputSpec, looks_like_output, nominal_intrinsics

PART_GLOB = ".*.part"  # what depth_files' atomic writers leave when killed


@dataclass(frozen=True)
class ImageJobOptions:
    """How every image folder is processed (zoedepth-ros-predict's file options)."""

    outputs: OutputSpec = field(default_factory=OutputSpec)
    recursive: bool = False
    batch: int = 4
    intrinsics: Calibration | FixedIntrinsics | None = None  # for the PLY


@dataclass
class FolderPlan:
    """One input folder: the images still to do (path, output base) and what was decided before any work."""

    folder: Path
    output: Path
    todo: list[tuple[Path, Path]]
    listed: int = 0  # image and video files found (outputs-like names left out)
    complete: int = 0  # images whose files all exist already
    skipped: Counter = field(default_factory=Counter)  # reason -> count, decided on the driver (videos)
    error: str = ""  # the whole folder fails (two images writing the same files)


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and not (path / "metadata.yaml").is_file()


def plan_folder(folder: Path, output: Path, options: ImageJobOptions, force: bool) -> FolderPlan:
    """What to do for ``folder`` (OSError when it cannot be listed)."""
    files = list_folder(folder, options.recursive, looks_like_output)
    result = FolderPlan(folder, output, [], listed=len(files))
    owners: dict[Path, Path] = {}
    for path in files:
        if is_video(path):  # frames of a video are sequential work: zoedepth-ros-predict reads them
            result.skipped["video"] += 1
            continue
        base = (output / path.relative_to(folder)).with_suffix("")
        other = owners.setdefault(base, path)
        if other != path:
            result.error = f"{other} and {path} would write the same files ({base.name}_depth...)"
            result.todo = []
            return result
        if not force and options.outputs.is_complete(base):
            result.complete += 1
        else:
            result.todo.append((path, base))
    return result


# --------------------------------------------------------------------------------------------- the three stages


def _error_columns(n: int) -> dict[str, np.ndarray]:
    return {"reason": np.array([""] * n, dtype=object), "message": np.array([""] * n, dtype=object)}


def decode_rows(batch: dict[str, np.ndarray], options: ImageJobOptions) -> dict[str, np.ndarray]:
    """CPU stage: each row's file decoded as the node would take it (pixels as bytes: sizes and dtypes vary)."""
    n = len(batch["path"])
    out = {key: batch[key] for key in ("input", "path", "base")}
    out.update(_error_columns(n))
    pixels, shapes, dtypes, encodings, intr = [], [], [], [], []
    for i, path in enumerate(batch["path"]):
        raw, encoding, k = np.zeros(0, np.uint8), "", (0.0, 0.0, 0.0, 0.0)
        try:
            decoded = decode_image(Path(path))
            raw, encoding = decoded.raw, decoded.encoding
            if options.outputs.ply and options.intrinsics is not None:
                got, _ = options.intrinsics.for_image(*decoded.size)
                k = (got.fx, got.fy, got.cx, got.cy)
        except InputError as exc:
            out["reason"][i], out["message"][i] = exc.reason, str(exc)
        except CameraInfoError as exc:
            out["reason"][i], out["message"][i] = "intrinsics_mismatch", str(exc)
        pixels.append(raw.tobytes())
        shapes.append(list(raw.shape) + [0] * (3 - raw.ndim))
        dtypes.append(raw.dtype.str)
        encodings.append(encoding)
        intr.append(k)
    out.update(
        pixels=np.array(pixels, dtype=object),
        shape=np.array(shapes, dtype=np.int64),
        dtype=np.array(dtypes, dtype=object),
        encoding=np.array(encodings, dtype=object),
        k=np.array(intr, dtype=np.float64),
    )
    return out


def _raw(batch: dict[str, np.ndarray], i: int) -> np.ndarray:
    shape = [int(s) for s in batch["shape"][i] if s]
    return np.frombuffer(batch["pixels"][i], dtype=np.dtype(batch["dtype"][i])).reshape(shape)


class DepthActor:
    """Actor-pool stage: one engine per actor, opened once; rows of one image size share a forward."""

    def __init__(
        self, engine_options: EngineOptions, settings: Settings, options: ImageJobOptions, cpus: float = 1.0
    ) -> None:
        use_threads(cpus)
        self.engine = engine_options.open(info=lambda line: None, warn=lambda line: print(line, flush=True))
        self.settings, self.options = settings, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["path"])
        out = {key: batch[key] for key in ("input", "path", "base", "reason", "message", "encoding")}
        out["reason"], out["message"] = out["reason"].copy(), out["message"].copy()
        depth = [b""] * n
        meta = np.zeros((n, 6), dtype=np.float64)  # height, width, fx, fy, cx, cy of the depth image
        domains = [""] * n
        groups: dict[tuple, list[tuple[int, FrameInput]]] = {}
        for i in range(n):
            if out["reason"][i]:
                continue
            raw = _raw(batch, i)
            height, width = raw.shape[:2]
            fx = batch["k"][i][0]
            intr = Intrinsics(*batch["k"][i], width, height) if fx else nominal_intrinsics(width, height)
            frame = FrameInput(raw, batch["encoding"][i], intr, self.settings)
            groups.setdefault(batch_key(frame), []).append((i, frame))
        for members in groups.values():
            for i, result in self._run(members):
                if isinstance(result, tuple):
                    out["reason"][i], out["message"][i] = result
                    continue
                k = result.intrinsics
                depth[i], domains[i] = result.depth, result.domain
                meta[i] = (result.height, result.width, k.fx, k.fy, k.cx, k.cy)
        out.update(depth=np.array(depth, dtype=object), meta=meta, domain=np.array(domains, dtype=object))
        if self.options.outputs.ply and self.options.outputs.color:  # the writer colours the cloud from the image
            out.update({key: batch[key] for key in ("pixels", "shape", "dtype")})
        return out

    def _run(self, members: list[tuple[int, FrameInput]]) -> Iterator[tuple[int, Any]]:
        """(row, DepthFrame) or (row, (reason, message)) for every member; a device failure is tried once more,
        as zoedepth-ros-predict does, and an unexpected error fails these rows only."""
        from ..engine import FrameDropped

        pending, tries = list(members), 0
        while pending:
            try:
                frames = self.engine.results(self.engine.submit_batch([f for _, f in pending]))
            except FrameError as exc:
                i, _ = pending.pop(exc.index)
                yield i, ("bad_frame", str(exc))
                continue
            except FrameDropped as exc:
                tries += 1
                if tries < 2:
                    continue
                for i, _ in pending:
                    yield i, ("device_failure", f"{exc.kind}: {exc}")
                return
            except Exception as exc:  # a bug or a broken device: these rows fail, the job goes on
                line = traceback.format_exception_only(type(exc), exc)[-1].strip()
                for i, _ in pending:
                    yield i, ("error", line[:300])
                return
            for (i, _), frame in zip(pending, frames, strict=True):
                yield i, frame
            return


def write_rows(batch: dict[str, np.ndarray], options: ImageJobOptions) -> dict[str, np.ndarray]:
    """CPU stage: each row's files; returns per row what the driver counts."""
    n = len(batch["path"])
    out = {key: batch[key] for key in ("input", "path", "domain")}
    reason, message = batch["reason"].copy(), batch["message"].copy()
    lost = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if reason[i]:
            continue
        height, width, fx, fy, cx, cy = batch["meta"][i]
        height, width = int(height), int(width)
        depth = np.frombuffer(batch["depth"][i], dtype=np.float32).reshape(height, width).copy()  # writable
        image = (_raw(batch, i), batch["encoding"][i]) if "pixels" in batch else None
        try:
            intrinsics = Intrinsics(fx, fy, cx, cy, width, height)
            lost[i] = options.outputs.write(Path(batch["base"][i]), depth, intrinsics, image)
        except (DepthFileError, OSError) as exc:
            reason[i], message[i] = "write_failed", str(exc)
    out.update(reason=reason, message=message, lost=lost)
    return out


# --------------------------------------------------------------------------------------------- the driver


@dataclass
class FolderTally:
    """What came back for one folder."""

    frames_out: int = 0
    skipped: Counter = field(default_factory=Counter)
    domains: Counter = field(default_factory=Counter)
    beyond_png16: int = 0
    errors: list[str] = field(default_factory=list)  # the first few skip messages, for the log


def sweep(outputs: Sequence[Path]) -> int:
    """Remove what killed writers left aside under ``outputs`` (only call with no writer running)."""
    count = 0
    for output in outputs:
        if output.is_dir():
            for leftover in output.rglob(PART_GLOB):
                leftover.unlink(missing_ok=True)
                count += 1
    return count


def remove_incomplete(plans: Sequence[FolderPlan], spec: OutputSpec) -> int:
    """After an interruption: an image with some but not all of its files loses them (a re-run redoes it)."""
    removed = 0
    for plan in plans:
        for _, base in plan.todo:
            present = [p for p in spec.paths(base) if p.exists()]
            if present and len(present) < len(spec.tails()):
                for p in present:
                    p.unlink(missing_ok=True)
                removed += 1
    return removed


def reservations(cluster_cpus: float, workers: int, cpus_per_worker: float) -> tuple[float, dict[str, float]]:
    """(CPUs Ray reserves per depth actor, the decode and write stages' remote args).

    Decoding and writing are light tasks of half a CPU. Actors that would take every CPU of the cluster (one CPU
    worker holding the machine) reserve one CPU less between them, or the light stages could never be scheduled;
    their threads still follow ``cpus_per_worker`` (``use_threads``). The light stages' reservation differs from
    the actors', so Ray Data does not fuse decoding into the actors: it stays on CPU workers, in parallel with the
    forwards.
    """
    actor_cpus = cpus_per_worker
    if workers * cpus_per_worker > cluster_cpus - 1:
        actor_cpus = max(0.1, (cluster_cpus - 1) / workers)
    light = 0.5 if actor_cpus != 0.5 else 0.25
    return round(actor_cpus, 3), {"num_cpus": light}


def run_images(
    plans: Sequence[FolderPlan],
    engine_options: EngineOptions,
    settings: Settings,
    options: ImageJobOptions,
    *,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    on_row: Callable[[int, str], None] = lambda plan, reason: None,
) -> list[FolderTally]:
    """Every plan's ``todo`` through the three stages on an initialised Ray; one FolderTally per plan.

    ``on_row(plan index, reason)`` is called as each image comes back ("" when its files were written).
    Ctrl-C stops the stages, removes what was being written and re-raises KeyboardInterrupt.
    """
    import ray

    tallies = [FolderTally() for _ in plans]
    rows = [
        {"input": index, "path": str(path.absolute()), "base": str(base.absolute())}  # workers' cwd differs
        for index, plan in enumerate(plans)
        for path, base in plan.todo
    ]
    if not rows:
        return tallies
    for plan in plans:
        for parent in sorted({base.parent for _, base in plan.todo}):
            parent.mkdir(parents=True, exist_ok=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the one progress bar
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset start/finish lines
    # enough blocks to keep every worker fed, few enough that a million images make blocks of ~1000 rows
    blocks = min(len(rows), max(2 * workers, min(len(rows) // options.batch, 1000)))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, blocks))
    actor_cpus, light = reservations(float(ray.cluster_resources().get("CPU", 1)), workers, cpus_per_worker)
    ds = ds.map_batches(decode_rows, fn_kwargs={"options": options}, batch_size=options.batch, **light)
    ds = ds.map_batches(
        DepthActor,
        fn_constructor_kwargs={
            "engine_options": engine_options,
            "settings": settings,
            "options": options,
            "cpus": cpus_per_worker,
        },
        batch_size=options.batch,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=actor_cpus,
        num_gpus=gpus_per_worker,
    )
    ds = ds.map_batches(write_rows, fn_kwargs={"options": options}, batch_size=options.batch, **light)
    outputs = [plan.output for plan in plans]
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for index, reason, message, domain, lost in zip(
                batch["input"], batch["reason"], batch["message"], batch["domain"], batch["lost"], strict=True
            ):
                tally = tallies[int(index)]
                if reason:
                    tally.skipped[reason] += 1
                    if len(tally.errors) < 5:
                        tally.errors.append(message)
                else:
                    tally.frames_out += 1
                    tally.domains[domain] += 1
                    tally.beyond_png16 += int(lost)
                on_row(int(index), str(reason))
    except KeyboardInterrupt:
        _stop_and_clean(plans, options.outputs)
        raise
    sweep(outputs)
    return tallies


def _stop_and_clean(plans: Sequence[FolderPlan], spec: OutputSpec) -> None:
    """Ctrl-C: give the stages a moment to be torn down, then remove what was in flight, until quiet."""
    outputs = [plan.output for plan in plans]
    deadline, quiet = time.monotonic() + 10.0, 0
    while quiet < 3 and time.monotonic() < deadline:
        quiet = 0 if sweep(outputs) else quiet + 1
        time.sleep(0.2)
    remove_incomplete(plans, spec)
