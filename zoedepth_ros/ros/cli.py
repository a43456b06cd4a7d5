"""The command line of our ROS executables: the user's own arguments among ROS's, ``--help``, usage errors.

``zoedepth_node --help`` and ``zoedepth_demo_camera --help`` print their usage and parameter table and exit 0
before rclpy or torch is imported (nothing is initialised, downloaded or published); an argument that is neither
theirs nor ROS's is a usage error (exit 2) instead of being silently ignored. ROS's arguments are rcl's rule:
everything from ``--ros-args`` up to a ``--`` (or the end) belongs to ROS, which is what ``ros2 run`` and
``ros2 launch`` pass. No ROS import here.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ROS_ARGS, ROS_ARGS_END = "--ros-args", "--"
HELP = ("-h", "--help")
RUNTIME = " [runtime]"  # ends the description of a parameter that may change while the node runs
ROS_ARGUMENTS_HELP = (
    ("-p NAME:=VALUE", "set a parameter (listed below); repeat -p for more"),
    ("--params-file FILE", "parameters from a YAML file (under `/**:` and `ros__parameters:`)"),
    ("-r image:=TOPIC", "read or publish the camera image on TOPIC (likewise -r camera_info:=TOPIC)"),
    ("-r __ns:=/NAMESPACE", "run in a namespace (relative topics follow it); -r __node:=NAME renames the node"),
)


def user_args(argv: Sequence[str]) -> list[str]:
    """The arguments that are not ROS's: those outside every ``--ros-args ... [--]`` section (argv[0] excluded)."""
    mine, in_ros = [], False
    for arg in argv:
        if in_ros:
            in_ros = arg != ROS_ARGS_END
        elif arg == ROS_ARGS:
            in_ros = True
        else:
            mine.append(arg)
    return mine


@dataclass(frozen=True)
class Command:
    """One executable's command line: its name, own flags ({flag: help}), summary and parameter table."""

    prog: str
    summary: str
    flags: dict[str, str]
    parameters: Callable[[], list[tuple[str, str, str, str, str]]]  # (name, type, default, allowed, description)
    example: str = ""
    footer: Callable[[], str] | None = None

    def usage(self) -> str:
        own = "".join(f"[{f}] " for f in self.flags)
        ros = f"[{ROS_ARGS} [-p NAME:=VALUE ...] [--params-file FILE] [-r FROM:=TO ...]]"
        return f"usage: {self.prog} [-h] {own}{ros}"

    def help(self, width: int | None = None) -> str:
        width = width or max(60, min(120, shutil.get_terminal_size((100, 24)).columns))
        lines = [self.usage(), "", *textwrap.wrap(self.summary, width), "", "options:"]
        options = [(", ".join(HELP), "show this help (usage and parameters) and exit"), *self.flags.items()]
        lines += _two_columns(options, width)
        lines += ["", f"ROS arguments (after {ROS_ARGS}, up to an optional {ROS_ARGS_END}):"]
        lines += _two_columns(ROS_ARGUMENTS_HELP, width)
        if self.example:
            lines += ["", "example:", f"  {self.example}"]
        rows = self.parameters()
        if any(r[4].endswith(RUNTIME) for r in rows):
            lines += ["", f"parameters ({RUNTIME.strip()}: can also be changed while running, with `ros2 param set`):"]
        else:
            lines += ["", "parameters (read at start-up):"]
        lines += parameter_table(rows, width)
        if self.footer is not None:
            lines += ["", *textwrap.wrap(self.footer(), width)]
        return "\n".join(lines) + "\n"

    def check(self, argv: Sequence[str]) -> int | None:
        """None to go on; else the exit status, after printing the help (0) or a usage error (2)."""
        mine = user_args(argv)
        if any(a in HELP for a in mine):
            _print_help(self.help())
            return 0
        unknown = [a for a in mine if a not in self.flags]
        if unknown:
            print(self.usage(), file=sys.stderr)
            print(
                f"{self.prog}: error: unrecognized arguments: {' '.join(unknown)} (ROS arguments go after "
                f"{ROS_ARGS}, e.g. {ROS_ARGS} -p NAME:=VALUE; `{self.prog} --help` lists the parameters)",
                file=sys.stderr,
            )
            return 2
        return None


def _two_columns(rows: Sequence[tuple[str, str]], width: int) -> list[str]:
    left = max(len(a) for a, _ in rows) + 4
    lines = []
    for a, b in rows:
        wrapped = textwrap.wrap(b, max(30, width - left)) or [""]
        lines.append(f"  {a:<{left - 2}}{wrapped[0]}")
        lines += [" " * left + w for w in wrapped[1:]]
    return lines


def parameter_table(rows: Sequence[tuple[str, str, str, str, str]], width: int) -> list[str]:
    """One line per parameter (name, type, default, allowed values) and its description wrapped beneath it."""
    head = ("NAME", "TYPE", "DEFAULT", "ALLOWED" if any(r[3] for r in rows) else "")
    cols = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

    def line(r: Sequence[str]) -> str:
        return ("  " + "  ".join(f"{v:<{w}}" for v, w in zip(r[:3], cols, strict=True)) + f"  {r[3]}").rstrip()

    lines = [line(head)]
    for r in rows:
        lines.append(line(r))
        lines += textwrap.wrap(r[4], width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return lines


def type_name(value: Any) -> str:
    """The ROS parameter type of a default value."""
    if isinstance(value, tuple | list):
        return "string[]"
    return {bool: "bool", int: "integer", float: "double", str: "string"}.get(type(value), type(value).__name__)


def value_text(value: Any) -> str:
    """A default as it is written after ``-p NAME:=`` (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, str) and value == "":
        return "''"
    return str(value)


def _print_help(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `zoedepth_node --help | head`: no traceback, and none at interpreter exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
