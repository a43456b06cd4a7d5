"""The node's parameters in one table: name, default, description, allowed range or values, run-time flag.

The node declares from it, validates with it, and ``config/zoedepth.yaml`` is generated from it (a test keeps
the file equal to ``default_yaml()``). No ROS import here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cameras import CameraListError, parse_cameras
from .cli import RUNTIME, type_name, value_text

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    runtime: bool = False  # may change while running; everything else needs a restart
    pattern: re.Pattern | None = field(default=None, compare=False)
    items: Callable[[list], str | None] | None = field(default=None, compare=False)  # checks a list's entries

    def check(self, value: Any) -> str | None:
        """None if ``value`` is acceptable, else the reason (names the value and what is allowed)."""
        kind = type(self.default)
        if kind is tuple:  # a string list; ROS has no typed empty list: `[]` arrives unset (None) or as bytes
            if value is None:
                return None
            if not isinstance(value, list | tuple):
                return f"{self.name} must be {self.allowed()}, got {value!r}"
            return self.items(list(value)) if self.items is not None else None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{self.name} must be {self.allowed()}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if self.pattern is not None and not self.pattern.match(value):
            return f"{self.name} {value!r} is not valid ({self.description.split(':')[0]})"
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return f"{self.name} must be {self.allowed()}, got {value}"
        return None

    def allowed(self) -> str:
        """What values are allowed, in words (for one-line errors)."""
        kind = {
            bool: "a bool (true or false)",
            int: "an integer",
            float: "a number",
            str: "a string",
            tuple: "a list of strings, e.g. [front, left]",
        }[type(self.default)]
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.low is not None:
            return f"{kind} in [{self.low:g}, {self.high:g}]"
        return kind


def _check_cameras(entries: list) -> str | None:
    try:
        parse_cameras(entries)
    except CameraListError as e:
        return str(e)
    return None


PARAMS: tuple[Param, ...] = (
    Param(
        "checkpoint",
        "ZoeD_M12_NK",
        "official name resolved in the weights cache (ZoeD_M12_NK, ZoeD_M12_N, ZoeD_M12_K), "
        "a .pt file or a Hugging Face model folder",
    ),
    Param(
        "download",
        True,
        "fetch an official checkpoint that is not cached yet on first use (progress in the "
        "log, SHA-256 recorded); false for robots that must never touch the network",
    ),
    Param("device", "auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N", pattern=DEVICE_PATTERN),
    Param(
        "precision",
        "auto",
        "model precision: auto picks bf16 (else fp16) on CUDA if it passes the accuracy guard against fp32 at "
        "start-up, else fp32; the DPT decoder, metric heads and router always run in fp32",
        choices=("auto", "fp32", "bf16", "fp16"),
    ),
    Param(
        "execution",
        "auto",
        "auto (cuda_graph on CUDA, eager on CPU), eager, cuda_graph or compile (torch.compile)",
        choices=("auto", "eager", "cuda_graph", "compile"),
    ),
    Param(
        "backend",
        "torch",
        "torch; onnxruntime (an ONNX graph per camera size, made on first use and cached; TensorRT, then CUDA, "
        "on a GPU, falling back to torch); auto (onnxruntime only where it passes the accuracy guard and is "
        "measured faster than torch)",
        choices=("torch", "onnxruntime", "auto"),
    ),
    Param(
        "tensorrt_workspace_gb",
        4.0,
        "TensorRT's scratch memory limit for the onnxruntime backend's engine build (GB)",
        low=0.25,
        high=256.0,
    ),
    Param("channels_last", True, "channels-last convolution weights on CUDA"),
    Param(
        "warmup",
        True,
        "run the model (and capture its CUDA graph) at the first CameraInfo's size before the first image",
    ),
    Param(
        "routing",
        "auto",
        "metric head: auto (the NK router decides per frame), indoor or outdoor",
        choices=("auto", "indoor", "outdoor"),
        runtime=True,
    ),
    Param("pad_input", True, "reflect-pad the image before inference, as the official infer()", runtime=True),
    Param(
        "flip_aug", False, "average with a horizontally flipped pass (official default; doubles the cost)", runtime=True
    ),
    Param("min_depth", 0.001, "depths below this (m) are published as NaN", low=0.0, high=1000.0, runtime=True),
    Param("max_depth", 80.0, "depths above this (m) are published as NaN", low=0.0, high=1000.0, runtime=True),
    Param(
        "output_scale",
        1.0,
        "depth image size relative to the camera image (camera info scaled to match)",
        low=0.05,
        high=1.0,
    ),
    Param("publish_points", True, "publish the organized point cloud on `points`", runtime=True),
    Param(
        "point_cloud.color", False, "add packed rgb from the camera image to the cloud (32-byte points)", runtime=True
    ),
    Param(
        "point_cloud.decimation",
        1,
        "use every n-th row and column of the depth image for the cloud",
        low=1,
        high=32,
        runtime=True,
    ),
    Param(
        "input_transport",
        "raw",
        "raw: subscribe `image`; compressed: subscribe `image/compressed` (every camera's, unless its "
        "cameras entry says otherwise)",
        choices=("raw", "compressed"),
    ),
    Param(
        "cameras",
        (),
        "one camera per entry, a relative namespace: `front` is front/image (or front/image/compressed) and "
        "front/camera_info in, front/depth/image, front/depth/camera_info, front/points, front/routing and "
        "front/depth/colormap out; `front:compressed` or `front:raw` sets that camera's transport; empty: the "
        "single camera on image / camera_info",
        items=_check_cameras,
    ),
    Param(
        "max_batch",
        4,
        "at most this many frames of equal size (from different cameras) go through the model in one forward",
        low=1,
        high=16,
    ),
    Param(
        "camera_info_wait",
        0.5,
        "how long (s) an image waits for the CameraInfo with its exact stamp before "
        "the camera_info_tolerance rule applies",
        low=0.0,
        high=10.0,
        runtime=True,
    ),
    Param(
        "camera_info_tolerance",
        0.1,
        "then use the CameraInfo closest in stamp if it is within this (s)",
        low=0.0,
        high=10.0,
        runtime=True,
    ),
    Param(
        "qos.input_reliability",
        "best_effort",
        "image and camera_info subscriptions (sensor data)",
        choices=("best_effort", "reliable"),
    ),
    Param("qos.input_depth", 1, "subscription queue depth", low=1, high=100),
    Param(
        "qos.output_reliability",
        "reliable",
        "publishers; reliable also serves best-effort subscribers",
        choices=("reliable", "best_effort"),
    ),
    Param("qos.output_depth", 2, "publisher queue depth", low=1, high=100),
)
BY_NAME = {p.name: p for p in PARAMS}


def camera_list(value: Any) -> tuple[str, ...]:
    """The ``cameras`` value as a tuple of entries (unset and empty byte arrays are the empty list)."""
    return tuple(value or ())


def validate(values: dict[str, Any]) -> list[str]:
    """Reasons against a full or partial set of values, including cross-parameter rules."""
    reasons = [r for name, v in values.items() if name in BY_NAME and (r := BY_NAME[name].check(v))]
    lo, hi = values.get("min_depth"), values.get("max_depth")
    if not reasons and lo is not None and hi is not None and lo >= hi:
        reasons.append(f"min_depth ({lo}) must be below max_depth ({hi})")
    return reasons


def defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMS}


def help_rows() -> list[tuple[str, str, str, str, str]]:
    """``zoedepth_node --help``'s table, from the parameters above: name, type, default, allowed values, description."""
    rows = []
    for p in PARAMS:
        if p.choices:
            allowed = "|".join(p.choices)
        elif p.low is not None:
            allowed = f"{p.low:g}..{p.high:g}"
        elif p.pattern is not None:  # e.g. ^(auto|cpu|cuda|cuda:\d+)$ -> auto|cpu|cuda|cuda:N
            allowed = p.pattern.pattern.strip("^$").removeprefix("(").removesuffix(")").replace(r"\d+", "N")
        else:
            allowed = ""
        runtime = RUNTIME if p.runtime else ""
        rows.append((p.name, type_name(p.default), value_text(p.default), allowed, p.description + runtime))
    return rows


