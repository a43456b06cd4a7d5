"""``zoedepth-ros-predict PATH...``: depth files for images, folders of images and videos, with the node's engine.

Every image goes through the same engine, settings and masking as the node's frames (``open_engine``,
``Engine.submit_batch``), so a depth file holds what ``depth/image`` would carry for that image; images of the same
size share a forward (``--batch``). The file formats are :mod:`zoedepth_ros.offline.depth_files`'; how files become
images is :mod:`zoedepth_ros.offline.image_files`'.

Output names: ``<stem>_depth.png|.npy|.tiff``, ``<stem>_depth_preview.png`` (``--preview``) and
``<stem>_points.ply`` (``--ply``); a video's frames are ``<stem>_f<frame index, 6 digits>_depth.png`` and so on.
They go beside each input, or under ``--output DIR`` (a folder's tree mirrored below it). Nothing is overwritten
without ``--force``, and a folder's files that look like these outputs are not taken as inputs.

Exit status: 0 done (files that could not be used are skipped, counted and named), 2 bad input (arguments,
paths, checkpoint, or not one frame could be used), 1 other failure (e.g. a disk full), 130 interrupted.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zoedepth_ros.engine.intrinsics import CameraInfoError
from zoedepth_ros.engine.pipeline import DepthFrame, FrameError, FrameInput, Settings, batch_key
from zoedepth_ros.offline.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    Progress,
    Summary,
    add_engine_arguments,
    check_settings_args,
    engine_from_args,
    fail,
    number,
    run_guarded,
    settings_from_args,
    sigterm_as_interrupt,
)
from zoedepth_ros.offline.depth_files import FORMATS, Calibration, DepthFileError, load_calibration
from zoedepth_ros.offline.image_files import (
    Decoded,
    InputError,
    decode_image,
    is_video,
    list_folder,
    require_opencv,
    video_frame_count,
    video_frames,
)
from zoedepth_ros.offline.image_outputs import (
    DEPTH_TAG,
    FixedIntrinsics,
    OutputSpec,
    looks_like_output,
    nominal_intrinsics,
    tagged,
)

PROG = "zoedepth-ros-predict"
DEFAULT_BATCH = 4

DESCRIPTION = """\
Metric depth for image files, folders of images and videos, with the same engine and settings as zoedepth_node.

PATH: image files (anything Pillow reads: png, jpg, tiff, bmp, webp, ...), folders of them (sorted by name;
--recursive for subfolders) and video files (mp4, avi, mov, mkv, ...; needs opencv-python-headless).
Greyscale images stay greyscale (mono8 / mono16, as the node takes them), the EXIF orientation is applied, and a
multi-frame file gives its first frame. Files that cannot be used are skipped, named and counted.
"""

EPILOG = """\
outputs, beside each input or under --output DIR (a folder input's tree is mirrored below DIR):
  <stem>_depth.png       16-bit PNG, millimetres, 0 = no depth (depth beyond 65.535 m is 0 too, counted)
  <stem>_depth.npy/.tiff float32 metres, NaN = no depth (--format npy / tiff)
  <stem>_depth_preview.png  the node's turbo colour map, near red, far blue, no depth black (--preview)
  <stem>_points.ply      binary PLY, x y z metres in the camera optical frame (+ r g b with --color) (--ply)
  a video's frames: <stem>_f000000_depth.png, ... (the number is the frame's index in the video)
