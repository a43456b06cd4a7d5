"""``zoedepth-ros-export``: one ONNX file (and on a GPU machine its TensorRT engine) for a checkpoint and camera size.

The file holds the whole ``predict`` - resize, normalisation, network, reflect padding and flip averaging as
exported, restore to the camera size - with static shapes and the contract of ``engine.onnx.graph``, so any
runtime can use it without this package. Without ``--output`` it goes into the cache that the node's
``backend: onnxruntime`` reads (so a robot starts without exporting); ``--engine`` also builds the TensorRT engine
there. Exit status: 0 done, 2 bad input (arguments, checkpoint), 1 a failure (export, session, engine build).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from zoedepth_ros.offline.common import (
    EXIT_BAD_INPUT,
    add_pass_arguments,
    fail,
    run_guarded,
    sigterm_as_interrupt,
)
from zoedepth_ros.ros.params import BY_NAME

PROG = "zoedepth-ros-export"
SIZE_RE = re.compile(r"^(\d+)x(\d+)$")

DESCRIPTION = """\
Export ZoeDepth for one camera image size to ONNX: input `image` float32 (B, 3, H, W) RGB in [0, 1]; outputs
`depth` float32 (B, 1, H, W) metres, `head` int64 (passes, B) (0 nyu / indoor, 1 kitti / outdoor) and, for NK,
`head_logits` float32 (passes, B, 2). NK runs both heads and routes each image on the device."""

EPILOG = """\
examples:
  zoedepth-ros-export --size 640x480                        # into the node's cache (backend: onnxruntime)
  zoedepth-ros-export --size 640x480 --output zoe_nk_640x480.onnx --verify
  zoedepth-ros-export --size 1280x720 --precision fp16 --engine   # on the robot: ONNX + TensorRT engine
