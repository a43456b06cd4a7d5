"""Host <-> device copies for frames in flight: pinned staging, pinned landing buffers and the copy stream.

On CUDA a batch's raw images are staged in pinned memory and uploaded asynchronously; its outputs are copied back
on a copy stream into pinned landing buffers, so that publishing one batch overlaps computing the next. At most
``IN_FLIGHT`` batches hold buffers at once; ``acquire`` waits for one to be released.

Pinned memory can be unavailable (locked-memory limits, some containers and drivers): every pinned allocation
goes through ``pinned_empty``, which raises ``PinnedMemoryError``, and ``Transfers(..., pinned=False)`` works
without pinned buffers or the copy stream: synchronous uploads and ``.cpu()`` copies, as on the CPU.
"""

from __future__ import annotations

import queue

import numpy as np
import torch

from .encodings import array_to_tensor

IN_FLIGHT = 2  # batches whose host buffers may be in use at once: one being published, one being computed
PINNED_PROBE_BYTES = 1 << 20  # ``check_pinned``: a start-up allocation that fails where pinned memory is unusable


class PinnedMemoryError(RuntimeError):
    """A pinned (page-locked) host allocation failed; the pipeline can run without pinned memory instead."""


def pinned_empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised pinned host tensor; every failure is one PinnedMemoryError naming what was asked for."""
    try:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise PinnedMemoryError(
            f"pinned allocation of {tuple(shape)} {dtype} failed: {type(e).__name__}: {lines[0] if lines else ''}"
        ) from e


def host_payload(tensor: torch.Tensor) -> bytes:
    """The bytes of a host tensor (one memcpy out of the pinned landing buffer, which the next batch reuses)."""
    return tensor.numpy().tobytes()


class HostBuffers:
    """Pinned host memory for one batch in flight: staged inputs and each output's landing buffer, by name."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.done: torch.cuda.Event | None = None

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        buf = self.tensors.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self.tensors[name] = pinned_empty(like.shape, like.dtype)
        return buf


class Transfers:
    """The copies of one pipeline. ``pinned``: stage through pinned buffers (default: on CUDA only)."""

    def __init__(self, device: torch.device, pinned: bool | None = None) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.pinned = self.cuda if pinned is None else pinned
        self._free: queue.Queue[HostBuffers] = queue.Queue()
        for _ in range(IN_FLIGHT if self.pinned else 0):
            self._free.put(HostBuffers())
        self._copy_stream = torch.cuda.Stream(device) if self.pinned and self.cuda else None

    def check_pinned(self) -> None:
        """Raise PinnedMemoryError now, at start-up, where pinned memory cannot be had at all."""
        if self.pinned:
            pinned_empty((PINNED_PROBE_BYTES,), torch.uint8)  # freed at once (into the host allocator's cache)

    def acquire(self) -> HostBuffers | None:
        """Buffers for one batch (waits while ``IN_FLIGHT`` batches hold theirs); None without pinning."""
        return self._free.get() if self.pinned else None

    def release(self, buffers: HostBuffers | None) -> None:
        if buffers is not None:
            self._free.put(buffers)

    def upload(self, raw: np.ndarray, buffers: HostBuffers | None, name: str = "input") -> torch.Tensor:
        """The raw image on the device: one copy, staged in pinned memory when pinned, so it can be asynchronous."""
        pixels = array_to_tensor(raw)
        if buffers is None:
            return pixels.to(self.device)
        staged = buffers.get(name, pixels)
        staged.copy_(pixels)
        return staged.to(self.device, non_blocking=True)

    def to_host(self, device_out: dict[str, torch.Tensor], buffers: HostBuffers | None) -> dict[str, torch.Tensor]:
        """One device-to-host copy per output; on CUDA queued on the copy stream into the pinned buffers."""
        if buffers is None:
            return {name: t.cpu() for name, t in device_out.items()}
        if self._copy_stream is None:  # pinned staging without a device (tests): plain synchronous copies
            outputs = {}
            for name, t in device_out.items():
                outputs[name] = buffers.get(name, t)
                outputs[name].copy_(t)
            buffers.done = None
            return outputs
        compute = torch.cuda.current_stream(self.device)
        self._copy_stream.wait_stream(compute)
        outputs = {}
        with torch.cuda.stream(self._copy_stream):
            for name, t in device_out.items():
                host = buffers.get(name, t)
                host.copy_(t, non_blocking=True)
                t.record_stream(self._copy_stream)  # its memory is not reused before the copy is done
                outputs[name] = host
            buffers.done = torch.cuda.Event()
            buffers.done.record(self._copy_stream)
        return outputs

    @staticmethod
    def wait(buffers: HostBuffers | None) -> None:
        """Block until the batch's copies into ``buffers`` have landed."""
        if buffers is not None and buffers.done is not None:
            buffers.done.synchronize()