def _yaml_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def default_yaml(node_name: str = "/**") -> str:
    """config/zoedepth.yaml: every parameter with its default and a comment.

    Keyed ``/**`` (any namespace, any node name): a plain ``zoedepth:`` key is ignored by rcl as soon as the node
    runs in a namespace, so a user's edits would silently do nothing under ``namespace:=/cam0``.
    """
    lines = [
        "# zoedepth_ros node parameters (generated from zoedepth_ros/ros/params.py; keep them equal).",
        "# Parameters marked [runtime] can be changed while the node runs (ros2 param set).",
        "# '/**' applies to the node under any namespace and name; to configure one node of several, key it by",
        "# its full name instead, e.g. '/cam0/zoedepth:'.",
        f"{_yaml_value(node_name) if node_name.startswith('/') else node_name}:",
        "  ros__parameters:",
    ]
    group = None
    for p in PARAMS:
        allowed = f" [{'|'.join(p.choices)}]" if p.choices else f" [{p.low:g}..{p.high:g}]" if p.low is not None else ""
        runtime = " [runtime]" if p.runtime else ""
        prefix, _, leaf = p.name.rpartition(".")
        if prefix != group:  # dotted names are nested mappings in ROS parameter files
            if prefix:
                lines.append(f"    {prefix}:")
            group = prefix
        indent = "      " if prefix else "    "
        lines.append(f"{indent}# {p.description}{allowed}{runtime}")
        lines.append(f"{indent}{leaf}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"
