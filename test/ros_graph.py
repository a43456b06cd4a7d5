"""Helpers for tests over real DDS: an isolated ROS environment, the node in its own process, waiting.

The environment and process helpers are the ones the shipped benchmarks use (``zoedepth_ros.benchmarks.isolation``),
so the tests start the node exactly as the benchmarks do; they are re-exported here. What only tests need (waiting
on the graph, moving this process onto a test domain) is defined here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from zoedepth_ros.benchmarks.isolation import isolated_ros_env, start_node, stop_node

__all__ = ["REPO", "isolated_ros_env", "module_env", "start_node", "stop_node", "use_domain", "wait_until"]

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, args: list[str], domain: int, **env: str) -> subprocess.CompletedProcess:
    """``python -m module args`` to its end, on a private ROS domain (plus ``env``), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **isolated_ros_env(domain), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, spin: Callable[[float], None], what: str) -> None:
    """Spin until ``predicate()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        spin(0.05)


def use_domain(mp, domain: int) -> dict[str, str]:
    """Put this process (and the ``test_node_dds.Graph`` it creates) on an isolated ``domain`` until ``mp``
    (a pytest MonkeyPatch) is undone; returns the environment for the node processes."""
    env = isolated_ros_env(domain)
    for k, v in env.items():
        mp.setenv(k, v)
    mp.setattr("test_node_dds.DOMAIN_ID", domain)
    return env


def module_env(apply: Callable[[pytest.MonkeyPatch], dict[str, str]]):
    """A module-scoped fixture: ``apply(mp)`` (e.g. ``test_launch.apply_env(mp, DOMAIN)``) for the whole module,
    undone after its last test; the fixture's value is what ``apply`` returns (the environment it set)."""

    @pytest.fixture(scope="module")
    def fixture():
        mp = pytest.MonkeyPatch()
        try:
            yield apply(mp)
        finally:
            mp.undo()

    return fixture
