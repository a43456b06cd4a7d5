"""One camera of the node: its subscriptions, image / CameraInfo pairing, publishers, counters and diagnostics.

The node owns one ``CameraUnit`` per entry of ``cameras`` (one for the single default camera) and the model they
share. A unit turns its messages into checked ``FrameInput``s and hands them to the node (``deliver``); the
node's publisher thread gives each unit back its own results (``publish``). Everything a unit counts is its own,
so one camera's drops, losses or silence show in its own DiagnosticStatus and nowhere else.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.qos import QoSProfile, qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..engine import DROPPED_KINDS
from ..engine.encodings import ImageError, check_size, decode_compressed, image_array_from_msg
from ..engine.intrinsics import CameraInfoError, Intrinsics
from ..engine.pipeline import DepthFrame, FrameError, FrameInput, Settings, check_frame
from . import messages
from .cameras import CameraSpec
from .compat import SubscriptionEventCallbacks
from .pairing import Paired, StampPairer, Unpaired

if TYPE_CHECKING:
    from rclpy.node import Node

RATE_WINDOW = 50
LATENCY_WINDOW = 100
DIAGNOSTIC_NAME = "ZoeDepth"  # "<node>: ZoeDepth" for the default camera, "<node>: ZoeDepth camera <name>" else


@dataclass
class RawImage:
    raw: np.ndarray
    encoding: str
    header: Any
    received: float


@dataclass(frozen=True)
class PendingFrame:
    """A checked frame on its way to the model, with what its messages need."""

    camera: str
    input: FrameInput
    header: Any
    info: CameraInfo
    received: float


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def rate(times: deque[float]) -> float:
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class CameraUnit:
    """Args:
    node: the node the subscriptions and publishers belong to (its ``values`` are the parameters in force).
    spec: the camera's namespace and transport.
    deliver: where a checked frame goes (the node's mailbox), on the executor thread.
    warn: ``(key, message)``: the node's throttled warning.
    """

    def __init__(
        self,
        node: Node,
        spec: CameraSpec,
        deliver: Callable[[PendingFrame], None],
        warn: Callable[[str, str], None],
    ) -> None:
        self.node, self.spec, self.name = node, spec, spec.name
        self._deliver, self._warn = deliver, warn
        self.pairer: StampPairer[RawImage, CameraInfo] = StampPairer()
        self.outputs: tuple = ()
        self._subscriptions: list = []
        self.warmup_size: tuple[int, int] | None = None  # from the first valid CameraInfo
        self.drops: Counter[str] = Counter()
        self.processed = 0
        self.batched = 0  # frames that shared a forward with other cameras' frames
        self.skipped_idle = 0
        self.replaced_before = 0  # latest-frame replacements counted by mailboxes already closed
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.done_times: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.input_times = {"image": deque(maxlen=RATE_WINDOW), "camera_info": deque(maxlen=RATE_WINDOW)}
        self.received: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()  # messages the middleware reported lost, per input topic
        self.incompatible: Counter[str] = Counter()  # publishers whose QoS cannot match our subscription
        self.no_valid_depth = 0
        self._missing_warned = 0
        self.last_domain = ""

    # ------------------------------------------------------------------ set-up

    def topic(self, relative: str) -> str:
        """The resolved (absolute) name of one of this camera's topics."""
        return self.node.resolve_topic_name(self.spec.topic(relative))

    def image_topic(self) -> str:
        image = self.topic("image")
        return image + "/compressed" if self.spec.transport == "compressed" else image

    def create_publishers(self, out_qos: QoSProfile) -> None:
        t, node = self.spec.topic, self.node
        self.outputs = (
            node.create_publisher(Image, t("depth/image"), out_qos),
            node.create_publisher(CameraInfo, t("depth/camera_info"), out_qos),
            node.create_publisher(PointCloud2, t("points"), out_qos),
            node.create_publisher(Image, t("depth/colormap"), out_qos),
            node.create_publisher(messages.routing_type(), t("routing"), out_qos),
        )

    def destroy_publishers(self) -> None:
        for pub in self.outputs:
            self.node.destroy_publisher(pub)
        self.outputs = ()

    def subscribe(self, image_qos: QoSProfile, info_qos: QoSProfile) -> None:
        node = self.node
        self.pairer.clear()
        self._subscriptions = [
            node.create_subscription(
                CameraInfo,
                self.spec.topic("camera_info"),
                self.on_camera_info,
                info_qos,
                event_callbacks=self._transport_events("camera_info"),
            )
        ]
        events = self._transport_events("image")
        if self.spec.transport == "compressed":
            sub = node.create_subscription(
                CompressedImage, self.image_topic(), self.on_compressed, image_qos, event_callbacks=events
            )
        else:
            sub = node.create_subscription(
                Image, self.spec.topic("image"), self.on_image, image_qos, event_callbacks=events
            )
        self._subscriptions.append(sub)

    def unsubscribe(self) -> None:
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions = []
        self.pairer.clear()

    def settings(self, model: Settings) -> Settings:
        """This camera's per-frame settings: ``model``'s routing/pad/flip, the output parameters, and only the
        outputs someone subscribes to (cloud, colour map)."""
        v, outputs = self.node.values, self.outputs
        if not outputs:
            return model
        pub_points, pub_colormap = outputs[2], outputs[3]
        return Settings(
            routing=model.routing,
            pad_input=model.pad_input,
            flip_aug=model.flip_aug,
            min_depth=v["min_depth"],
            max_depth=v["max_depth"],
            output_scale=v["output_scale"],
            points=v["publish_points"] and pub_points.get_subscription_count() > 0,
            color=v["point_cloud.color"],
            decimation=v["point_cloud.decimation"],
            colormap=pub_colormap.get_subscription_count() > 0,
        )

    # ------------------------------------------------------------------ input (executor thread)

    def _transport_events(self, topic: str) -> SubscriptionEventCallbacks:
        """Make what the middleware loses visible: a count in diagnostics and a throttled warning."""

        def lost(event) -> None:
            from .fastdds import advice_here  # what works on this distro (Fast DDS 2.x and 3.x differ)

            self.lost[topic] += event.total_count_change
            self._warn(
                f"lost_{topic}_{self.name}",
                f"the middleware lost {self.lost[topic]} {topic} message(s) so far on {self.topic(topic)}; "
                f"{advice_here()}",
            )

        def incompatible(event) -> None:
            self.incompatible[topic] = event.total_count
            self._warn(
                f"qos_{topic}_{self.name}",
                f"a publisher on {self.topic(topic)} has QoS incompatible with this subscription "
                f"({qos_policy_name_from_kind(event.last_policy_kind)}); nothing from it arrives. Set "
                "qos.input_reliability to what the camera offers (best_effort receives from every publisher)",
            )

        return SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)

    def drop(self, reason: str, message: str) -> None:
        """Count a dropped frame of this camera and warn (throttled per camera and reason)."""
        self.drops[reason] += 1
        where = f" ({self.spec.label})" if self.name else ""
        self._warn(f"{reason}_{self.name}", f"dropped frame{where}: {message} (dropped {self.drops[reason]} so far)")

    def wanted(self) -> bool:
        """Someone subscribes to one of this camera's outputs (else its images are not even decoded)."""
        if any(p.get_subscription_count() > 0 for p in self.outputs):
            return True
        self.skipped_idle += 1
        return False

    def on_camera_info(self, msg: CameraInfo) -> None:
        now = time.monotonic()
        self.input_times["camera_info"].append(now)
        self.received["camera_info"] += 1
        v = self.node.values
        if v["warmup"] and self.warmup_size is None:
            self._set_warmup_size(msg)
        watch = any(p.get_subscription_count() > 0 for p in self.outputs)
        self._settle(self.pairer.add_info(stamp_ns(msg.header), msg, now, v["camera_info_tolerance"], watch))

    def _set_warmup_size(self, msg: CameraInfo) -> None:
        """Warm up at the size of the images this CameraInfo describes (binning and ROI applied), if it is valid."""
        try:
            intrinsics = Intrinsics.from_camera_info(msg)
            check_size(intrinsics.width, intrinsics.height)
        except (CameraInfoError, ImageError) as e:
            self._warn(f"warmup_{self.name}", f"not warming up for this CameraInfo on {self.topic('camera_info')}: {e}")
            return
        self.warmup_size = (intrinsics.height, intrinsics.width)

    def expire(self, now: float) -> None:
        """Settle the images that waited long enough for their CameraInfo (the node's pairing timer)."""
        v = self.node.values
        self._settle(self.pairer.expire(now, v["camera_info_wait"], v["camera_info_tolerance"]))
        missing = self.pairer.stats.infos_without_image
        if missing > self._missing_warned:
            self._missing_warned = missing
            self._warn(
                f"missing_image_{self.name}",
                f"{missing} CameraInfo(s) so far on {self.topic('camera_info')} came without their image on "
                f"{self.image_topic()}: images too large for the transport are lost (README: large images), or "
                "the image topic is not the CameraInfo's",
            )

    def on_image(self, msg: Image) -> None:
        self._receive(msg.header, "bad_image", lambda: (image_array_from_msg(msg), msg.encoding))

    def on_compressed(self, msg: CompressedImage) -> None:
        self._receive(msg.header, "bad_compressed", lambda: (decode_compressed(msg.format, msg.data), "rgb8"))

    def _receive(self, header, reason: str, decode: Callable[[], tuple[np.ndarray, str]]) -> None:
        """Count an arriving image; decode it (``reason`` names the drop if that fails) only if it is wanted."""
        now = time.monotonic()
        self.input_times["image"].append(now)
        self.received["image"] += 1
        if not self.wanted():
            return
        try:
            raw, encoding = decode()
        except ImageError as e:
            self.drop(reason, str(e))
            return
        v = self.node.values
        image = RawImage(raw, encoding, header, now)
        self._settle(
            self.pairer.add_image(stamp_ns(header), image, now, v["camera_info_wait"], v["camera_info_tolerance"])
        )

    def _settle(self, results: list[Paired[RawImage, CameraInfo] | Unpaired[RawImage]]) -> None:
        for r in results:
            if isinstance(r, Paired):
                self._accept(r.image, r.info)
            elif r.reason != "superseded":  # the latest-frame rule, counted by the pairer
                self.drop(r.reason, f"{r.message} on {self.topic('camera_info')}")

    def _accept(self, image: RawImage, info: CameraInfo) -> None:
        """Check the paired frame here, so that a bad one never reaches a batch with other cameras' frames."""
        try:
            intrinsics = Intrinsics.from_camera_info(info)
            intrinsics.check_image(image.raw.shape[1], image.raw.shape[0])
        except CameraInfoError as e:
            self.drop("bad_camera_info", str(e))
            return
        frame = FrameInput(image.raw, image.encoding, intrinsics, self.settings(self.node.model_settings()))
        try:
            check_frame(frame)
        except FrameError as e:
            self.drop("bad_frame", str(e))
            return
        self._deliver(PendingFrame(self.name, frame, image.header, info, image.received))

    # ------------------------------------------------------------------ output (publisher thread)

    def publish(self, result: DepthFrame, frame: PendingFrame, shared: bool) -> None:
        """Publish one result; ``shared``: it came from a forward with other cameras' frames."""
        outputs = self.outputs
        if not outputs:  # cleaned up meanwhile
            return
        pub_depth, pub_info, pub_points, pub_colormap, pub_routing = outputs
        header, settings = frame.header, frame.input.settings
        if not np.isfinite(np.frombuffer(result.depth, dtype=np.float32)).any():
            self.no_valid_depth += 1
            self._warn(
                f"no_valid_depth_{self.name}",
                f"no valid depth in {self.no_valid_depth} frame(s) so far on {self.topic('depth/image')}: the "
                f"model's output was not finite or all outside min_depth..max_depth "
                f"({settings.min_depth:g}..{settings.max_depth:g} m)",
            )
        if pub_depth.get_subscription_count() > 0:
            pub_depth.publish(messages.depth_image(result, header))
        pub_info.publish(messages.depth_camera_info(result, header, frame.info))
        if result.cloud is not None:
            pub_points.publish(messages.point_cloud(result, header, settings.color))
        if result.colormap is not None:
            pub_colormap.publish(messages.colormap_image(result, header))
        pub_routing.publish(messages.routing(result, header))
        now = time.monotonic()
        self.processed += 1
        self.batched += int(shared)
        self.latencies.append(now - frame.received)
        self.done_times.append(now)
        self.last_domain = result.domain

    # ------------------------------------------------------------------ diagnostics

    def status(self, node_name: str, replaced: int, hardware_id: str) -> DiagnosticStatus:
        """This camera's DiagnosticStatus; ``replaced``: its frames the mailbox replaced (latest-frame rule)."""
        out_rate = rate(self.done_times)
        lat = sorted(self.latencies)
        pairing = self.pairer.stats
        replaced += self.replaced_before
        values = {
            "camera": self.spec.label,
            "image topic": self.image_topic(),
            "camera_info topic": self.topic("camera_info"),
            "frames processed": self.processed,
            "frames batched with other cameras": self.batched,
            "rate (Hz)": f"{out_rate:.2f}",
            "images received": self.received["image"],
            "camera_infos received": self.received["camera_info"],
            "input rate image (Hz)": f"{rate(self.input_times['image']):.2f}",
            "input rate camera_info (Hz)": f"{rate(self.input_times['camera_info']):.2f}",
            "latency p50 (ms)": f"{1e3 * _percentile(lat, 0.5):.1f}" if lat else "",
            "latency p99 (ms)": f"{1e3 * _percentile(lat, 0.99):.1f}" if lat else "",
            "latency max (ms)": f"{1e3 * lat[-1]:.1f}" if lat else "",
            "lost in transport (image)": self.lost["image"],
            "lost in transport (camera_info)": self.lost["camera_info"],
            "incompatible QoS publishers (image)": self.incompatible["image"],
            "incompatible QoS publishers (camera_info)": self.incompatible["camera_info"],
            "frames with no valid depth": self.no_valid_depth,
            "dropped (newer frame arrived)": replaced + pairing.dropped.get("superseded", 0),
            "skipped (no subscribers)": self.skipped_idle,
            **{f"dropped ({reason})": n for reason, n in sorted(self.drops.items())},
            "pairing exact": pairing.exact,
            "pairing by tolerance": pairing.tolerance,
            "pairing waited for camera_info": pairing.waited,
            "pairing max wait (ms)": f"{1e3 * pairing.max_wait:.1f}",
            "pairing waiting now": self.pairer.waiting,
            "camera_info without its image": pairing.infos_without_image,
            "domain": self.last_domain,
        }
        errors = sum(n for r, n in self.drops.items() if r in ("error", *DROPPED_KINDS))
        errors += sum(self.lost.values()) + sum(self.incompatible.values()) + self.no_valid_depth
        errors += pairing.infos_without_image
        message = f"{self.processed} frames, {out_rate:.1f} Hz" + (", frames dropped" if self.drops else "")
        message += ", messages lost in transport" if sum(self.lost.values()) else ""
        name = f"{node_name}: {DIAGNOSTIC_NAME}" + (f" camera {self.name}" if self.name else "")
        return DiagnosticStatus(
            level=DiagnosticStatus.WARN if errors or self.drops else DiagnosticStatus.OK,
            name=name,
            hardware_id=hardware_id,
            message=message,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
