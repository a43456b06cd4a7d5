"""SIGINT / SIGTERM handling for our executables: one clean exit, whenever and however often they arrive.

``ros2 launch`` without a tty forwards SIGINT to its nodes, so a Ctrl-C-style SIGINT to the process group
arrives twice; systemd and docker send SIGTERM. rclpy's own handlers turn the second SIGINT into a
KeyboardInterrupt wherever the main thread happens to be (inside shutdown, a join, a destructor), and a SIGINT
during start-up into an RCLError traceback. So our executables install these handlers instead (after
``rclpy.init(..., signal_handler_options=SignalHandlerOptions.NO)``):

- while spinning, a signal only sets ``requested``; the spin loop sees it within one ``spin_once`` timeout;
- inside ``interruptible()`` (start-up: loading, downloading, configuring), a signal raises :class:`Interrupted`,
  which is a ``BaseException`` so that no ``except Exception`` on the way swallows it;
- once shutdown has begun, further signals are ignored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived during start-up (or another ``interruptible`` phase)."""


class StopSignals:
    """Installs SIGINT/SIGTERM handlers (main thread only) and records that a stop was asked for."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._interruptible = 0
        self._stopping = False
        self.received: list[str] = []

    def install(self) -> StopSignals:
        for sig in HANDLED:
            signal.signal(sig, self._handle)
        return self

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        """Ask for a stop from code (e.g. a lifecycle shutdown transition)."""
        self._event.set()

    def stopping(self) -> None:
        """Shutdown has begun: from now on signals are ignored, whatever phase the code is in.

        Ignored by the OS, not just by our handler: interpreter finalisation (slow with torch loaded) puts the
        default handlers back, and a second SIGINT arriving then would still kill the process with -2.
        """
        self._stopping = True
        self._event.set()
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_IGN)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A phase (start-up, configure) that a signal should abort at once rather than after it ends."""
        if self.requested and not self._stopping:
            raise Interrupted(self.received[-1] if self.received else "stop requested")
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        first = not self._event.is_set()
        self._event.set()
        if first and self._interruptible and not self._stopping:
            raise Interrupted(signal.Signals(signum).name)
