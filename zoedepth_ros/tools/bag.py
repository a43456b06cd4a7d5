"""``zoedepth-ros-bag INPUT OUTPUT``: depth for a rosbag2 recording, offline, with the node's engine and messages.

For every camera in INPUT (an image topic with NS/camera_info beside it; or those given with --camera NS) writes
NS/depth/image (32FC1), NS/depth/camera_info and NS/routing (zoedepth_ros/msg/DepthRouting), with --points
NS/points and with --colormap NS/depth/colormap, each with the input image's stamp, frame id and log time. Every
frame in range is processed. No ROS installation needed (rosbags reads and writes the bags).

    zoedepth-ros-bag run1/ run1_depth/ --points --batch 8
    zoedepth-ros-bag run1/ run1_depth/ --camera /front --start 30 --end 90 --every 2 --summary-json -

OUTPUT appears only when complete (written as .OUTPUT.partial-PID beside it, then renamed); an existing OUTPUT is
replaced only with --force. Exit status: 0 done, 1 failure, 2 bad input (arguments, unreadable or corrupt bag,
no camera, OUTPUT exists, checkpoint), 130 interrupted (Ctrl-C or SIGTERM: nothing is left under OUTPUT).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..offline.bag_job import BagOptions, run_bag
from ..offline.bag_reader import BagError
from ..offline.bag_writer import STORAGES, OutputError
from ..offline.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Progress,
    Summary,
    add_engine_arguments,
    check_settings_args,
    engine_from_args,
    number,
    run_guarded,
    settings_from_args,
    sigterm_as_interrupt,
)

PROG = "zoedepth-ros-bag"
MAX_BATCH = 256


COUNT = number(int, "an integer >= 1", lambda v: v >= 1)
BATCH = number(int, f"an integer 1..{MAX_BATCH}", lambda v: 1 <= v <= MAX_BATCH)
SECONDS = number(float, "seconds >= 0", lambda v: v >= 0)


def add_bag_options(bag) -> None:
    """How each bag is processed (zoedepth-ros-bag and zoedepth-ros-fleet share these)."""
    bag.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="NS",
        help="process the camera in namespace NS (NS/image, NS/image_raw or .../compressed, and NS/camera_info); "
        "repeatable (default: every camera found)",
    )
    bag.add_argument("--start", type=SECONDS, metavar="S", help="begin S seconds after the start of the bag")
    bag.add_argument("--end", type=SECONDS, metavar="S", help="stop S seconds after the start of the bag")
    bag.add_argument("--every", type=COUNT, default=1, metavar="N", help="every N-th image of each camera")
    bag.add_argument(
        "--batch",
        type=BATCH,
        default=4,
        metavar="N",
        help="images per forward pass; images of several cameras of the same size share one (default: 4)",
    )
    bag.add_argument(
        "--camera-info-tolerance",
        type=SECONDS,
        default=0.0,
        metavar="S",
        help="an image without a CameraInfo of its exact stamp uses the closest one within S seconds "
        "(default 0: exact stamps only)",
    )
    bag.add_argument("--storage", choices=STORAGES, help="storage of OUTPUT (default: that of INPUT)")
    bag.add_argument("--copy-input", action="store_true", help="also copy every input topic (in range) to OUTPUT")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, metavar="INPUT", help="rosbag2 folder (mcap or sqlite3), or one .mcap / .db3")
    p.add_argument("output", type=Path, metavar="OUTPUT", help="the new bag folder")
    bag = p.add_argument_group("bag")
    add_bag_options(bag)
    bag.add_argument("--force", action="store_true", help="replace an existing OUTPUT bag")
    bag.add_argument("--summary-json", metavar="PATH", help="write a machine-readable summary to PATH (- for stdout)")
    bag.add_argument("--quiet", action="store_true", help="no progress bar or lines (errors and summary still print)")
    add_engine_arguments(p)
    return p


def _log(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def bag_options_from_args(args: argparse.Namespace) -> BagOptions:
    return BagOptions(
        cameras=tuple(args.camera),
        start=args.start,
        end=args.end,
        every=args.every,
        batch=args.batch,
        copy_input=args.copy_input,
        camera_info_tolerance=args.camera_info_tolerance,
    )


def run(args: argparse.Namespace, summary: Summary) -> None:
    """Everything after argument parsing; raises BagError / OutputError / ToolExit for bad input."""
    progress: list[Progress] = []

    def make_progress(total: int | None) -> Progress:
        progress.append(Progress(total, PROG, disable=args.quiet))
        return progress[-1]

    def log(line: str) -> None:
        if progress and not progress[-1].disable:
            progress[-1].write(f"{PROG}: {line}")
        else:
            _log(line)

    run_bag(
        args.input,
        args.output,
        lambda: engine_from_args(args, PROG, info=_log if not args.quiet else (lambda line: None), warn=_log),
        settings_from_args(args),
        bag_options_from_args(args),
        summary,
        storage=args.storage,
        force=args.force,
        log=log,
        progress=make_progress,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_settings_args(parser, args)
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error(f"--end ({args.end:g}) must be after --start ({args.start:g})")
    summary = Summary(PROG, str(args.input), str(args.output))
    sigterm_as_interrupt()
    status, error = run_guarded(
        PROG,
        lambda: run(args, summary),
        interrupted=lambda: f"interrupted; nothing written to {args.output} (the partial bag was removed)",
        bad_input=(BagError, OutputError),
    )
    show = status in (EXIT_OK, EXIT_INTERRUPTED) or summary.frames_in > 0
    return summary.report(status, error, args.summary_json, show=show)


if __name__ == "__main__":
    sys.exit(main())
