"""Image / CameraInfo pairing by exact stamp, whichever of the two arrives first. No ROS import here.

Drivers publish an image and its CameraInfo with the same stamp, in either order. An image whose CameraInfo is
already here pairs at once. Otherwise it waits (at most ``wait`` seconds, at most ``MAX_PENDING`` images) for
the CameraInfo with its stamp; when the wait ends without one (or a CameraInfo newer than the image shows that
its own will not come: one publisher's messages arrive in order), the tolerance rule applies: the CameraInfo
closest in stamp, if it is within ``tolerance`` seconds. When an image pairs, the images older than it that
still wait are given up: the newest frame wins, as in the worker's mailbox.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the image payload
C = TypeVar("C")  # the CameraInfo payload

INFO_HISTORY = 30  # CameraInfos kept for matching: one second at 30 Hz
MAX_PENDING = 8  # images waiting for their CameraInfo at once; an older one is resolved when one more arrives


@dataclass(frozen=True)
class Paired(Generic[I, C]):
    image: I
    info: C
    exact: bool  # the CameraInfo has the image's stamp (else: the closest one, within the tolerance)
    waited: float  # seconds the image waited for its CameraInfo


@dataclass(frozen=True)
class Unpaired(Generic[I]):
    image: I
    reason: str  # "no_camera_info", "camera_info_late" or "superseded"
    message: str


@dataclass
class PairingStats:
    exact: int = 0
    tolerance: int = 0
    waited: int = 0  # images that arrived before their CameraInfo
    max_wait: float = 0.0  # seconds, of the images that paired after waiting
    dropped: dict[str, int] = field(default_factory=dict)
    infos_without_image: int = 0  # CameraInfos whose image never came: lost in transport, or a wrong image topic


@dataclass
class _Pending(Generic[I]):
    stamp: int
    image: I
    since: float


class StampPairer(Generic[I, C]):
    """Matches images to CameraInfos by stamp (integer nanoseconds); the caller passes the clock in seconds."""

    def __init__(self, history: int = INFO_HISTORY, max_pending: int = MAX_PENDING) -> None:
        self._infos: deque[tuple[int, C]] = deque(maxlen=history)
        self._pending: deque[_Pending[I]] = deque()
        self._max_pending = max_pending
        self._unseen: dict[int, float] = {}  # stamp -> arrival of CameraInfos no image has claimed yet
        self.stats = PairingStats()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def add_info(
        self, stamp: int, info: C, now: float, tolerance: float, watch: bool = True
    ) -> list[Paired[I, C] | Unpaired[I]]:
        """File a CameraInfo; returns the waiting images it settles (its own, and older ones it proves late).

        ``watch``: images are expected for it (someone wants the outputs), so one that never comes is counted.
        """
        self._infos.append((stamp, info))
        if watch and not any(p.stamp == stamp for p in self._pending):
            self._unseen[stamp] = now
            while len(self._unseen) > 4 * (self._infos.maxlen or INFO_HISTORY):
                self._unseen.pop(next(iter(self._unseen)))
                self._count_missing_image()
        out: list[Paired[I, C] | Unpaired[I]] = []
        match = next((p for p in self._pending if p.stamp == stamp), None)
        if match is not None:
            out += self._settle_older_than(match.stamp)
            self._pending.remove(match)
            out.append(self._paired(match, info, exact=True, now=now))
        # images older than this CameraInfo will not see their own: this publisher has moved past them
        while self._pending and self._pending[0].stamp < stamp:
            out.append(self._resolve(self._pending.popleft(), now, tolerance))
        return self._newest_wins(out)

    def add_image(
        self, stamp: int, image: I, now: float, wait: float, tolerance: float
    ) -> list[Paired[I, C] | Unpaired[I]]:
        """File an image; returns what is settled now (possibly nothing, while it waits)."""
        self._unseen.pop(stamp, None)
        info = next((c for s, c in reversed(self._infos) if s == stamp), None)
        if info is not None:
            out = self._settle_older_than(stamp)
            out.append(self._paired(_Pending(stamp, image, now), info, exact=True, now=now))
            return self._newest_wins(out)
        pending = _Pending(stamp, image, now)
        newest_info = self._infos[-1][0] if self._infos else None
        if wait <= 0 or (newest_info is not None and newest_info > stamp):
            return self._newest_wins([self._resolve(pending, now, tolerance)])  # its CameraInfo will not come
        self.stats.waited += 1
        self._pending.append(pending)
        out: list[Paired[I, C] | Unpaired[I]] = []
        while len(self._pending) > self._max_pending:
            out.append(self._resolve(self._pending.popleft(), now, tolerance))
        return self._newest_wins(out)

    def expire(self, now: float, wait: float, tolerance: float) -> list[Paired[I, C] | Unpaired[I]]:
        """Resolve the images that have waited ``wait`` seconds; call it periodically.

        Also counts the CameraInfos whose image has not come ``wait`` + 1 s after them: large images that the
        middleware lost (often without any message-lost event) show up here, since their CameraInfos still arrive.
        """
        horizon = now - wait - 1.0
        while self._unseen:
            stamp, since = next(iter(self._unseen.items()))
            if since > horizon:
                break
            del self._unseen[stamp]
            self._count_missing_image()
        out: list[Paired[I, C] | Unpaired[I]] = []
        while self._pending and now - self._pending[0].since >= wait:
            out.append(self._resolve(self._pending.popleft(), now, tolerance))
        return self._newest_wins(out)

    def clear(self) -> None:
        self._infos.clear()
        self._pending.clear()
        self._unseen.clear()

    # ------------------------------------------------------------------ internals

    def _count_missing_image(self) -> None:
        # a driver whose CameraInfo stamps never equal its images' pairs by tolerance: its CameraInfos are not
        # "missing" an image, so they are only counted where exact pairing is the rule
        if self.stats.tolerance <= self.stats.exact:
            self.stats.infos_without_image += 1

    @staticmethod
    def _paired(pending: _Pending[I], info: C, exact: bool, now: float) -> Paired[I, C]:
        return Paired(pending.image, info, exact, max(0.0, now - pending.since))

    def _unpaired(self, image: I, reason: str, message: str) -> Unpaired[I]:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        return Unpaired(image, reason, message)

    def _resolve(self, pending: _Pending[I], now: float, tolerance: float) -> Paired[I, C] | Unpaired[I]:
        """The tolerance rule, for an image whose own CameraInfo did not come."""
        if not self._infos:
            return self._unpaired(pending.image, "no_camera_info", "no CameraInfo received yet")
        stamp, info = min(self._infos, key=lambda si: abs(si[0] - pending.stamp))
        gap = abs(stamp - pending.stamp) * 1e-9
        if gap > tolerance:
            return self._unpaired(
                pending.image,
                "camera_info_late",
                f"no CameraInfo with the image's stamp, and the closest is {gap:.3f} s away "
                f"(camera_info_tolerance {tolerance:g} s)",
            )
        self._unseen.pop(stamp, None)
        return self._paired(pending, info, exact=False, now=now)

    def _settle_older_than(self, stamp: int) -> list[Paired[I, C] | Unpaired[I]]:
        """Give up the waiting images older than a frame that is ready now (the newest frame wins)."""
        out: list[Paired[I, C] | Unpaired[I]] = []
        while self._pending and self._pending[0].stamp < stamp:
            out.append(
                self._unpaired(
                    self._pending.popleft().image,
                    "superseded",
                    "a newer frame was ready before this image's CameraInfo came",
                )
            )
        return out

    def _newest_wins(self, out: list[Paired[I, C] | Unpaired[I]]) -> list[Paired[I, C] | Unpaired[I]]:
        """Of several frames paired at once, only the newest goes on (and is counted); the older are superseded."""
        paired = [i for i, r in enumerate(out) if isinstance(r, Paired)]
        for i in paired[:-1]:
            out[i] = self._unpaired(out[i].image, "superseded", "a newer frame was paired at the same time")
        if paired:
            r = out[paired[-1]]
            if r.exact:
                self.stats.exact += 1
            else:
                self.stats.tolerance += 1
            self.stats.max_wait = max(self.stats.max_wait, r.waited)
        return out
