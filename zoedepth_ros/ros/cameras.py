"""The ``cameras`` parameter: which cameras one node serves, each a relative namespace. No ROS import here.

An entry ``front`` means the topics ``front/image`` (or ``front/image/compressed``) and ``front/camera_info`` in,
``front/depth/image``, ``front/depth/camera_info``, ``front/points``, ``front/routing`` and
``front/depth/colormap`` out, all relative: the node's namespace and remapping apply as to any relative name.
``front:compressed`` / ``front:raw`` set that camera's input transport (default: ``input_transport``); ``:``
cannot occur in a ROS name, so the suffix is unambiguous. No entries: the single camera on ``image`` /
``camera_info``.

The launch file validates its ``cameras:=`` argument with the same rules, before anything starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TRANSPORTS = ("raw", "compressed")
_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
NAME_PATTERN = re.compile(rf"^{_TOKEN}(/{_TOKEN})*$")  # a relative ROS name: no leading '/', '~' or '{}'


class CameraListError(ValueError):
    """The ``cameras`` list is not usable; the message names the entry and the rule."""


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the node: ``name`` is its relative namespace ("" for the single default camera)."""

    name: str
    transport: str  # "raw" or "compressed"

    def topic(self, relative: str) -> str:
        """The camera's own name for one of the node's topics ("image" -> "front/image")."""
        return f"{self.name}/{relative}" if self.name else relative

    @property
    def label(self) -> str:
        """How logs and diagnostics name the camera."""
        return self.name or "(default camera)"


def parse_entry(entry: object, default_transport: str) -> CameraSpec:
    """One entry, ``name`` or ``name:transport``; CameraListError says what is wrong with it."""
    if not isinstance(entry, str):
        raise CameraListError(f"cameras entries must be strings (relative namespaces), got {entry!r}")
    name, sep, transport = entry.partition(":")
    if sep and transport not in TRANSPORTS:
        raise CameraListError(
            f"cameras entry {entry!r}: the transport after ':' must be one of {', '.join(TRANSPORTS)}"
        )
    if not name:
        raise CameraListError(
            f"cameras entry {entry!r} has no name; leave cameras empty for the single camera on image / camera_info"
        )
    if name.startswith("/"):
        raise CameraListError(
            f"cameras entry {entry!r} is absolute; give the namespace relative to the node's "
            f"({name.strip('/')!r}), and remap or set the node's namespace to move it"
        )
    if not NAME_PATTERN.match(name):
        raise CameraListError(
            f"cameras entry {entry!r} is not a valid relative ROS namespace (letters, digits and underscores, "
            "not starting with a digit, tokens separated by single '/')"
        )
    return CameraSpec(name, transport if sep else default_transport)


def parse_cameras(entries: Sequence[object] | None, default_transport: str = "raw") -> list[CameraSpec]:
    """The cameras of the node, in order; empty ``entries`` is the single default camera.

    Raises CameraListError for an invalid entry, a duplicate, or one camera nested inside another (``front`` and
    ``front/depth`` would mix one camera's outputs into the other's inputs).
    """
    if isinstance(entries, str | bytes):
        raise CameraListError(f"cameras must be a list of namespaces, e.g. [front, left]; got {entries!r}")
    if not entries:
        return [CameraSpec("", default_transport)]
    specs = [parse_entry(e, default_transport) for e in entries]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise CameraListError(f"cameras lists {spec.name!r} twice")
        seen.add(spec.name)
    for spec in specs:
        inner = next((o.name for o in specs if o.name.startswith(spec.name + "/")), None)
        if inner is not None:
            raise CameraListError(
                f"cameras entry {inner!r} is inside {spec.name!r}: their topics would mix; use sibling namespaces"
            )
    return specs
