"""Which frames go through the model together: one latest-frame mailbox per camera, batches by key. No ROS here.

Each camera has one place for its newest frame: a newer frame replaces a waiting one (counted for that camera),
so inference never works on a backlog. The inference thread takes a batch: the camera that has waited longest
goes first, with the waiting frames of other cameras that have the same key (image size and model settings:
``pipeline.batch_key``), longest-waiting first, up to ``max_batch``.

A camera waits from its first untaken frame: a newer frame takes over the waiting one's place in the queue. So
every camera is served within one take per camera, however fast it sends (ordering by the newest frame's age
instead would always put the fastest camera last, and starve it once the model falls behind). A camera that
stops sending holds nothing back (nothing is ever waited for), and a bad frame never gets in (the caller checks
it before ``put``).

A frame that the engine still turns away (``FrameError`` names its index) is dropped alone: ``submit_good``
resubmits the others. Batches form when frames accumulate, that is when the model is busy: nothing is delayed to
wait for a partner.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..engine.pipeline import FrameError

F = TypeVar("F")
J = TypeVar("J")


@dataclass(frozen=True)
class Waiting(Generic[F]):
    """A camera's frame in the mailbox; ``order``: when its camera started waiting (smaller: longer ago)."""

    camera: str
    frame: F
    key: Hashable
    order: int = field(compare=False)


class CameraMailbox(Generic[F]):
    """The newest frame of each camera, and the batches the inference thread takes from them.

    Args:
        cameras: the camera names (``put`` refuses others).
        max_batch: at most this many frames per batch (1: one frame at a time, oldest first).
    """

    def __init__(self, cameras: Sequence[str], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera names repeat: {list(cameras)}")
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._waiting: dict[str, Waiting[F]] = {}
        self._order = itertools.count()
        self._closed = False
        self.replaced: dict[str, int] = dict.fromkeys(cameras, 0)  # frames replaced before inference took them

    def put(self, camera: str, frame: F, key: Hashable) -> bool:
        """Store ``camera``'s newest frame; True if it replaced one nobody had taken yet."""
        if camera not in self.replaced:
            raise KeyError(f"unknown camera {camera!r}")
        with self._cond:
            if self._closed:
                return False
            old = self._waiting.get(camera)
            if old is not None:
                self.replaced[camera] += 1
            order = old.order if old is not None else next(self._order)  # the camera keeps its place in the queue
            self._waiting[camera] = Waiting(camera, frame, key, order)
            self._cond.notify()
            return old is not None

    def take(self, timeout: float | None = None) -> list[Waiting[F]]:
        """The next batch (longest-waiting camera first), emptying those cameras' places; [] on timeout or after
        ``close``."""
        with self._cond:
            if not self._waiting and not self._closed:
                self._cond.wait(timeout)
            if not self._waiting:
                return []
            first = min(self._waiting.values(), key=lambda w: w.order)
            partners = sorted(
                (w for w in self._waiting.values() if w is not first and w.key == first.key), key=lambda w: w.order
            )
            batch = [first, *partners[: self.max_batch - 1]]
            for w in batch:
                del self._waiting[w.camera]
            return batch

    @property
    def waiting(self) -> int:
        """How many cameras have a frame waiting."""
        with self._cond:
            return len(self._waiting)

    def close(self) -> None:
        """Wake the inference thread and take no more frames; the waiting ones are discarded."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def warmup_plan(sizes: Sequence[tuple[int, int]], max_batch: int) -> dict[tuple[int, int], list[int]]:
    """The batch sizes to warm up per image size, from the (height, width) of each camera: n cameras of one size
    can make batches of 1 to min(n, max_batch) frames."""
    counts: dict[tuple[int, int], int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return {size: list(range(1, min(n, max_batch) + 1)) for size, n in counts.items()}


def submit_good(
    submit: Callable[[list[Waiting[F]]], J],
    batch: Sequence[Waiting[F]],
    reject: Callable[[Waiting[F], FrameError], None],
) -> tuple[J, list[Waiting[F]]] | None:
    """``submit(frames)``, and again without frame i each time it raises FrameError for index i (``reject`` gets
    that frame); returns the job and the frames in it, or None when none was left. Other errors propagate."""
    frames = list(batch)
    while frames:
        try:
            return submit(frames), frames
        except FrameError as e:
            if not 0 <= e.index < len(frames):
                raise
            reject(frames.pop(e.index), e)
    return None
