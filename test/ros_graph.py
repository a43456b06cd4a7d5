"""Helpers for tests over real DDS: an isolated ROS environment, the node in its own process, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_large_shm.xml"


def isolated_ros_env(domain_id: int) -> dict[str, str]:
    """Localhost-only discovery, a private domain id and the large shared-memory Fast DDS profile."""
    return {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    }


def start_node(params: dict[str, object], env: dict[str, str], log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "zoedepth_ros.node", "--ros-args"]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    out = open(log, "wb")
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT (as ros2 launch does), then kill if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_until(predicate: Callable[[], bool], timeout: float, spin: Callable[[float], None], what: str) -> None:
    """Spin until ``predicate()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        spin(0.05)
