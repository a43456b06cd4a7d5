"""Shared pieces of the offline tools (``zoedepth-ros-bag``, ``zoedepth-ros-predict``): no ROS import here.

- ``add_engine_arguments(parser)``: the engine options (checkpoint, device, precision, execution) and the per-frame
  Settings options (routing, pad, flip, depth range, output scale, points, colour, decimation, colour map), named
  and checked like the node's parameters (``params.PARAMS``), so a value the node refuses is refused here too.
- ``number(kind, what, ok)``: an argparse type for the tools' own numeric options.
- ``settings_from_args(args)`` / ``engine_from_args(args, prog=...)``: what those options mean.
- ``Progress``: a tqdm bar (rate, ETA) on a terminal, a plain line every few seconds otherwise (CI logs, files).
- ``Summary``: counts by reason, the engine used, timing and the exit status, printed and written as JSON.
- ``run_guarded(prog, body, ...)``: a tool's body with its exit statuses (one line on stderr, no traceback);
  ``sigterm_as_interrupt()``: SIGTERM ends a run as Ctrl-C does.

Exit statuses shared by the tools: 0 done, 1 other failure, 2 bad input (arguments, files, checkpoint),
130 interrupted. ``fail`` prints one line and exits with a status; ``ToolExit`` carries it (a SystemExit, so a
tool that does not catch it still exits with the right status and no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from ..engine.pipeline import Settings
from ..ros.params import BY_NAME

if TYPE_CHECKING:
    from ..engine import Engine

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
PLAIN_INTERVAL_S = 10.0  # seconds between progress lines when stderr is not a terminal


class ToolExit(SystemExit):
    """Leave a tool with ``status``; ``message`` (one line) has already been printed to stderr by ``fail``."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.message = message


def _first_line(message: object) -> str:
    return (str(message).strip().splitlines() or [""])[0]


def fail(prog: str, message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``prog: error: message`` (its first line only) to stderr and exit with ``status``."""
    line = _first_line(message)
    print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
    raise ToolExit(status, line)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Schedulers stop jobs with SIGTERM: make it the same clean abort as Ctrl-C (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def run_guarded(
    prog: str,
    body: Callable[[], int | None],
    *,
    interrupted: Callable[[], str],
    bad_input: tuple[type[Exception], ...] = (),
    failures: tuple[type[Exception], ...] = (Exception,),
) -> tuple[int, str]:
    """``body()`` as (exit status, one-line error): a ``ToolExit`` keeps its status (already printed); a
    ``bad_input`` exception is 2, one of ``failures`` 1 and Ctrl-C 130, each printed as one line (``interrupted()``
    says what the interruption left behind). Anything else propagates."""
    try:
        return body() or EXIT_OK, ""
    except ToolExit as e:
        return e.status, e.message
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted()}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED, "interrupted"
    except bad_input as e:
        error = _first_line(e)
        status = EXIT_BAD_INPUT
    except failures as e:
        error = _first_line(f"{type(e).__name__}: {e}")
        status = EXIT_FAILURE
    print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    return status, error


# ---------------------------------------------------------------------------------------------- arguments


def number(kind: type, what: str, ok: Callable[[Any], bool] = lambda value: True):
    """An argparse type: ``kind(text)``, finite, for which ``ok`` holds; else "expected WHAT, got TEXT"."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _checked(name: str, kind: type):
    """An argparse type that converts with ``kind`` and applies the node parameter ``name``'s range."""
    param = BY_NAME[name]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {param.allowed()}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        reason = param.check(value)
        if reason is not None:
            raise argparse.ArgumentTypeError(reason.replace(name, "value", 1))
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" messages
    return parse


def _device(text: str) -> str:
    reason = BY_NAME["device"].check(text)
    if reason is not None:
        raise argparse.ArgumentTypeError(f"use auto, cpu, cuda or cuda:N; got {text!r}")
    return text


def add_pass_arguments(group) -> None:
    """--routing, --pad / --no-pad, --flip / --no-flip: what one forward computes (defaults: the node's)."""
    group.add_argument(
        "--routing",
        choices=BY_NAME["routing"].choices,
        default="auto",
        help="metric head: auto (the NK router decides per image), indoor or outdoor (default: auto)",
    )
    group.add_argument(
        "--pad",
        dest="pad_input",
        action=argparse.BooleanOptionalAction,
        default=BY_NAME["pad_input"].default,
        help="reflect-pad the image before inference, as the official infer() (default: on)",
    )
    group.add_argument(
        "--flip",
        dest="flip_aug",
        action=argparse.BooleanOptionalAction,
        default=BY_NAME["flip_aug"].default,
        help="average with a horizontally flipped pass (doubles the cost; default: off)",
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "engine" and "depth output" option groups (defaults are the node's parameter defaults)."""
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--checkpoint",
        default=BY_NAME["checkpoint"].default,
        metavar="NAME_OR_PATH",
        help="official name (ZoeD_M12_NK, ZoeD_M12_N, ZoeD_M12_K; fetched into the cache on first use), "
        "a .pt file or a Hugging Face model folder (default: %(default)s)",
    )
    engine.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never fetch a checkpoint: fail (with how to install it offline) when it is not cached",
    )
    engine.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    engine.add_argument(
        "--precision",
        choices=BY_NAME["precision"].choices,
        default="auto",
        help="auto: bf16 (else fp16) on CUDA if it passes the accuracy guard, else fp32 (default: auto)",
    )
    engine.add_argument(
        "--execution",
        choices=BY_NAME["execution"].choices,
        default="auto",
        help="auto: cuda_graph on CUDA, eager on the CPU (default: auto)",
    )
    engine.add_argument(
        "--backend",
        choices=BY_NAME["backend"].choices,
        default=BY_NAME["backend"].default,
        help="torch, onnxruntime (ONNX graphs cached per size; TensorRT / CUDA / CPU provider) or auto "
        "(default: %(default)s)",
    )
    engine.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=BY_NAME["channels_last"].default,
        help="channels-last convolution weights on CUDA (default: on)",
    )
    out = parser.add_argument_group("depth output")
    add_pass_arguments(out)
    out.add_argument(
        "--min-depth",
        type=_checked("min_depth", float),
        default=BY_NAME["min_depth"].default,
        metavar="M",
        help="depths below this (m) become NaN (default: %(default)s)",
    )
    out.add_argument(
        "--max-depth",
        type=_checked("max_depth", float),
        default=BY_NAME["max_depth"].default,
        metavar="M",
        help="depths above this (m) become NaN (default: %(default)s)",
    )
    out.add_argument(
        "--output-scale",
        type=_checked("output_scale", float),
        default=BY_NAME["output_scale"].default,
        metavar="S",
        help="depth size relative to the image, 0.05..1, intrinsics scaled to match (default: %(default)s)",
    )
    out.add_argument("--points", action="store_true", help="also produce the organized point cloud")
    out.add_argument(
        "--color", action="store_true", help="with --points: packed rgb from the image in the cloud (32-byte points)"
    )
    out.add_argument(
        "--decimation",
        type=_checked("point_cloud.decimation", int),
        default=BY_NAME["point_cloud.decimation"].default,
        metavar="N",
        help="with --points: every N-th row and column of the depth image, 1..32 (default: %(default)s)",
    )
    out.add_argument("--colormap", action="store_true", help="also produce a false-colour rgb8 view of the depth")


