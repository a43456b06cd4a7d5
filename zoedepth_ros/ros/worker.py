"""The node's two threads over the cameras' mailbox: one submits batches to the model, one publishes results.

On CUDA ``submit`` only queues the device work, so publishing batch N overlaps computing batch N+1. Neither
thread ever blocks the ROS executor, and ``stop`` is bounded: a thread still inside a long forward pass is
reported, not waited for.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from .batching import CameraMailbox, Waiting

F = TypeVar("F")  # a frame to compute
J = TypeVar("J")  # a submitted job to publish


class FrameWorker(Generic[F, J]):
    """Args:
    cameras: the camera names frames are ``put`` for.
    max_batch: at most this many frames per batch.
    submit: batch (a list of ``Waiting``) -> job to publish (or None when it was dropped); on the inference thread.
    publish: job -> None; called on the publisher thread.
    idle: called on the inference thread between batches (e.g. warm-up), at least every ``poll`` seconds.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        max_batch: int,
        submit: Callable[[list[Waiting[F]]], J | None],
        publish: Callable[[J], None],
        idle: Callable[[], None] | None = None,
        poll: float = 0.2,
    ) -> None:
        self._submit, self._publish, self._idle, self._poll = submit, publish, idle, poll
        self.mailbox: CameraMailbox[F] = CameraMailbox(cameras, max_batch)
        self._jobs: queue.Queue[J | None] = queue.Queue(maxsize=1)
        self._threads = [
            threading.Thread(target=self._work, name="zoedepth-inference", daemon=True),
            threading.Thread(target=self._publish_loop, name="zoedepth-publish", daemon=True),
        ]

    def start(self) -> FrameWorker[F, J]:
        for t in self._threads:
            t.start()
        return self

    def put(self, camera: str, frame: F, key: Hashable) -> bool:
        """Hand over ``camera``'s newest frame; True if it replaced one the inference thread had not taken yet."""
        return self.mailbox.put(camera, frame, key)

    def replaced(self, camera: str) -> int:
        return self.mailbox.replaced.get(camera, 0)

    def stop(self, timeout: float) -> bool:
        """Stop taking frames and wait at most ``timeout`` s for both threads; True if they have ended."""
        self.mailbox.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        try:
            while not self.mailbox.closed:
                if self._idle is not None:
                    self._idle()
                batch = self.mailbox.take(timeout=self._poll)
                if not batch:
                    continue
                job = self._submit(batch)
                if job is not None:
                    self._jobs.put(job)
        finally:
            self._jobs.put(None)

    def _publish_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._publish(job)
