"""Isolated ROS processes for the shipped benchmarks: a private domain, localhost-only discovery, the large-SHM
Fast DDS profile, and starting / stopping ``python -m`` children (the node, the benchmark camera and sink).

``zoedepth-ros-bench`` and ``zoedepth-ros-soak`` start the node through these helpers, and so do the DDS tests
(their graph helpers, waiting and discovery, live in ``test/ros_graph.py``), so a benchmark runs the node exactly
as the tests do. A child ends when the parent closes its stdin (``stop_when_stdin_closes``). No ROS import
here: the helpers only build environments and start, watch and stop subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..ros.compat import localhost_only_env
from ..ros.fastdds import profile_env_names, ros_distro, shipped_profile

PACKAGE = "zoedepth_ros"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
"""The directory holding the ``zoedepth_ros`` package (the repository root in a source checkout): as the
working directory of a ``python -m zoedepth_ros...`` child it makes the package importable even without an
install, and an installed package imports from site-packages anyway."""


def fastdds_profile() -> Path | None:
    """The large shared-memory Fast DDS profile (``zoedepth_ros.ros.fastdds.shipped_profile``), or None.

    Without it Fast DDS's 512 KB default segment loses most best-effort images and clouds (see
    docs/ros2_from_pypi.md).
    """
    return shipped_profile()


def default_domain_id() -> int:
    """A per-process domain id in 201..231, clear of the DDS tests' 100..200 (100 + pid % 100, and + 1)."""
    return 201 + os.getpid() % 31


def isolated_ros_env(domain_id: int) -> dict[str, str]:
    """Localhost-only discovery, a private domain id and the large shared-memory Fast DDS profile."""
    env = {"ROS_DOMAIN_ID": str(domain_id), **localhost_only_env(), "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    profile = fastdds_profile()
    if profile is not None:  # under the name this distro's Fast DDS reads (FASTRTPS_ on 2.x: Humble, Jazzy)
        env.update(dict.fromkeys(profile_env_names(ros_distro()), str(profile)))
    return env


@contextmanager
def applied_env(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in this process (for its own rclpy participants) and restore the previous values after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ros_args(params: Mapping[str, object]) -> list[str]:
    """``--ros-args -p name:=value ...`` for a node's parameters (bools lower-case, as YAML wants them)."""
    args = ["--ros-args"]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    return args


def start_python_module(
    module: str, args: list[str], env: Mapping[str, str], log: Path, **popen_kw
) -> subprocess.Popen:
    """``python -m module args`` with ``env`` added, stdout and stderr into ``log``, importable from any cwd."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=PACKAGE_PARENT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            **popen_kw,
        )


def start_node(params: Mapping[str, object], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """The zoedepth node in its own process with the given parameters; its output goes to ``log``."""
    return start_python_module(f"{PACKAGE}.ros.node", ros_args(params), env, log)


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT (as ros2 launch does), then kill if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(log: Path, lines: int = 30) -> str:
    """The last lines of a child's log, for error messages."""
    try:
        text = log.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def stop_when_stdin_closes() -> threading.Event:
    """In a child: an event set once stdin closes; the parent closes it to end the run, and it closes if the
    parent dies, so a benchmark child never outlives its benchmark."""
    stop = threading.Event()

    def watch() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def stop_via_stdin(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """In the parent: close a child's stdin (its signal to finish, see :func:`stop_when_stdin_closes`) and wait;
    kill only if it hangs, since a killed ROS process leaves its Fast DDS shared-memory files in /dev/shm."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_main(
    argv: Sequence[str] | None, module: str, verb: str, usage: str, run: Callable[[Sequence[str]], int]
) -> int:
    """``python -m module verb ...``: the one job a benchmark child process has; anything else is a usage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != verb:
        print(f"usage: python -m {module} {verb}{usage}", file=sys.stderr)
        return 2
    return run(argv[1:])