def check_settings_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-option rules (``parser.error``: usage line, exit 2): min-depth below max-depth."""
    if args.min_depth >= args.max_depth:
        parser.error(f"--min-depth ({args.min_depth:g}) must be below --max-depth ({args.max_depth:g})")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The per-frame Settings the options of ``add_engine_arguments`` describe."""
    return Settings(
        routing=args.routing,
        pad_input=args.pad_input,
        flip_aug=args.flip_aug,
        min_depth=args.min_depth,
        max_depth=args.max_depth,
        output_scale=args.output_scale,
        points=args.points,
        color=args.color,
        decimation=args.decimation,
        colormap=args.colormap,
    )


@dataclass(frozen=True)
class EngineOptions:
    """``open_engine``'s arguments, as the options of ``add_engine_arguments`` give them (picklable: a fleet
    worker opens its own engine from them)."""

    checkpoint: str
    device: str = "auto"
    precision: str = "auto"
    execution: str = "auto"
    download: bool = True
    channels_last: bool = True
    pad_input: bool = True
    flip_aug: bool = False
    backend: str = "torch"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineOptions:
        return cls(
            args.checkpoint,
            args.device,
            args.precision,
            args.execution,
            args.download,
            args.channels_last,
            args.pad_input,
            args.flip_aug,
            getattr(args, "backend", "torch"),
        )

    def open(self, info: Callable[[str], None], warn: Callable[[str], None]) -> Engine:
        """``open_engine`` with these options (StartupError as it raises it)."""
        from ..engine import open_engine

        return open_engine(
            self.checkpoint,
            self.device,
            self.precision,
            self.execution,
            download=self.download,
            channels_last=self.channels_last,
            pad_input=self.pad_input,
            flip_aug=self.flip_aug,
            info=info,
            warn=warn,
            backend=self.backend,
        )


