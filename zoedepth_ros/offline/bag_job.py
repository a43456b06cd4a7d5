"""One bag through the engine: stream, pair, decode, batch, infer, write. No ROS import here.

Every frame in range is processed (no latest-frame dropping as in the node): paired frames wait in per-size
groups until ``batch`` of them can share one forward (frames of several cameras of the same size may share one),
and one batch is on the device while the next is being read and the previous one written. An image that cannot
be used (unknown encoding, undecodable data, no CameraInfo with its stamp, unusable CameraInfo, a device failure)
is skipped and counted by reason; the first of each reason is also logged with what was wrong.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine, FrameDropped
from ..engine.encodings import ImageError, decode_compressed, image_array_from_msg
from ..engine.intrinsics import CameraInfoError, Intrinsics
from ..engine.pipeline import FrameError, FrameInput, Settings, batch_key, check_frame
from .bag_reader import BagError, BagSource, Camera, ExactPairer, Paired, discover
from .bag_writer import BagOutput, Messages, OutputError, output_typestore
from .common import Progress, Summary

INFO_LEAD_S = 1.0  # with --start: CameraInfos logged this much earlier are read too, for the first images
OUTPUT_NAMES = ("depth/image", "depth/camera_info", "points", "depth/colormap", "routing")


@dataclass(frozen=True)
class BagOptions:
    cameras: Sequence[str] = ()  # namespaces; empty: every camera found
    start: float | None = None  # seconds from the start of the bag (log time)
    end: float | None = None
    every: int = 1  # every N-th image of each camera
    batch: int = 4
    copy_input: bool = False
    camera_info_tolerance: float = 0.0  # seconds; 0: exact stamps only


@dataclass
class _Item:
    """A paired, decoded frame waiting for the engine, and what its output messages need."""

    camera: Camera
    log_time: int
    header: Any
    info: Any
    frame: FrameInput


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class BagJob:
    """Runs ``engine`` over the cameras of one bag; counts go to ``summary``, log lines to ``log``."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        options: BagOptions,
        summary: Summary,
        *,
        log: Callable[[str], None] = print,
        progress: Callable[[int | None], Progress] | None = None,
    ) -> None:
        if options.batch < 1 or options.every < 1:
            raise ValueError("batch and every must be >= 1")
        self.engine, self.settings, self.options, self.summary = engine, settings, options, summary
        self.log = log
        self._progress_factory = progress or (lambda total: Progress(total, "zoedepth-ros-bag", disable=True))
        self._groups: dict[tuple, list[_Item]] = defaultdict(list)
        self._inflight: tuple[list[_Item], Any] | None = None
        self._logged: set[str] = set()
        self.engine_seconds = 0.0  # inside the engine (warm-up, submit, results): the rest is this tool's overhead
        self.no_valid_depth = 0

    # ------------------------------------------------------------------ the run

    def run(self, source: BagSource, output: BagOutput) -> None:
        """Process ``source`` into ``output`` (opened here, committed when everything is written)."""
        opts = self.options
        topics = source.topics()
        cameras = discover(topics, opts.cameras)
        self.summary.cameras = [c.image_topic for c in cameras]
        by_image = {c.image_topic: c for c in cameras}
        by_info = {c.info_topic: c for c in cameras}
        pairers = {c: ExactPairer[tuple[int, Any]](opts.camera_info_tolerance) for c in cameras}
        seen: dict[Camera, int] = defaultdict(int)

        begin = source.start_time
        start = begin + round(opts.start * 1e9) if opts.start is not None else None
        stop = begin + round(opts.end * 1e9) if opts.end is not None else None
        read_from = start - round(INFO_LEAD_S * 1e9) if start is not None else None
        wanted = [c.image_topic for c in cameras] + [c.info_topic for c in cameras]
        connections = source.connections([] if opts.copy_input else wanted)
        produced = {c.topic(name) for c in cameras for name in OUTPUT_NAMES}
        if opts.copy_input:
            clash = sorted({c.topic for c in connections} & produced)
            if clash:
                self.log(f"not copying input topics that this run writes: {', '.join(clash)}")
            connections = [c for c in connections if c.topic not in produced]
        total = None
        if start is None and stop is None:
            total = sum(topics[c.image_topic][1] for c in cameras)

        self.messages = Messages(output.store)
        self.output = output
        progress = self._progress_factory(total)
        output.open()
        try:
            for conn, log_time, data in source.messages(connections, read_from, stop):
                in_range = start is None or log_time >= start
                if opts.copy_input and in_range:
                    output.write_raw(conn, log_time, data)
                camera = by_image.get(conn.topic)
                if camera is not None and conn.msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
                    if not in_range:
                        continue
                    self.summary.frames_in += 1
                    progress.update()
                    index = seen[camera]
                    seen[camera] += 1
                    if index % opts.every:
                        self.summary.skip("every")
                        continue
                    try:
                        msg = source.deserialize(data, conn.msgtype)
                    except ValueError as e:
                        self._skip("bad_message", camera, log_time, str(e))
                        continue
                    self._settle(camera, pairers[camera].add_image(stamp_ns(msg.header), (log_time, msg)))
                    continue
                camera = by_info.get(conn.topic)
                if camera is not None and conn.msgtype == "sensor_msgs/msg/CameraInfo":
                    try:
                        info = source.deserialize(data, conn.msgtype)
                    except ValueError as e:
                        self._note("bad_camera_info_message", f"{conn.topic}: {e}")
                        continue
                    self._settle(camera, pairers[camera].add_info(stamp_ns(info.header), info))
            for camera, pairer in pairers.items():
                self._settle(camera, pairer.flush())
            for key in list(self._groups):
                self._run(self._groups.pop(key))
            self._finish()
            progress.close()
            if self.summary.frames_out == 0:  # an empty bag would pass for a finished job
                raise BagError(self._nothing_done())
            output.commit()
        except BaseException:  # a damaged bag, Ctrl-C, a failure: no half bag is left behind
            output.abort()
            progress.close()
            raise
        self.summary.extra.update(
            storage=output.storage,
            batch=opts.batch,
            pairing={c.image_topic: {"exact": p.exact, "tolerance": p.nearby} for c, p in pairers.items()},
            topics_written=dict(sorted(output.counts.items())),
            frames_without_valid_depth=self.no_valid_depth,
            engine_seconds=round(self.engine_seconds, 3),
        )

    # ------------------------------------------------------------------ frames

    def _settle(self, camera: Camera, results) -> None:
        for r in results:
            log_time, msg = r.image
            if isinstance(r, Paired):
                self._accept(camera, log_time, msg, r.info)
            else:
                self._skip(r.reason, camera, log_time, r.message)

    def _accept(self, camera: Camera, log_time: int, msg: Any, info: Any) -> None:
        try:
            if camera.compressed:
                raw, encoding = decode_compressed(msg.format, msg.data), "rgb8"
            else:
                raw, encoding = image_array_from_msg(msg), msg.encoding
        except ImageError as e:
            self._skip("bad_compressed" if camera.compressed else "bad_image", camera, log_time, str(e))
            return
        try:
            intrinsics = Intrinsics.from_camera_info(info)
            intrinsics.check_image(raw.shape[1], raw.shape[0])
        except CameraInfoError as e:
            self._skip("bad_camera_info", camera, log_time, str(e))
            return
        frame = FrameInput(raw, encoding, intrinsics, self.settings)
        try:
            check_frame(frame)
        except FrameError as e:
            self._skip("bad_frame", camera, log_time, str(e))
            return
        item = _Item(camera, log_time, msg.header, info, frame)
        key = batch_key(frame)
        group = self._groups[key]
        group.append(item)
        if len(group) >= self.options.batch:
            self._run(self._groups.pop(key))

    def _run(self, items: list[_Item]) -> None:
        """Submit one batch (the previous one is written meanwhile); a bad frame is taken out and the rest go on."""
        engine = self.engine
        while items:
            first = items[0].frame
            t0 = time.perf_counter()
            try:
                if engine.rung.mode != "eager":  # capture / compile before the batch; eager would only run it twice
                    engine.warmup(first.raw.shape[0], first.raw.shape[1], first.settings, batch=len(items))
                handle = engine.submit_batch([i.frame for i in items])
            except FrameError as e:
                self.engine_seconds += time.perf_counter() - t0
                bad = items.pop(e.index if 0 <= e.index < len(items) else 0)
                self._skip("bad_frame", bad.camera, bad.log_time, str(e))
                continue
            except FrameDropped as e:
                self.engine_seconds += time.perf_counter() - t0
                self._finish()
                self._one_by_one(items, e)
                return
            self.engine_seconds += time.perf_counter() - t0
            self._finish()
            self._inflight = (items, handle)
            return

    def _finish(self) -> None:
        """Wait for the batch on the device and write its frames."""
        if self._inflight is None:
            return
        items, handle = self._inflight
        self._inflight = None
        t0 = time.perf_counter()
        try:
            frames = self.engine.results(handle)
        except FrameDropped as e:
            self.engine_seconds += time.perf_counter() - t0
            self._one_by_one(items, e)
            return
        self.engine_seconds += time.perf_counter() - t0
        for item, frame in zip(items, frames, strict=True):
            self._write(item, frame)

    def _one_by_one(self, items: list[_Item], error: FrameDropped) -> None:
        """A batch lost to a device failure: each frame once more on its own (a smaller forward may fit)."""
        if len(items) == 1:
            self._skip(error.kind, items[0].camera, items[0].log_time, str(error))
            return
        for item in items:
            t0 = time.perf_counter()
            try:
                frames = self.engine.run_batch([item.frame])
            except (FrameDropped, FrameError) as e:
                reason = e.kind if isinstance(e, FrameDropped) else "bad_frame"
                self._skip(reason, item.camera, item.log_time, str(e))
                continue
            finally:
                self.engine_seconds += time.perf_counter() - t0
            self._write(item, frames[0])

    def _write(self, item: _Item, frame) -> None:
        out, m, cam, header, t = self.output, self.messages, item.camera, item.header, item.log_time
        if not np.isfinite(np.frombuffer(frame.depth, dtype=np.float32)).any():
            self.no_valid_depth += 1
        out.write(cam.topic("depth/image"), m.depth_image(frame, header), t)
        out.write(cam.topic("depth/camera_info"), m.depth_camera_info(frame, header, item.info), t)
        if frame.cloud is not None:
            out.write(cam.topic("points"), m.point_cloud(frame, header, item.frame.settings.color), t)
        if frame.colormap is not None:
            out.write(cam.topic("depth/colormap"), m.colormap_image(frame, header), t)
        out.write(cam.topic("routing"), m.routing(frame, header), t)
        self.summary.frames_out += 1

    # ------------------------------------------------------------------ reporting

    def _skip(self, reason: str, camera: Camera, log_time: int, message: str) -> None:
        self.summary.skip(reason)
        if reason not in self._logged:
            self._logged.add(reason)
            self.log(
                f"skipping {camera.image_topic} frame logged at {log_time * 1e-9:.3f} ({reason}): {message}; "
                f"further '{reason}' frames are only counted"
            )

    def _nothing_done(self) -> str:
        s = self.summary
        if not s.frames_in:
            return f"no images of {', '.join(s.cameras)} in the selected range; nothing written"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items()))
        return f"none of the {s.frames_in} image(s) could be used ({reasons}); nothing written"

    def _note(self, reason: str, message: str) -> None:
        self.summary.extra[reason] = self.summary.extra.get(reason, 0) + 1
        if reason not in self._logged:
            self._logged.add(reason)
            self.log(f"{message} (further ones are only counted, as {reason})")


def run_bag(
    input_path: Path,
    output_path: Path,
    engine: Callable[[], Engine],
    settings: Settings,
    options: BagOptions,
    summary: Summary,
    *,
    storage: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda line: None,
    progress: Callable[[int | None], Progress] | None = None,
) -> None:
    """One bag, start to end: checks, the output bag (written aside, renamed when complete), the job.

    ``engine`` is called once the bag is known to have cameras (``zoedepth-ros-bag`` loads the model only then; a
    fleet worker returns the engine it holds). Raises BagError / OutputError for bad input.
    """
    src, dst = Path(input_path).resolve(), Path(output_path).resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise OutputError(f"OUTPUT {output_path} and INPUT {input_path} overlap; write the new bag elsewhere")
    with BagSource(input_path) as source:
        output = BagOutput(output_path, storage or source.storage, output_typestore(), force=force)
        discover(source.topics(), options.cameras)  # fail on a bag without cameras before loading the model
        eng = engine()
        summary.set_engine(eng)
        job = BagJob(eng, settings, options, summary, log=log, progress=progress)
        job.run(source, output)
