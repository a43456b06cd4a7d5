"""Per-call latency of a callable, measured the same way on CPU and CUDA so the benchmark's ratios are fair."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU, where every op has finished when it returns)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], object], device: str | torch.device, warmup: int, iters: int) -> list[float]:
    """Milliseconds per call of ``fn()`` for ``iters`` calls after ``warmup`` untimed ones.

    On CUDA each call is bracketed by CUDA events on the current stream and the device is synchronised before
    reading them, so the time covers everything the call queued, not only its host-side launch; host-side work
    inside the call (numpy pre-processing, ``.item()`` syncs) counts too, as the end event is recorded after ``fn``
    returns. On CPU ``time.perf_counter`` brackets the call. Warm-up absorbs lazy initialisation (cuDNN autotuning,
    allocator growth, cached relative-position indices).
    """
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples: list[float] = []
    if device.type == "cuda":
        with torch.cuda.device(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(iters):
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)  # whole device: also work fn queued on side streams
                samples.append(start.elapsed_time(end))
        return samples
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(1e3 * (time.perf_counter() - t0))
    return samples