def engine_from_args(args: argparse.Namespace, prog: str, *, info=None, warn=None) -> Engine:
    """``open_engine`` with the options of ``add_engine_arguments``; a StartupError is ``fail(prog, ...)``: one
    line on stderr and exit status 2 (a missing or corrupt checkpoint, a device that is not there)."""
    from ..errors import StartupError

    def say(line: str) -> None:
        print(f"{prog}: {line}", file=sys.stderr, flush=True)

    try:
        return EngineOptions.from_args(args).open(info or say, warn or say)
    except StartupError as e:
        fail(prog, str(e), EXIT_BAD_INPUT)


# ---------------------------------------------------------------------------------------------- progress


class Progress:
    """Frames done out of ``total`` (None: unknown): a tqdm bar on a terminal, else a plain line every
    ``interval`` seconds and one at the end, so that logs stay readable. ``disable`` silences it."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "frame",
        stream: IO[str] | None = None,
        interval: float = PLAIN_INTERVAL_S,
        disable: bool = False,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.unit = total, desc, unit
        self.interval, self.disable = interval, disable
        self.n = 0
        self.postfix = ""  # e.g. "inputs 3/10": shown after the counts
        self._printed = 0  # self.n at the last plain line
        self._t0 = self._last = time.monotonic()
        isatty = getattr(self.stream, "isatty", lambda: False)
        self._bar = None
        if not disable and (tty if tty is not None else isatty()):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self.disable:
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._line(now)

    def set_postfix(self, text: str) -> None:
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def write(self, line: str) -> None:
        """A log line that does not break the bar."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self.disable and self.n != self._printed:
            self._line(time.monotonic())
        self.disable = True

    def _line(self, now: float) -> None:
        self._printed = self.n
        elapsed = max(now - self._t0, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}" + (f"/{self.total}" if self.total else "")
        eta = ""
        if self.total and rate > 0 and self.n < self.total:
            eta = f", ETA {(self.total - self.n) / rate:.0f} s"
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}s, {rate:.2f} {self.unit}s/s{eta}{tail}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- summary


@dataclass
class Summary:
    """What a run did, for people (``print``) and for schedulers (``as_dict`` / ``write_json``)."""

    tool: str
    input: str
    output: str
    cameras: list[str] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    engine: dict[str, Any] = field(default_factory=dict)
    exit_status: int | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)
    seconds: float = 0.0

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def set_engine(self, engine: Engine) -> None:
        """Record what ran: the rung ("bf16 cuda_graph"), its description, device, checkpoint and fallbacks."""
        status = engine.status()
        self.engine = {
            "rung": status["rung"],
            "describe": engine.describe(),
            "device": str(engine.device),
            "checkpoint": str(getattr(engine, "source", "")),
            "variant": getattr(engine, "variant", ""),
            "fallbacks": len(status["fallbacks"]),
        }

    def finish(self, status: int, error: str = "") -> None:
        self.seconds = time.monotonic() - self._t0
        self.exit_status, self.error = status, error

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        seconds = self.seconds or (time.monotonic() - self._t0)
        return {
            "tool": self.tool,
            "input": self.input,
            "output": self.output,
            "cameras": list(self.cameras),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "skipped": dict(sorted(self.skipped.items())),
            "seconds": round(seconds, 3),
            "frames_per_second": round(self.frames_out / seconds, 3) if seconds > 0 else 0.0,
            "engine": dict(self.engine),
            "exit_status": self.exit_status,
            "error": self.error,
            **self.extra,
        }

    def report(self, status: int, error: str, json_path: str | None, *, show: bool) -> int:
        """End the run: ``finish``, ``print`` when ``show``, ``write_json`` to ``json_path`` when given. Returns the
        exit status (1 when the JSON cannot be written and the run had none worse)."""
        self.finish(status, error)
        if show:
            self.print()
        if json_path:
            try:
                self.write_json(json_path)
            except OSError as e:
                line = f"{self.tool}: error: cannot write --summary-json {json_path}: {e.strerror or e}"
                print(line, file=sys.stderr, flush=True)
                status = status or EXIT_FAILURE
        return status

    def write_json(self, path: str | Path) -> None:
        """Write ``as_dict()`` to ``path``; ``-`` is stdout."""
        text = json.dumps(self.as_dict(), indent=2) + "\n"
        if str(path) == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            Path(path).write_text(text)

    def print(self, stream: IO[str] | None = None) -> None:
        """A short human summary: frames in / out, skipped by reason, speed, engine."""
        out = stream if stream is not None else sys.stderr
        d = self.as_dict()
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in d["skipped"].items())
        print(
            f"{self.tool}: {d['frames_in']} frames in, {d['frames_out']} out, {skipped} skipped"
            + (f" ({reasons})" if reasons else "")
            + f"; {d['seconds']:.1f} s, {d['frames_per_second']:.2f} frames/s"
            + (f"; {self.engine['describe']} on {self.engine['device']}" if self.engine else ""),
            file=out,
            flush=True,
        )
