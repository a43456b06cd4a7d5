"""Shared fixtures: tiny random ZoeDepth models and checkpoints in the exact official layout, a private weights
cache and the local checkpoint server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from helpers_http import CheckpointServer
from model_fixtures import save_official, tiny_model

from zoedepth_ros import weights as W


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    """variant -> path of a random tiny checkpoint in the official layout (made once per session)."""
    made: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in made:
            path = tmp_path_factory.mktemp("ckpt") / f"tiny_{variant}.pt"
            made[variant] = save_official(tiny_model(variant), path)
        return made[variant]

    return make


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty weights cache; no mirror from the caller's environment."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(W.CACHE_ENV, str(folder))
    monkeypatch.delenv(W.BASE_URL_ENV, raising=False)
    return folder


@pytest.fixture
def server() -> Iterator[CheckpointServer]:
    """The local HTTP checkpoint server of helpers_http (Range support, scripted faults)."""
    with CheckpointServer() as srv:
        yield srv


@pytest.fixture
def rgb() -> torch.Tensor:
    """A smooth, structured 2x3x48x64 RGB batch in [0, 1] (random noise would make every model output flat)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    a = torch.stack([xs, ys, 0.5 + 0.5 * torch.sin(6 * xs * ys)])
    b = torch.stack([1 - ys, 0.3 + 0.4 * xs, 0.5 + 0.5 * torch.cos(5 * xs + 2 * ys)])
    return torch.stack([a, b]).clamp(0, 1)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marks of optional plugins (pytest-timeout, launch_pytest), so that where one is missing its
    tests still collect (and skip with their reason) without unknown-mark warnings."""
    config.addinivalue_line("markers", "timeout(seconds): fail the test after that long (pytest-timeout)")
    config.addinivalue_line("markers", "launch(fixture): a launch_pytest test (the ROS 2 launch tools)")
    config.addinivalue_line("markers", "slow: among the slowest tests (minutes, full-size models); -m 'not slow' skips")
    config.addinivalue_line(
        "markers",
        "ros: needs ROS 2 (rclpy, the launch tools or rosbags); set by the module's imports, so that the second "
        "distro leg of scripts/test.sh can run just these (-m ros)",
    )


ROS_IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(?:rclpy|launch|launch_ros|launch_pytest|launch_testing|sensor_msgs|diagnostic_msgs|"
    r"rcl_interfaces|lifecycle_msgs|std_msgs|rosbags|ros_graph|test_launch|test_node_dds|zoedepth_ros\.ros\b|"
    r"zoedepth_ros\.msg|zoedepth_ros\.offline\.bag|zoedepth_ros\.tools\.(?:bag|demo)\b)",
    re.M,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of every module that imports ROS (or the node's modules) with ``ros``."""
    seen: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in seen:
            seen[path] = bool(ROS_IMPORT.search(path.read_text(errors="replace")))
        if seen[path]:
            item.add_marker(pytest.mark.ros)