intrinsics for --ply: --camera-info FILE.yaml (camera_calibration format; P is used, as ROS does; scaled to
the image size when the image is a resized one) or --fx --fy --cx --cy (pixels of the images as they are).
exit status: 0 done, 2 bad input (or no frame usable), 1 other failure, 130 interrupted.
"""


# ---------------------------------------------------------------------------------------------- arguments


POSITIVE = number(int, "a whole number >= 1", lambda v: v >= 1)
FINITE = number(float, "a finite number")
FOCAL = number(float, "a focal length > 0 (pixels)", lambda v: v > 0)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files, folders of images, videos")
    files = p.add_argument_group("files")
    files.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="write here instead of beside each input (made if needed)"
    )
    files.add_argument(
        "--format", choices=FORMATS, default="png16", help="depth file: png16 (mm), npy or tiff (m) (default: png16)"
    )
    files.add_argument(
        "--preview", dest="colormap", action="store_true", help="also write <stem>_depth_preview.png (= --colormap)"
    )
    files.add_argument(
        "--ply", dest="points", action="store_true", help="also write <stem>_points.ply; needs intrinsics (= --points)"
    )
    files.add_argument("-r", "--recursive", action="store_true", help="also take images in subfolders of folders")
    files.add_argument(
        "--every", type=POSITIVE, default=1, metavar="N", help="videos: every N-th frame, from the first"
    )
    files.add_argument(
        "--batch",
        type=POSITIVE,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"images of one size per forward (default: {DEFAULT_BATCH})",
    )
    files.add_argument("--force", action="store_true", help="overwrite output files that exist")
    files.add_argument("--summary-json", metavar="PATH", help="write a JSON summary of the run here (- for stdout)")
    add_intrinsics_arguments(p.add_argument_group("intrinsics (for --ply)"))
    add_engine_arguments(p)
    return p


def add_intrinsics_arguments(cam) -> None:
    """--camera-info or --fx --fy --cx --cy (zoedepth-ros-predict and zoedepth-ros-fleet share these)."""
    cam.add_argument("--camera-info", type=Path, metavar="FILE.yaml", help="a camera_calibration YAML file")
    cam.add_argument("--fx", type=FOCAL, metavar="PX", help="focal length x, pixels")
    cam.add_argument("--fy", type=FOCAL, metavar="PX", help="focal length y, pixels")
    cam.add_argument("--cx", type=FINITE, metavar="PX", help="principal point x, pixels")
    cam.add_argument("--cy", type=FINITE, metavar="PX", help="principal point y, pixels")


def intrinsics_source(args: argparse.Namespace, prog: str = PROG) -> Calibration | FixedIntrinsics | None:
    flags = {name: getattr(args, name) for name in ("fx", "fy", "cx", "cy")}
    given = [f"--{name}" for name, value in flags.items() if value is not None]
    if args.camera_info is not None and given:
        fail(prog, f"give either --camera-info or {' '.join(given)}, not both")
    if given and len(given) != 4:
        missing = [f"--{name}" for name, value in flags.items() if value is None]
        fail(prog, f"{' '.join(given)} also need {' '.join(missing)}")
    if given:
        return FixedIntrinsics(**flags)
    if args.camera_info is not None:
        try:
            return load_calibration(args.camera_info)
        except CameraInfoError as exc:
            fail(prog, str(exc))
    return None


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Item:
    """One input file and where its outputs go: ``base`` is the output path without the tail (``_depth.png``)."""

    path: Path
    base: Path
    video: bool


def find_inputs(args: argparse.Namespace, summary: Summary) -> list[Item]:
    """The input files in command-line order (folders sorted), each once, with their output bases."""
    items: list[Item] = []
    seen: set[Path] = set()
    ignored = 0

    def skip_output(name: str) -> bool:
        nonlocal ignored
        ours = looks_like_output(name)
        ignored += ours
        return ours

    for arg in args.paths:
        if arg.is_dir():
            try:
                files = list_folder(arg, args.recursive, skip_output)
            except OSError as exc:
                fail(PROG, f"cannot list {arg}: {exc.strerror or exc}")
            pairs = [(f, (args.output / f.relative_to(arg) if args.output else f).with_suffix("")) for f in files]
        elif arg.is_file():
            pairs = [(arg, (args.output / arg.name if args.output else arg).with_suffix(""))]
        else:
            fail(PROG, f"no such file or folder: {arg}")
        for path, base in pairs:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                items.append(Item(path, base, is_video(path)))
    if ignored:
        summary.extra["ignored_output_like_files"] = ignored
        print(f"{PROG}: left out {ignored} file(s) named like this tool's outputs (*_depth.png ...)", file=sys.stderr)
    return items


def output_spec(args: argparse.Namespace) -> OutputSpec:
    """The files this run writes for each image."""
    return OutputSpec(
        args.format, args.colormap, args.points, args.color, args.decimation, args.min_depth, args.max_depth
    )


def check_outputs(items: list[Item], args: argparse.Namespace) -> None:
    """Refuse two inputs writing the same files, and (without --force) files that exist."""
    owner: dict[tuple[Path, bool], Path] = {}
    for item in items:
        other = owner.setdefault((item.base, item.video), item.path)
        if other != item.path:
            fail(PROG, f"{other} and {item.path} would write the same files ({item.base.name}{DEPTH_TAG}...)")
    if args.force:
        return
    tails = output_spec(args).tails()
    existing: list[Path] = []
    for item in items:
        if item.video:  # frame numbers are not known yet: any frame's file of this run's kinds counts
            frames = glob.escape(str(item.base)) + "_f[0-9]*"
            existing += [Path(p) for p in sorted(glob.glob(frames)) if p.endswith(tuple(tails))]
        else:
            existing += [p for p in output_spec(args).paths(item.base) if p.exists()]
    if existing:
        fail(PROG, f"{len(existing)} output file(s) exist already, e.g. {existing[0]}; use --force to overwrite")


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Job:
    """A decoded frame on its way to the engine and its files."""

    name: str
    base: Path
    frame: FrameInput


class Batches:
    """Frames grouped by ``batch_key`` into batches of up to ``size``; at most ``2 * size`` frames wait at once
    (the oldest group goes early), so a folder of many image sizes cannot fill memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.groups: dict[tuple, list[Job]] = {}

    def add(self, job: Job) -> list[list[Job]]:
        """The batches that are ready now that ``job`` has arrived."""
        key = batch_key(job.frame)
        self.groups.setdefault(key, []).append(job)
        ready = [self.groups.pop(key)] if len(self.groups[key]) >= self.size else []
        while sum(len(g) for g in self.groups.values()) > 2 * self.size:
            ready.append(self.groups.pop(next(iter(self.groups))))
        return ready

    def drain(self) -> list[list[Job]]:
        """Every batch still waiting, oldest first."""
        ready = list(self.groups.values())
        self.groups.clear()
        return ready


