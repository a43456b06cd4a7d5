"""Reading rosbag2 recordings without ROS (``rosbags``): camera discovery, streaming, stamp pairing.

A camera is an image topic (``sensor_msgs/msg/Image``, or ``sensor_msgs/msg/CompressedImage`` on ``.../compressed``)
with a ``camera_info`` beside it: ``NS/image`` or ``NS/image_raw`` (or ``NS/image/compressed``) goes with
``NS/camera_info``, as image_transport and camera drivers name them. Images under a ``depth`` namespace are depth
maps, not camera images, and are never taken (this also keeps a processed bag's own outputs out).

Messages are streamed in log-time order (rosbags reads one chunk or one query page at a time), so memory does not
grow with the bag; the pairer holds at most ``MAX_PENDING`` images and ``INFO_HISTORY`` CameraInfos per camera.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED)
INFO_HISTORY = 256  # CameraInfos kept per camera for images logged after them
MAX_PENDING = 64  # images per camera waiting for their CameraInfo; beyond that the oldest is given up

T = TypeVar("T")


class BagError(Exception):
    """The input cannot be used (missing, corrupt or truncated bag, no camera in it); one line, exit status 2."""


@dataclass(frozen=True)
class Camera:
    """One camera of the bag: its image topic, the CameraInfo topic beside it and the namespace of its outputs."""

    namespace: str  # "/cam0"; "" for topics at the root ("/image" + "/camera_info")
    image_topic: str
    info_topic: str
    compressed: bool

    def topic(self, name: str) -> str:
        """An output topic in the camera's namespace: ``topic("depth/image")`` -> "/cam0/depth/image"."""
        return f"{self.namespace}/{name}"


def _parent(topic: str) -> str:
    return topic.rstrip("/").rpartition("/")[0]


def camera_of(topic: str, msgtype: str) -> Camera:
    """The camera an image topic belongs to (its CameraInfo topic need not exist)."""
    compressed = msgtype == COMPRESSED
    base = _parent(topic) if compressed and topic.endswith("/compressed") else topic
    namespace = _parent(base)
    return Camera(namespace, topic, f"{namespace}/camera_info", compressed)


def _is_depth(camera: Camera) -> bool:
    return "depth" in camera.namespace.split("/")


def describe_topics(topics: Mapping[str, tuple[str, int]]) -> str:
    """ "/a (sensor_msgs/msg/Image, 10 messages), ..." for error messages."""
    if not topics:
        return "no topics"
    return ", ".join(f"{t} ({typ}, {n} messages)" for t, (typ, n) in sorted(topics.items()))


def discover(topics: Mapping[str, tuple[str, int]], namespaces: Sequence[str] = ()) -> list[Camera]:
    """The cameras of a bag whose ``topics`` are {topic: (msgtype, count)}: all of them, or those of ``namespaces``.

    A raw image topic is preferred over a compressed one of the same namespace (the same frames, lossless).
    Raises BagError listing what the bag holds when nothing (or a requested namespace) is found.
    """
    candidates = [camera_of(t, typ) for t, (typ, _) in sorted(topics.items()) if typ in IMAGE_TYPES]
    by_namespace: dict[str, Camera] = {}
    for cam in candidates:
        if _is_depth(cam) or topics.get(cam.info_topic, ("", 0))[0] != CAMERA_INFO:
            continue
        have = by_namespace.get(cam.namespace)
        # raw before compressed; of two raw topics ("image" and "image_raw") the first in sorted order
        if have is None or (have.compressed and not cam.compressed):
            by_namespace[cam.namespace] = cam
    if namespaces:
        cameras = []
        for ns in namespaces:
            key = "/" + ns.strip("/") if ns.strip("/") else ""
            if key not in by_namespace:
                raise BagError(
                    f"no camera in namespace {key or '/'}: expected an image topic ({key}/image, {key}/image_raw or "
                    f".../compressed) and {key}/camera_info; the bag holds {describe_topics(topics)}"
                )
            if by_namespace[key] not in cameras:
                cameras.append(by_namespace[key])
        return cameras
    if not by_namespace:
        raise BagError(
            "no camera found (an image topic, sensor_msgs/msg/Image or CompressedImage on .../compressed, with "
            f"NS/camera_info beside it; choose one with --camera NS); the bag holds {describe_topics(topics)}"
        )
    return list(by_namespace.values())


# ---------------------------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class Paired(Generic[T]):
    image: T
    info: Any
    exact: bool


@dataclass(frozen=True)
class Unpaired(Generic[T]):
    image: T
    reason: str  # "no_camera_info"
    message: str


