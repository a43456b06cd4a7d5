"""Writing the output rosbag2 without ROS (``rosbags``): the typestore, the messages and an all-or-nothing bag.

The messages carry the same fields as the node's (``messages.py``), built with rosbags' message classes from the
same ``DepthFrame`` and the same field tables (``message_fields.py``): a depth bag and the node's topics hold
the same numbers. ``zoedepth_ros/msg/DepthRouting`` is registered from its ``.msg`` file, so its definition is
stored in the bag (``ros2 bag info`` and rosbags read it without our package).

The bag is written into a temporary folder beside OUTPUT (``.NAME.partial-PID/NAME``, so that its storage file
already has its final name) and renamed to OUTPUT only when it is complete; ``abort`` removes it. OUTPUT itself is
replaced only with ``force``, and only at that final rename.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.cloud import cloud_fields
from ..engine.intrinsics import camera_info_fields
from ..engine.pipeline import DepthFrame
from ..ros.message_fields import COLORMAP_ENCODING, DEPTH_ENCODING, cloud_layout, image_fields

ROUTING_TYPE = "zoedepth_ros/msg/DepthRouting"
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 9  # rosbag2 metadata version (Jazzy and newer; Humble's ros2 bag reads it too)


class OutputError(Exception):
    """OUTPUT cannot be written (exists without --force, or its folder is unusable); one line."""


ROUTING_MSG = "DepthRouting.msg"  # package data: a link to msg/DepthRouting.msg, copied into wheels (setup.py)


def routing_definition_path() -> Path:
    """Where msg/DepthRouting.msg is read from: the package's own copy (every pip install, editable or not, a
    wheel on a Ray worker), else an ament prefix's share/zoedepth_ros/msg (a colcon install)."""
    candidates = [Path(__file__).resolve().with_name(ROUTING_MSG)]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    candidates += [Path(p) / "share" / "zoedepth_ros" / "msg" / ROUTING_MSG for p in prefixes if p]
    for path in candidates:
        if path.is_file():
            return path
    raise OutputError(
        f"{ROUTING_MSG} not found (zoedepth_ros/offline/{ROUTING_MSG} in the package, or share/zoedepth_ros/msg in "
        "an ament prefix): reinstall the package"
    )


def routing_definition() -> str:
    """The text of msg/DepthRouting.msg (see ``routing_definition_path``)."""
    return routing_definition_path().read_text()


