"""zoedepth-ros-bench: how fast ZoeDepth runs here, in every mode, against what users would run instead.

Sections (``--sections``, all by default):
  model     latency and throughput per precision x execution mode at each camera size (and the network at exactly
            384x512), each mode checked by the accuracy guard against fp32 on the same inputs;
  paths     image in, depth out: ours (best guarded mode) vs our eager fp32 with the official defaults (pad + flip)
            vs transformers' ZoeDepthForDepthEstimation with its default processing, as speed-up ratios;
  e2e       the node end to end over real DDS: a camera process at a set rate, the node, a timing subscriber;
  host      host-side cost per frame: conversions, cloud packing on one core, message building, publishing;
  bag       zoedepth-ros-bag on a synthetic bag vs the engine's model-only frames per second, same run and engine;
  cameras   1..N cameras at --e2e-size on one node vs one node each: depth rate, latency per camera, memory;
  backends  torch rungs vs onnxruntime (CPU provider here; CUDA and TensorRT on a GPU) at --backends-size, as
            speed ratios to fp32 eager with each one's max depth difference, plus the ONNX export and the memory
            of a default-options onnxruntime session (needs onnx, onnxscript, onnxruntime);
  fleet     zoedepth-ros-fleet (1 and 2 workers) vs zoedepth-ros-bag on each bag in turn, every process timed from
            start to exit, and a folder of the same frames through zoedepth-ros-predict vs the fleet (needs Ray).
Prints a table per section and the targets, and writes everything to ``--json``.

Weights: ``--checkpoint`` (an official name in the weights cache, a .pt or a transformers folder) or ``--random``
(random weights in the official layout: the same speed as the real ones; the guard then only shows numerical
behaviour on random weights, so run it with real weights before trusting a mode on a robot).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..benchmarks.reference import hf_compatible
from ..benchmarks.stats import json_safe
from ..engine.device import resolve_device
from ..engine.runtime import MODES
from ..model import PRECISIONS, PRESETS, CheckpointError, ZoeDepth, load, official_state_dict, tiny_config
from ..weights import WeightsError, resolve_checkpoint


def _size(text: str) -> tuple[int, int]:
    """ "640x480" -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes look like 640x480, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def _list(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return items

    return parse


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"camera counts look like 1,2,4, got {text!r}") from None
    if not counts or any(not 1 <= n <= 16 for n in counts):
        raise argparse.ArgumentTypeError(f"camera counts must be 1..16, got {text!r}")
    return counts


SECTIONS = ("model", "paths", "e2e", "host", "bag", "cameras", "backends", "fleet")
RANDOM_CHOICES = ("nk", "n", "k", "tiny-nk", "tiny-n", "tiny-k")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoedepth-ros-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="official name (ZoeD_M12_NK), .pt file or transformers folder")
    weights.add_argument(
        "--random",
        choices=RANDOM_CHOICES,
        default=None,
        help="random weights in the official layout (default: nk when no checkpoint is given)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--sizes",
        type=lambda t: [_size(s) for s in t.split(",")],
        default=[(480, 640), (720, 1280)],
        help="camera sizes WxH, comma-separated (default 640x480,1280x720; 512x384 adds the bare network)",
    )
    p.add_argument(
        "--precisions",
        type=_list(tuple(PRECISIONS)),
        default=None,
        help="default: fp32,bf16,fp16 on CUDA, fp32,bf16 on CPU",
    )
    p.add_argument(
        "--modes",
        type=_list(MODES),
        default=None,
        help="default: eager,cuda_graph on CUDA (add compile to try torch.compile), eager on CPU",
    )
    p.add_argument("--no-channels-last", action="store_true", help="keep convolution weights contiguous")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sections", type=_list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--no-transformers", action="store_true", help="skip the transformers comparison")
    p.add_argument("--e2e-size", type=_size, default=(480, 640))
    p.add_argument("--e2e-rate", type=float, default=60.0, help="camera rate in Hz")
    p.add_argument("--e2e-duration", type=float, default=10.0, help="measured seconds (after warm-up)")
    p.add_argument("--e2e-color", action="store_true", help="colour cloud (32-byte points)")
    p.add_argument("--host-iters", type=int, default=100)
    p.add_argument("--bag-frames", type=int, default=64, help="frames in the bag section's synthetic bag")
    p.add_argument("--bag-batch", type=int, default=4, help="zoedepth-ros-bag --batch in the bag section")
    p.add_argument(
        "--cameras-counts",
        type=_counts,
        default=(1, 2, 4),
        help="cameras section: camera counts, comma-separated (default 1,2,4; 1 is the memory baseline)",
    )
    p.add_argument("--cameras-rate", type=float, default=10.0, help="cameras section: Hz per camera")
    p.add_argument("--cameras-duration", type=float, default=10.0, help="cameras section: measured seconds per run")
    p.add_argument("--backends-size", type=_size, default=(480, 640), help="backends section: camera size")
    p.add_argument("--fleet-bags", type=int, default=4, help="fleet section: bags (and workers' inputs)")
    p.add_argument("--fleet-frames", type=int, default=8, help="fleet section: frames per bag")
    p.add_argument("--fleet-size", type=_size, default=(480, 640), help="fleet section: camera size")
    p.add_argument("--json", type=Path, help="write the full report here")
    return p


