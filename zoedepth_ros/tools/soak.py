"""``zoedepth-ros-soak``: run the node against the demo camera for a long time and report leaks and creep.

    zoedepth-ros-soak --random tiny-nk --minutes 30 --rate 5 --json soak.json     # a small random model, CPU
    zoedepth-ros-soak --checkpoint ZoeD_M12_NK --device cuda --minutes 120 --rate 30

Prints the RSS slope after warm-up (target < 0.5 MB/min), open fds and threads at start and end, latency
p50/p99 in the first and last window, and the node's drops by reason (see ``zoedepth_ros.benchmarks.soak``).
Exit status 0 when the run completed, 1 when a process of it failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from zoedepth_ros.benchmarks.soak import SoakConfig, render, run_soak
from zoedepth_ros.benchmarks.stats import json_safe

PROG = "zoedepth-ros-soak"
MAX_MINUTES = 24 * 60.0


def _random_checkpoint(choice: str, directory: Path) -> str:
    """Random weights in the official layout, written where the node can load them."""
    import torch

    from zoedepth_ros.model import ZoeDepth, official_state_dict, tiny_config
    from zoedepth_ros.model.config import PRESETS

    variant = choice.removeprefix("tiny-")
    torch.manual_seed(0)
    model = ZoeDepth(tiny_config(variant) if choice.startswith("tiny-") else PRESETS[variant]).eval()
    path = directory / f"random_{choice}.pt"
    torch.save({"model": official_state_dict(model)}, path)
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official name, .pt file or HF folder")
    weights.add_argument("--random", choices=("tiny-nk", "nk"), help="random weights in the official layout")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--minutes", type=float, default=30.0, help=f"length of the run (default 30, at most {MAX_MINUTES:g})"
    )
    p.add_argument("--warmup-minutes", type=float, default=2.0, help="excluded from the RSS slope (default 2)")
    p.add_argument("--window-minutes", type=float, default=5.0, help="latency windows at start and end (default 5)")
    p.add_argument("--rate", type=float, default=5.0, help="camera rate in Hz (default 5)")
    p.add_argument("--size", default="320x240", help="camera image WxH (default 320x240)")
    p.add_argument("--sample-seconds", type=float, default=10.0, help="how often RSS, fds, threads are read")
    p.add_argument("--json", type=Path, help="write the full report here")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if not args.rate > 0:
        parser.error("--rate must be positive")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WxH, got {args.size!r}")
    workdir = Path(tempfile.mkdtemp(prefix="zoedepth_soak_"))
    checkpoint = args.checkpoint or _random_checkpoint(args.random, workdir)
    cfg = SoakConfig(
        checkpoint=checkpoint,
        device=args.device,
        rate=args.rate,
        width=width,
        height=height,
        duration_s=60 * args.minutes,
        warmup_s=60 * args.warmup_minutes,
        window_s=60 * args.window_minutes,
        sample_s=args.sample_seconds,
    )
    try:
        report = run_soak(cfg, log=lambda m: print(m, file=sys.stderr, flush=True), workdir=workdir)
    except RuntimeError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(json_safe(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