class ExactPairer(Generic[T]):
    """Pairs one camera's images with its CameraInfos by header stamp (integer ns), in either order.

    Unlike the node's ``pairing.StampPairer`` nothing is superseded: offline every frame is processed. An image
    whose CameraInfo is logged later waits; it is given up when a CameraInfo with a newer stamp shows that its own
    will not come (one publisher's messages are in order), when ``max_pending`` newer images wait, or at the end
    (``flush``). Then, with ``tolerance`` > 0 (seconds), the CameraInfo closest in stamp is used if it is close
    enough, as the node's camera_info_tolerance does.
    """

    def __init__(self, tolerance: float = 0.0, history: int = INFO_HISTORY, max_pending: int = MAX_PENDING) -> None:
        self.tolerance_ns = round(tolerance * 1e9)
        self._infos: deque[tuple[int, Any]] = deque(maxlen=history)
        self._pending: deque[tuple[int, T]] = deque()
        self._max_pending = max_pending
        self.exact = 0
        self.nearby = 0

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def add_info(self, stamp: int, info: Any) -> list[Paired[T] | Unpaired[T]]:
        self._infos.append((stamp, info))
        out: list[Paired[T] | Unpaired[T]] = []
        keep: deque[tuple[int, T]] = deque()
        for s, image in self._pending:
            if s == stamp:
                out.append(self._pair(image, info, exact=True))
            elif s < stamp:
                out.append(self._resolve(s, image))
            else:
                keep.append((s, image))
        self._pending = keep
        return out

    def add_image(self, stamp: int, image: T) -> list[Paired[T] | Unpaired[T]]:
        info = next((c for s, c in reversed(self._infos) if s == stamp), None)
        if info is not None:
            return [self._pair(image, info, exact=True)]
        if self._infos and self._infos[-1][0] > stamp:
            return [self._resolve(stamp, image)]  # its CameraInfo would have come before the newer one
        self._pending.append((stamp, image))
        out: list[Paired[T] | Unpaired[T]] = []
        while len(self._pending) > self._max_pending:
            out.append(self._resolve(*self._pending.popleft()))
        return out

    def flush(self) -> list[Paired[T] | Unpaired[T]]:
        """The end of the bag: resolve every waiting image."""
        out = [self._resolve(s, image) for s, image in self._pending]
        self._pending.clear()
        return out

    def _pair(self, image: T, info: Any, exact: bool) -> Paired[T]:
        if exact:
            self.exact += 1
        else:
            self.nearby += 1
        return Paired(image, info, exact)

    def _resolve(self, stamp: int, image: T) -> Paired[T] | Unpaired[T]:
        if self.tolerance_ns > 0 and self._infos:
            s, info = min(self._infos, key=lambda si: abs(si[0] - stamp))
            if abs(s - stamp) <= self.tolerance_ns:
                return self._pair(image, info, exact=False)
        if not self._infos:
            why = "no CameraInfo before it or with its stamp"
        else:
            gap = min(abs(s - stamp) for s, _ in self._infos) * 1e-9
            why = f"no CameraInfo with its stamp (the closest is {gap:.3f} s away)"
        return Unpaired(image, "no_camera_info", why)


# ---------------------------------------------------------------------------------------------- reading


def _reader_errors() -> tuple[type[BaseException], ...]:
    """What rosbags (and the decompressors and struct unpacking under it) raise on a damaged file."""
    import struct
    import zlib

    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError

    errors: list[type[BaseException]] = [AnyReaderError, ReaderError, struct.error, zlib.error, EOFError, OSError]
    try:
        import sqlite3

        errors.append(sqlite3.DatabaseError)
    except ImportError:  # pragma: no cover - sqlite3 is in the standard library
        pass
    try:
        from apsw import Error as ApswError

        errors.append(ApswError)
    except ImportError:
        pass
    return tuple(errors)


def damage_text(path: Path, exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    return f"{path}: corrupt or truncated bag ({type(exc).__name__}: {text})"


class BagSource:
    """An open rosbag2 recording (a directory with metadata.yaml, or a single .mcap / .db3 file)."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag")
        if self.path.suffix == ".bag":
            raise BagError(f"{self.path}: a ROS 1 bag; convert it first (rosbags-convert) or give a rosbag2 bag")
        self._errors = _reader_errors()
        try:
            self.reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_KILTED))
            self.reader.open()
        except FileNotFoundError as e:  # a directory without metadata.yaml
            raise BagError(f"{self.path}: not a rosbag2 bag ({e})") from None
        except self._errors as e:
            raise BagError(damage_text(self.path, e)) from None
        except Exception as e:  # rosbags can fail in many ways on a damaged file (KeyError, ValueError, ...)
            raise BagError(damage_text(self.path, e)) from None

    @property
    def storage(self) -> str:
        """ "mcap" or "sqlite3", the storage of the input (the default for the output)."""
        reader = self.reader.readers[0]
        storages = getattr(reader.storage, "storages", [reader.storage])
        name = type(storages[0]).__name__.lower() if storages else ""
        return "mcap" if "mcap" in name else "sqlite3"

    @property
    def start_time(self) -> int:
        return self.reader.start_time

    @property
    def end_time(self) -> int:
        return self.reader.end_time

    def topics(self) -> dict[str, tuple[str, int]]:
        return {t: (info.msgtype or "?", info.msgcount) for t, info in self.reader.topics.items()}

    def connections(self, topics: Sequence[str] = ()) -> list:
        wanted = set(topics)
        return [c for c in self.reader.connections if not wanted or c.topic in wanted]

    def messages(self, connections: Sequence, start: int | None = None, stop: int | None = None) -> Iterator:
        """(connection, log time ns, serialized bytes) in log-time order; damage is a BagError when it is read."""
        try:
            yield from self.reader.messages(connections=connections, start=start, stop=stop)
        except self._errors as e:
            raise BagError(damage_text(self.path, e)) from None
        except (KeyError, ValueError, IndexError, AssertionError) as e:  # a broken record inside a chunk
            raise BagError(damage_text(self.path, e)) from None

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        """The message; raises ValueError (one line) for bytes that are not a valid message of that type."""
        try:
            return self.reader.deserialize(data, msgtype)
        except Exception as e:
            raise ValueError(f"cannot deserialize {msgtype} ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:
            pass

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