"""


def _size(text: str) -> tuple[int, int]:
    m = SIZE_RE.match(text.strip())
    if not m or int(m[1]) <= 0 or int(m[2]) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    return int(m[1]), int(m[2])


def _batch(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected a batch size from 1 to 64, got {text!r}")
    return value


def _workspace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.25 <= value <= 256:
        raise argparse.ArgumentTypeError(f"expected GB from 0.25 to 256, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        default=BY_NAME["checkpoint"].default,
        metavar="NAME_OR_PATH",
        help="official name (fetched into the cache on first use), a .pt file or a Hugging Face model folder "
        "(default: %(default)s)",
    )
    p.add_argument("--no-download", dest="download", action="store_false", help="never fetch a checkpoint")
    p.add_argument("--size", type=_size, required=True, metavar="WxH", help="the camera image size, e.g. 640x480")
    p.add_argument("--output", type=Path, metavar="FILE.onnx", help="where to write (default: the node's cache)")
    p.add_argument("--batch", type=_batch, default=1, metavar="N", help="images per call (default: 1)")
    add_pass_arguments(p)
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="graph precision; fp16 / bf16 keep the decoder, metric heads, router, softmax and layer norms in "
        "fp32 with explicit casts (default: fp32)",
    )
    p.add_argument("--verify", action="store_true", help="run the file in onnxruntime (CPU) and compare with torch")
    p.add_argument(
        "--engine",
        action="store_true",
        help="also build the TensorRT engine into the cache (needs a CUDA GPU and onnxruntime-gpu with TensorRT; "
        "build it on the robot itself: engines are tied to the GPU and TensorRT version)",
    )
    p.add_argument("--device", default="cuda", help="with --engine: the GPU (default: cuda)")
    p.add_argument(
        "--workspace-gb",
        type=_workspace,
        default=BY_NAME["tensorrt_workspace_gb"].default,
        metavar="GB",
        help="with --engine: TensorRT's scratch memory limit (default: %(default)s)",
    )
    return p


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from zoedepth_ros.engine.onnx.cache import GraphKey, checkpoint_sha256, graph_path
    from zoedepth_ros.engine.onnx.export import ExportError, check_exporter, export_onnx
    from zoedepth_ros.engine.onnx.graph import ExportSpec
    from zoedepth_ros.model import CheckpointError, load
    from zoedepth_ros.weights import WeightsError, ensure_checkpoint

    width, height = args.size
    try:
        spec = ExportSpec(height, width, args.batch, args.pad_input, args.flip_aug, args.routing, args.precision)
    except ValueError as e:
        fail(PROG, str(e))
    try:
        check_exporter()
    except ExportError as e:
        fail(PROG, str(e), 1)
    device = engine_device(args.device) if args.engine else None  # before the export: it can take minutes
    try:
        path = ensure_checkpoint(args.checkpoint, download=args.download, log=_say)
        model = load(path, device="cpu")
    except (WeightsError, CheckpointError) as e:
        fail(PROG, str(e))
    if args.routing != "auto" and model.config.router is None:
        fail(PROG, f"--routing {args.routing} needs an NK checkpoint; {path.name} is {model.config.variant.upper()}")
    try:
        model.net_size_for(*spec.padded_size)  # a too elongated size is bad input, not an export failure
    except ValueError as e:
        fail(PROG, str(e))
    sha = checkpoint_sha256(path)
    key = GraphKey.of(model.config.variant, sha, spec)
    output = args.output or graph_path(key)
    _say(f"exporting ZoeD_{model.config.variant.upper()} for {spec.tag()} to {output}")
    result = export_onnx(model, spec, output, sha)
    extra = f" + {output.name}.data" if result.external_data else ""
    _say(f"wrote {output}{extra} ({result.bytes / 1e6:.0f} MB) in {result.seconds:.0f} s")
    if args.verify:
        verify(model, spec, output)
    if device is not None:
        build_engine(output, spec, device, args)
    print(output)
    return 0


def verify(model, spec, path: Path) -> None:
    """onnxruntime CPU against the torch model on the guard's probe scene: max depth difference and routing."""
    import onnxruntime as ort

    from zoedepth_ros.engine.accuracy import probe_images

    image = probe_images(spec.height, spec.width)[0].expand(spec.batch, -1, -1, -1).contiguous()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": image.numpy()})
    from zoedepth_ros.engine.onnx.export import model_in_precision
    from zoedepth_ros.engine.onnx.graph import StaticPredict

    reference = StaticPredict(model_in_precision(model, spec.precision), spec)(image)
    depth_diff = float((torch.from_numpy(outputs[0]) - reference[0]).abs().max())
    same = bool((torch.from_numpy(outputs[1]) == reference[1]).all())
    _say(f"verify: max |onnxruntime - torch| {depth_diff:.2e} m, routing {'identical' if same else 'DIFFERS'}")


def engine_device(spec: str) -> torch.device:
    """The CUDA device ``--engine`` builds on; exit 1 (one line, no traceback) when there is none."""
    from zoedepth_ros.engine.device import resolve_device

    try:
        device = resolve_device(spec)
    except ValueError as e:
        fail(PROG, f"--engine needs a CUDA GPU: {e}", 1)
    if device.type != "cuda":
        fail(PROG, f"--engine needs a CUDA GPU (got {device})", 1)
    return device


def build_engine(path: Path, spec, device: torch.device, args: argparse.Namespace) -> None:
    from zoedepth_ros.engine.onnx.session import SessionSettings, engine_cache_for, open_session

    settings = SessionSettings(workspace_gb=args.workspace_gb)
    t0 = time.monotonic()
    session = open_session(path, "ort_tensorrt", device, spec.precision, settings, _say)
    image = torch.rand(spec.batch, 3, spec.height, spec.width).numpy()
    session.run(None, {"image": image})
    _say(f"TensorRT engine ready in {time.monotonic() - t0:.0f} s, cached in {engine_cache_for(device, settings)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if args.engine and args.output:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: --engine builds into the node's cache; leave out --output", file=sys.stderr)
        return EXIT_BAD_INPUT
    sigterm_as_interrupt()
    from zoedepth_ros.engine.onnx.export import ExportError
    from zoedepth_ros.engine.onnx.session import SessionError

    status, _ = run_guarded(
        PROG,
        lambda: run(args),
        interrupted=lambda: "interrupted; nothing half-written was left in place",
        failures=(ExportError, SessionError, RuntimeError, OSError, ImportError),
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
