"""Shared fixtures: tiny random ZoeDepth models and checkpoints in the exact official layout, a private weights
cache and the local checkpoint server."""

from __future__ import annotations

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