def _load_model(args, device: torch.device) -> tuple[ZoeDepth, dict[str, Any]]:
    if args.checkpoint:
        path = resolve_checkpoint(args.checkpoint)
        model = load(path, device=device)
        return model, {"weights": str(path), "variant": model.config.variant, "tiny": False}
    choice = args.random or "nk"
    tiny = choice.startswith("tiny-")
    variant = choice.removeprefix("tiny-")
    torch.manual_seed(0)
    # tiny: the nearest architecture transformers can also express, so the comparison runs
    config = hf_compatible(tiny_config(variant)) if tiny else PRESETS[variant]
    with torch.device(device):
        model = ZoeDepth(config).eval()
    return model, {"weights": f"random ({choice})", "variant": variant, "tiny": tiny}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def _environment(device: torch.device, info: dict[str, Any]) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        **info,
    }


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        title,
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The human-readable tables of a report."""
    env = report["environment"]
    parts = [
        f"zoedepth-ros-bench {env['date']}  {env['device_name']} ({env['device']})  torch {env['torch']}  "
        f"weights {env['weights']}"
    ]
    model = report.get("model")
    if model:
        rows = [
            [
                f"{r['width']}x{r['height']}",
                r["scope"],
                r["precision"],
                r["mode"],
                r.get("latency", {}).get("p50_ms"),
                r.get("latency", {}).get("p99_ms"),
                r.get("throughput_fps"),
                ("ok" if r["guard"]["passed"] else "FAIL") if "guard" in r else r.get("error", "")[:40],
                r["guard"]["mean_rel_diff"] if "guard" in r else None,
            ]
            for r in model["rows"]
        ]
        parts.append(
            _table(
                "(a) model latency, batch 1",
                ["size", "scope", "precision", "mode", "p50 ms", "p99 ms", "fps", "guard", "mean rel diff"],
                rows,
            )
        )
    paths = report.get("paths")
    if paths:
        rows = []
        for e in paths["sizes"]:
            hf = e.get("transformers_default", {})
            rows.append(
                [
                    f"{e['width']}x{e['height']}",
                    e["ours_mode"],
                    e["ours"]["p50_ms"],
                    e["official_defaults_fp32"]["p50_ms"],
                    hf.get("p50_ms"),
                    e["speedup"].get("official_defaults_fp32"),
                    e["speedup"].get("transformers_default"),
                ]
            )
        parts.append(
            _table(
                "(c) image -> depth, p50 ms and speed-up of ours",
                ["size", "ours", "ours ms", "official fp32 ms", "transformers ms", "x official", "x transformers"],
                rows,
            )
        )
    e2e = report.get("end_to_end")
    if e2e:
        if "depth" in e2e:
            d, pts = e2e["depth"], e2e["points"]
            rows = [
                [t, s.get("p50_ms"), s.get("p99_ms"), s.get("rate_hz"), s.get("received")]
                for t, s in (("depth/image", d), ("points", pts))
            ]
            drops = e2e["dropped"]
            parts.append(
                _table(
                    f"(b) end to end {e2e['width']}x{e2e['height']} at {e2e['rate_hz']} Hz, "
                    f"published {e2e['published_measured']}, latest-frame drops "
                    f"{drops['latest_frame_rule']}, other {drops['other']}",
                    ["topic", "p50 ms", "p99 ms", "rate Hz", "received"],
                    rows,
                )
            )
        else:
            parts.append(f"(b) end to end: {e2e.get('skipped') or e2e.get('error')}")
    host = report.get("host")
    if host:
        rows = []
        for label, item in host["sizes"].items():
            cloud = item["cloud"]
            t = item["total_ms"] or {}
            rows.append(
                [
                    label,
                    cloud["xyz"]["pack"]["p50_ms"],
                    cloud["xyzrgb"]["pack"]["p50_ms"],
                    (item["messages"].get("point_cloud_xyzrgb") or {}).get("p50_ms"),
                    (item["publish"].get("point_cloud_xyzrgb") or {}).get("p50_ms"),
                    t.get("xyz_gpu_cloud"),
                    t.get("xyz"),
                    t.get("xyzrgb"),
                ]
            )
        parts.append(
            _table(
                "(d) host-side cost per frame, p50 ms (cloud packing on one core)",
                [
                    "size",
                    "pack xyz",
                    "pack xyzrgb",
                    "build xyzrgb msg",
                    "publish xyzrgb",
                    "total xyz (GPU cloud)",
                    "total xyz",
                    "total xyzrgb",
                ],
                rows,
            )
        )
    bag = report.get("bag")
    if bag:
        parts.append(
            _table(
                f"(e) zoedepth-ros-bag, {bag['frames']} frames, batch {bag['batch']}, {bag['rung']}",
                ["size", "model-only fps", "tool fps", "overhead vs model", "host outside engine s"],
                [
                    [
                        f"{bag['width']}x{bag['height']}",
                        bag["model_only_fps"],
                        bag["tool_fps"],
                        f"{100 * bag['overhead_share']:.1f} %",
                        bag["host_outside_engine_s"],
                    ]
                ],
            )
        )
    cams = report.get("cameras")
    if cams:
        if "rows" in cams:
            from ..benchmarks.cameras import render as camera_rows

            c = cams["config"]
            parts.append(
                _table(
                    f"(f) {c['width']}x{c['height']} cameras at {c['rate_hz']:g} Hz each: one node for all (shared) "
                    "vs one node per camera (separate); latency of the worst camera",
                    [
                        "layout",
                        "cameras",
                        "nodes",
                        "depth Hz",
                        "p50 ms",
                        "p99 ms",
                        "RSS MB",
                        "peak RSS MB",
                        "device MB",
                        "batch sizes seen",
                    ],
                    camera_rows(cams),
                )
            )
        else:
            parts.append(f"(f) several cameras: {cams.get('skipped') or cams.get('error')}")
    backends = report.get("backends")
    if backends:
        if "rows" in backends:
            rows = [
                [
                    r["backend"],
                    r["precision"],
                    r["mode"],
                    r.get("p50_ms"),
                    r.get("speed_vs_torch_fp32_eager"),
                    r.get("max_abs_diff_m"),
                    r.get("routing_identical"),
                    r.get("error", "")[:60],
                ]
                for r in backends["rows"]
            ]
            parts.append(
                _table(
                    f"(g) backends at {backends['size']}, pad, no flip (weights {backends['weights_mb']:.0f} MB)",
                    ["backend", "precision", "mode", "p50 ms", "x fp32 eager", "max diff m", "same routing", "error"],
                    rows,
                )
            )
            for name, onnx in backends.get("onnx", {}).items():
                parts.append(
                    f"    {name}: {onnx.get('file_mb', 0):.0f} MB; default onnxruntime session: "
                    + (
                        f"peak {onnx['session_peak_mb']:.0f} MB after creation ({onnx['session_create_s']:.1f} s), "
                        f"{onnx['run_peak_mb']:.0f} MB after one frame (process baseline {onnx['baseline_mb']:.0f} MB)"
                        if "session_peak_mb" in onnx
                        else onnx.get("error", "not measured")
                    )
                )
        else:
            parts.append(f"(g) backends: {backends.get('error')}")
    fleet = report.get("fleet")
    if fleet:
        if "rows" in fleet:
            base = fleet["rows"][0]["seconds"]
            rows = [
                [r["command"], r["frames_out"], r["seconds"], r["frames_per_second"], r["seconds"] / base]
                for r in fleet["rows"]
            ]
            parts.append(
                _table(
                    f"(h) fleet: {fleet['bags']} bags x {fleet['frames_per_bag']} frames at "
                    f"{fleet['width']}x{fleet['height']}, batch {fleet['batch']}, each process timed start to exit",
                    ["command", "frames", "seconds", "frames/s", "x bag tool time"],
                    rows,
                )
            )
        else:
            parts.append(f"(h) fleet: {fleet.get('skipped') or fleet.get('error')}")
    targets = report.get("targets", [])
    if targets:
        rows = [
            [t["target"], t["limit"], t["measured"], {True: "PASS", False: "FAIL", None: "n/a"}[t["passed"]], t["note"]]
            for t in targets
        ]
        parts.append(_table("targets", ["target", "limit", "measured", "verdict", "note"], rows))
    return "\n\n".join(parts)


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    from ..benchmarks import targets
    from ..benchmarks.model_latency import compare_paths, measure_modes

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if cuda else ["fp32", "bf16"])
    modes = args.modes or (["eager", "cuda_graph"] if cuda else ["eager"])
    channels_last = not args.no_channels_last
    model, info = _load_model(args, device)
    report: dict[str, Any] = {
        "environment": _environment(device, info),
        "settings": {
            "sizes": [f"{w}x{h}" for h, w in args.sizes],
            "precisions": precisions,
            "modes": modes,
            "channels_last": channels_last and cuda,
            "iters": args.iters,
            "warmup": args.warmup,
        },
    }
    if "model" in args.sections:
        log("(a) model latency")
        report["model"] = {
            "rows": measure_modes(
                model,
                device,
                args.sizes,
                precisions,
                modes,
                channels_last=channels_last,
                warmup=args.warmup,
                iters=args.iters,
                log=log,
            )
        }
    if "paths" in args.sections:
        log("(c) image -> depth paths")
        camera_sizes = [s for s in args.sizes if s != (384, 512)] or args.sizes
        report["paths"] = {
            "sizes": compare_paths(
                model,
                device,
                camera_sizes,
                report.get("model", {}).get("rows", []),
                channels_last=channels_last,
                warmup=min(args.warmup, 2),
                iters=max(1, args.iters // 5),
                with_transformers=not args.no_transformers,
                log=log,
            )
        }
    if "e2e" in args.sections:
        log("(b) end to end over DDS")
        report["end_to_end"] = _end_to_end(args, model, device, info)
    if "host" in args.sections:
        log("(d) host-side costs")
        from ..benchmarks.host import measure_host_costs

        sizes = [(w, h) for h, w in args.sizes if (h, w) != (384, 512)]
        report["host"] = measure_host_costs(sizes=sizes, iters=args.host_iters)
    if "bag" in args.sections:
        log("(e) zoedepth-ros-bag vs model only")
        from ..benchmarks.bag import measure_bag

        size = next((s for s in args.sizes if s != (384, 512)), args.sizes[0])
        report["bag"] = measure_bag(
            model, device, size, frames=args.bag_frames, batch=args.bag_batch, channels_last=channels_last, log=log
        )
    if "cameras" in args.sections:
        log("(f) several cameras: one node vs one node per camera")
        report["cameras"] = _cameras(args, model, device, info, log)
    if "backends" in args.sections:
        log("(g) backends: torch vs onnxruntime")
        try:
            from ..benchmarks.backends import measure_backends

            report["backends"] = measure_backends(
                model, device, args.backends_size, warmup=min(args.warmup, 2), iters=max(3, args.iters // 5), log=log
            )
        except Exception as e:  # the other sections still count
            report["backends"] = {"error": f"{type(e).__name__}: {e}"}
    if "fleet" in args.sections:
        log("(h) fleet: zoedepth-ros-fleet vs zoedepth-ros-bag")
        from ..benchmarks.fleet import measure_fleet

        try:
            report["fleet"] = measure_fleet(
                model, device, args.fleet_size, bags=args.fleet_bags, frames=args.fleet_frames, log=log
            )
        except Exception as e:  # the other sections still count
            report["fleet"] = {"error": f"{type(e).__name__}: {e}"}
    report["targets"] = targets.check(report)
    if report.get("cameras", {}).get("target", {}).get("target"):
        report["targets"].append({"note": "RSS (and device) memory ratio", **report["cameras"]["target"]})
    return json_safe(report)


def _end_to_end(args, model: ZoeDepth, device: torch.device, info: dict[str, Any]) -> dict[str, Any]:
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        return {"skipped": f"rclpy not available ({e})"}
    from ..benchmarks.dds import EndToEndConfig, run_end_to_end

    height, width = args.e2e_size
    params = {"device": str(device), "publish_points": True, "warmup": True}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = info["weights"] if args.checkpoint else str(Path(tmp) / "bench_weights.pt")
        if not args.checkpoint:
            sd = {k: v.cpu() for k, v in official_state_dict(model).items()}
            torch.save({"model": sd}, checkpoint)
            del sd
        try:
            config = EndToEndConfig(width, height, args.e2e_rate, args.e2e_duration, color=args.e2e_color)
            return run_end_to_end(checkpoint, params, config)
        except Exception as e:  # the other sections still count
            return {"error": f"{type(e).__name__}: {e}", "width": width, "height": height, "rate_hz": args.e2e_rate}


def _cameras(args, model: ZoeDepth, device: torch.device, info: dict[str, Any], log) -> dict[str, Any]:
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        return {"skipped": f"rclpy not available ({e})"}
    from ..benchmarks.cameras import CamerasConfig, run_cameras

    height, width = args.e2e_size
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = info["weights"] if args.checkpoint else str(Path(tmp) / "bench_weights.pt")
        if not args.checkpoint:
            torch.save({"model": {k: v.cpu() for k, v in official_state_dict(model).items()}}, checkpoint)
        try:
            config = CamerasConfig(args.cameras_counts, width, height, args.cameras_rate, args.cameras_duration)
            return run_cameras(checkpoint, {"device": str(device)}, config, log)
        except Exception as e:  # the other sections still count
            return {"error": f"{type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.bag_frames < 1 or args.bag_batch < 1:
        print("zoedepth-ros-bench: --iters, --bag-frames and --bag-batch must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        report = run(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, WeightsError, CheckpointError) as e:  # a device that does not exist, missing weights
        print(f"zoedepth-ros-bench: {e}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