class Run:
    """One invocation: frames in, batches through the engine, files out, every frame counted."""

    def __init__(self, args: argparse.Namespace, summary: Summary, intrinsics) -> None:
        self.args = args
        self.summary = summary
        self.intrinsics = intrinsics
        self.settings: Settings = replace(settings_from_args(args), points=False, color=False, colormap=False)
        self.progress: Progress | None = None
        self.notes: set[str] = set()
        self.beyond_png16 = 0
        self.heads: Counter[str] = Counter()
        self.engine = None
        self.outputs = output_spec(args)

    def say(self, line: str) -> None:
        text = f"{PROG}: {line}"
        if self.progress is not None:
            self.progress.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def note_once(self, line: str) -> None:
        if line not in self.notes:
            self.notes.add(line)
            self.say(line)

    def skip(self, name: str, reason: str, message: str) -> None:
        self.summary.skip(reason)
        self.say(f"skipped {name}: {message}")
        if self.progress is not None:
            self.progress.update()

    # -- frames in

    def job(self, name: str, base: Path, decoded: Decoded) -> Job | None:
        width, height = decoded.size
        intr = nominal_intrinsics(width, height)
        if self.args.points:
            try:
                intr, note = self.intrinsics.for_image(width, height)
            except CameraInfoError as exc:
                self.skip(name, "intrinsics_mismatch", str(exc))
                return None
            if note:
                self.note_once(f"note: {note}")
        return Job(name, base, FrameInput(decoded.raw, decoded.encoding, intr, self.settings))

    def jobs(self, items: list[Item]) -> Iterator[Job]:
        for item in items:
            if not item.video:
                self.summary.frames_in += 1
                try:
                    decoded = decode_image(item.path)
                except InputError as exc:
                    self.skip(str(item.path), exc.reason, str(exc))
                    continue
                job = self.job(str(item.path), item.base, decoded)
                if job is not None:
                    yield job
                continue
            try:
                for index, decoded in video_frames(item.path, self.args.every):
                    self.summary.frames_in += 1
                    name = f"{item.path} frame {index}"
                    if decoded is None:
                        self.skip(name, "unreadable_frame", "OpenCV could not decode this frame")
                        continue
                    job = self.job(name, tagged(item.base, f"_f{index:06d}"), decoded)
                    if job is not None:
                        yield job
            except InputError as exc:
                self.summary.frames_in += 1
                self.skip(str(item.path), exc.reason, str(exc))

    # -- the engine

    def submit(self, jobs: list[Job]):
        """(InFlight, the jobs in it), or None when none of them could be submitted (each skipped and counted)."""
        from zoedepth_ros.engine import FrameDropped

        retried = False
        while jobs:
            try:
                return self.engine.submit_batch([j.frame for j in jobs]), jobs
            except FrameError as exc:
                bad = jobs.pop(exc.index)
                self.skip(bad.name, "bad_frame", str(exc))
            except FrameDropped as exc:
                if retried:
                    self.give_up(jobs, exc)
                    return None
                retried = True
                self.say(f"device failure on a batch of {len(jobs)} ({exc.kind}); trying it once more")
        return None

    def finish(self, pending) -> None:
        """Wait for a submitted batch and write its files (a failed batch is run once more, then skipped)."""
        from zoedepth_ros.engine import FrameDropped

        retried = False
        while pending is not None:
            inflight, jobs = pending
            try:
                frames = self.engine.results(inflight)
            except FrameDropped as exc:
                if retried:
                    self.give_up(jobs, exc)
                    return
                retried = True
                self.say(f"device failure on a batch of {len(jobs)} ({exc.kind}); trying it once more")
                pending = self.submit(list(jobs))
                continue
            for job, frame in zip(jobs, frames, strict=True):
                self.write(job, frame)
            return

    def give_up(self, jobs: list[Job], exc) -> None:
        """A batch that failed on the device twice: every frame in it skipped."""
        for job in jobs:
            self.skip(job.name, "device_failure", f"{exc.kind}: {exc}")

    # -- files out

    def write(self, job: Job, frame: DepthFrame) -> None:
        depth = np.frombuffer(frame.depth, dtype=np.float32).reshape(frame.height, frame.width)
        try:
            lost = self.outputs.write(job.base, depth, frame.intrinsics, (job.frame.raw, job.frame.encoding))
        except DepthFileError as exc:
            fail(PROG, str(exc), EXIT_FAILURE)
        self.beyond_png16 += lost
        self.heads[frame.domain] += 1
        self.summary.frames_out += 1
        if self.progress is not None:
            self.progress.update()

    # -- all of it

    def __call__(self, items: list[Item]) -> int:
        args = self.args
        self.engine = engine_from_args(args, PROG, info=self.say, warn=self.say)
        self.summary.set_engine(self.engine)
        total = 0
        for item in items:
            count = video_frame_count(item.path) if item.video else 1
            total += -(-count // args.every) if count else 0
        batches = Batches(args.batch)
        pending = None
        with Progress(total or None, PROG) as self.progress:
            for job in self.jobs(items):
                for batch in batches.add(job):
                    submitted = self.submit(batch)
                    self.finish(pending)  # the previous batch's files are written while this one computes
                    pending = submitted
            for batch in batches.drain():
                submitted = self.submit(batch)
                self.finish(pending)
                pending = submitted
            self.finish(pending)
        self.progress = None
        self.summary.extra.update(format=args.format, domains=dict(sorted(self.heads.items())))
        if args.format == "png16":
            self.summary.extra["pixels_beyond_png16_range"] = self.beyond_png16
            if self.beyond_png16:
                self.say(
                    f"note: {self.beyond_png16} pixel(s) deeper than 65.535 m were written as 0 (no depth), the "
                    "most a 16-bit millimetre PNG holds; --format npy or tiff keeps them"
                )
        if self.summary.frames_out == 0 and self.summary.frames_in > 0:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.summary.skipped.items()))
            fail(PROG, f"none of the {self.summary.frames_in} frame(s) could be used ({reasons})")
        return EXIT_OK