def output_typestore():
    """ROS 2 Kilted's message types plus zoedepth_ros/msg/DepthRouting."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(routing_definition(), ROUTING_TYPE))
    return store


def _u8(data: bytes | None) -> np.ndarray:
    return np.frombuffer(data or b"", dtype=np.uint8)


class Messages:
    """Output messages for one typestore, field for field as ``messages.py`` builds them for the node."""

    def __init__(self, store) -> None:
        self.store = store
        t = store.types
        self.Image = t["sensor_msgs/msg/Image"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.RegionOfInterest = t["sensor_msgs/msg/RegionOfInterest"]
        self.PointCloud2 = t["sensor_msgs/msg/PointCloud2"]
        self.PointField = t["sensor_msgs/msg/PointField"]
        self.DepthRouting = t[ROUTING_TYPE]

    def depth_image(self, frame: DepthFrame, header) -> Any:
        return self.Image(header=header, **image_fields(frame, DEPTH_ENCODING), data=_u8(frame.depth))

    def colormap_image(self, frame: DepthFrame, header) -> Any:
        return self.Image(header=header, **image_fields(frame, COLORMAP_ENCODING), data=_u8(frame.colormap))

    def depth_camera_info(self, frame: DepthFrame, header, template) -> Any:
        f = camera_info_fields(frame.intrinsics, template)
        return self.CameraInfo(
            header=header,
            height=f["height"],
            width=f["width"],
            distortion_model=f["distortion_model"],
            d=np.asarray(f["d"], dtype=np.float64),
            k=np.asarray(f["k"], dtype=np.float64),
            r=np.asarray(f["r"], dtype=np.float64),
            p=np.asarray(f["p"], dtype=np.float64),
            binning_x=f["binning_x"],
            binning_y=f["binning_y"],
            roi=self.RegionOfInterest(**f["roi"]),
        )

    def point_cloud(self, frame: DepthFrame, header, color: bool) -> Any:
        return self.PointCloud2(
            header=header,
            fields=[self.PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in cloud_fields(color)],
            data=_u8(frame.cloud),
            **cloud_layout(frame, color),
        )

    def routing(self, frame: DepthFrame, header) -> Any:
        return self.DepthRouting(
            header=header,
            domain=frame.domain,
            head=frame.head,
            probability=float(frame.probability),
            logits=np.asarray(frame.logits, dtype=np.float32),
            forced=bool(frame.forced),
        )


class BagOutput:
    """A rosbag2 being written: ``write`` / ``write_raw`` while open, then ``commit`` (rename into place) or
    ``abort`` (remove). As a context manager an exception (or Ctrl-C) aborts."""

    def __init__(self, output: str | Path, storage: str, store, *, force: bool = False) -> None:
        if storage not in STORAGES:
            raise OutputError(f"unknown storage {storage!r}; use {' or '.join(STORAGES)}")
        self.output = Path(output)
        self.storage, self.store, self.force = storage, store, force
        if self.output.exists() or self.output.is_symlink():
            if not force:
                raise OutputError(f"{self.output} exists; use --force to replace it")
            if not self.output.is_dir() or not (self.output / "metadata.yaml").is_file():
                raise OutputError(f"{self.output} exists and is not a rosbag2 bag; not replacing it, even with --force")
        parent = self.output.parent
        if not parent.is_dir():
            raise OutputError(f"{parent} is not a folder (the bag {self.output.name} would go there)")
        self.partial = parent / f".{self.output.name}.partial-{os.getpid()}"  # removed on commit or abort
        self._bag = self.partial / self.output.name
        self._writer = None
        self._connections: dict[tuple[str, str], Any] = {}
        self.counts: dict[str, int] = {}

    def open(self) -> BagOutput:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if self.partial.exists():  # a previous run of this very process id was killed: ours to remove
            shutil.rmtree(self.partial)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self.partial.mkdir()
            self._writer = Writer(self._bag, version=BAG_VERSION, storage_plugin=plugin)
            self._writer.open()
        except Exception as e:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise OutputError(f"cannot create {self._bag}: {e}") from None
        return self

    def _connection(self, topic: str, msgtype: str, msgdef: str | None = None, digest: str | None = None):
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            if msgdef and digest:
                conn = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
            else:
                conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[key] = conn
        return conn

    def write(self, topic: str, msg: Any, log_time: int) -> None:
        """Serialize ``msg`` (a rosbags message of this typestore) onto ``topic`` at ``log_time`` (ns)."""
        msgtype = msg.__msgtype__
        conn = self._connection(topic, msgtype)
        self._writer.write(conn, log_time, self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_raw(self, connection, log_time: int, data: bytes) -> None:
        """Copy an input message as it is (``--copy-input``), with the input's definition of its type."""
        msgdef = connection.msgdef.data if getattr(connection.msgdef, "data", "") else None
        conn = self._connection(connection.topic, connection.msgtype, msgdef, connection.digest or None)
        self._writer.write(conn, log_time, data)
        self.counts[connection.topic] = self.counts.get(connection.topic, 0) + 1

    def commit(self) -> None:
        """Finish the bag and move it to OUTPUT (replacing an old OUTPUT only now, with ``force``)."""
        writer, self._writer = self._writer, None
        writer.close()
        old = None
        if self.output.exists() and not self.force:  # appeared while we were writing
            self.abort()
            raise OutputError(f"{self.output} appeared while the bag was being written; not replacing it")
        if self.output.exists():
            old = self.output.parent / f".{self.output.name}.old-{os.getpid()}"
            os.replace(self.output, old)
        os.replace(self._bag, self.output)
        shutil.rmtree(self.partial, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written; OUTPUT is left as it was."""
        writer, self._writer = self._writer, None
        if writer is not None and writer.storage is not None:
            try:
                writer.storage.abort()
            except Exception:
                pass
        shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> BagOutput:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
