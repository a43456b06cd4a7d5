"""The node's two threads over a latest-frame mailbox: one submits frames to the model, one publishes results.

On CUDA ``submit`` only queues the device work, so publishing frame N overlaps computing frame N+1. Neither
thread ever blocks the ROS executor, and ``stop`` is bounded: a thread still inside a long forward pass is
reported, not waited for.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .latest import LatestSlot

F = TypeVar("F")  # a frame to compute
J = TypeVar("J")  # a submitted job to publish


class FrameWorker(Generic[F, J]):
    """Args:
    submit: frame -> job to publish (or None when the frame was dropped); called on the inference thread.
    publish: job -> None; called on the publisher thread.
    idle: called on the inference thread between frames (e.g. warm-up), at least every ``poll`` seconds.
    """

    def __init__(
        self,
        submit: Callable[[F], J | None],
        publish: Callable[[J], None],
        idle: Callable[[], None] | None = None,
        poll: float = 0.2,
    ) -> None:
        self._submit, self._publish, self._idle, self._poll = submit, publish, idle, poll
        self.slot: LatestSlot[F] = LatestSlot()
        self._jobs: queue.Queue[J | None] = queue.Queue(maxsize=1)
        self._threads = [
            threading.Thread(target=self._work, name="zoedepth-inference", daemon=True),
            threading.Thread(target=self._publish_loop, name="zoedepth-publish", daemon=True),
        ]

    def start(self) -> FrameWorker[F, J]:
        for t in self._threads:
            t.start()
        return self

    def put(self, frame: F) -> bool:
        """Hand over the newest frame; True if it replaced one the inference thread had not taken yet."""
        return self.slot.put(frame)

    @property
    def replaced(self) -> int:
        return self.slot.replaced

    def stop(self, timeout: float) -> bool:
        """Stop taking frames and wait at most ``timeout`` s for both threads; True if they have ended."""
        self.slot.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        try:
            while not self.slot.closed:
                if self._idle is not None:
                    self._idle()
                frame = self.slot.take(timeout=self._poll)
                if frame is None:
                    continue
                job = self._submit(frame)
                if job is not None:
                    self._jobs.put(job)
        finally:
            self._jobs.put(None)

    def _publish_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._publish(job)