def checked_intrinsics(args: argparse.Namespace, prog: str = PROG) -> Calibration | FixedIntrinsics | None:
    """The intrinsics the file options ask for, with their rules checked (ToolExit for bad input)."""
    intrinsics = intrinsics_source(args, prog)
    if args.points and intrinsics is None:
        fail(prog, "--ply needs the camera's intrinsics: --camera-info FILE.yaml or --fx --fy --cx --cy")
    if args.color and not args.points:
        fail(prog, "--color colours the PLY point cloud; use it with --ply")
    if intrinsics is not None and not args.points:
        print(f"{prog}: note: intrinsics are used only for --ply", file=sys.stderr)
    if isinstance(intrinsics, Calibration) and intrinsics.distorted and args.points:
        print(
            f"{prog}: note: {intrinsics.source} has distortion coefficients; the point cloud is exact for rectified "
            "images only (as depth_image_proc's)",
            file=sys.stderr,
        )
    return intrinsics


def run(args: argparse.Namespace, summary: Summary) -> int:
    """Check everything that can be checked before the model loads, then process all frames."""
    intrinsics = checked_intrinsics(args)
    items = find_inputs(args, summary)
    if not items:
        fail(PROG, f"no images or videos in {', '.join(map(str, args.paths))}")
    if any(item.video for item in items):
        try:
            require_opencv()
        except InputError as exc:
            fail(PROG, str(exc))
    check_outputs(items, args)
    for parent in sorted({item.base.parent for item in items}):
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(PROG, f"cannot make the output folder {parent}: {exc.strerror or exc}")
    return Run(args, summary, intrinsics)(items)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (tests call it directly)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check_settings_args(parser, args)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    output = str(args.output) if args.output else "beside each input"
    summary = Summary(tool=PROG, input=" ".join(map(str, args.paths)), output=output)
    sigterm_as_interrupt()  # a scheduler's SIGTERM: the same clean stop as Ctrl-C (every file written is complete)
    status, error = run_guarded(
        PROG,
        lambda: run(args, summary),
        interrupted=lambda: f"interrupted; the {summary.frames_out} frame(s) written are complete",
        failures=(RuntimeError, OSError, ValueError),  # torch / device failures outside a frame: one line
    )
    return summary.report(status, error, args.summary_json, show=summary.frames_in > 0)


if __name__ == "__main__":
    sys.exit(main())
