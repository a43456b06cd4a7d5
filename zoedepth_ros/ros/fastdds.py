"""Fast DDS and camera-sized messages: what carries them on the user's distro, and the demo's own setting.

Stock Fast DDS moves a sample between processes through the sender's 512 KB shared-memory segment, in 64 KB
fragments: a larger sample (640x480 rgb8 is 900 KB) crawls from a reliable writer and a best-effort reader loses
most of them. What fixes it, by distro:

- the shipped profile ``config/fastdds_large_shm.xml`` (a 48 MiB segment, a 2048-fragment port queue) works with
  every Fast DDS since 2.0, in every process that sends or receives such samples. The variable that names it is
  ``FASTRTPS_DEFAULT_PROFILES_FILE`` in Fast DDS 2.x (Humble 2.6, Iron 2.10, Jazzy 2.14: they ignore the other
  name) and ``FASTDDS_DEFAULT_PROFILES_FILE`` in 3.x (Kilted on; its rmw still reads the old name, with a
  deprecation warning);
- ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (Fast DDS 2.6.7+, 2.12.2+, 2.13+) is no substitute: in 2.x its
  shared-memory segment stays 512 KB (twice the socket buffer size, 0 by default), and on Kilted (3.2) it loses
  best-effort samples as badly as stock under ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``.

The demo (``demo:=true`` in the launch file, ``zoedepth-ros-demo``) is ours end to end, so its processes get the
profile unless the user chose a middleware setting of their own (:func:`demo_env`); the node's "middleware lost"
warning names what works on the distro it runs on (:func:`large_data_advice`). No ROS import here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from .compat import distro as ros_distro  # $ROS_DISTRO, else rclpy's version

PACKAGE = "zoedepth_ros"
PROFILE_NAME = "fastdds_large_shm.xml"
PROFILE_ENV_2 = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2.x (Humble, Iron, Jazzy)
PROFILE_ENV_3 = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS 3.x (Kilted on)
BUILTIN_TRANSPORTS_ENV = "FASTDDS_BUILTIN_TRANSPORTS"
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # the default RMW of Humble, Jazzy and Kilted

FAST_DDS_OF_DISTRO = {"foxy": "2.1", "galactic": "2.3", "humble": "2.6", "iron": "2.10", "jazzy": "2.14"}
"""The Fast DDS each distro ships, where it is 2.x; a distro not named here (Kilted, Rolling, later) ships 3.x."""
SHM_SLACK = 1.1  # a process's /dev/shm use is its segment plus a few per cent of bookkeeping (and its port files)


def shipped_profile() -> Path | None:
    """The large shared-memory profile: the source tree's ``config/``, else the installed ament share; or None."""
    source = Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        installed = Path(get_package_share_directory(PACKAGE, print_warning=False)) / "config" / PROFILE_NAME
    except (LookupError, ValueError, OSError):  # not installed, or AMENT_PREFIX_PATH unset
        return None
    return installed if installed.is_file() else None


def fast_dds_version(distro: str | None) -> str | None:
    """The Fast DDS a distro ships: "2.6", "2.14", ... where it is 2.x, "3" for any other named distro; None."""
    if distro is None:
        return None
    return FAST_DDS_OF_DISTRO.get(distro, "3")


def profile_env_names(distro: str | None) -> tuple[str, ...]:
    """The variable(s) that make this distro's Fast DDS load a profile file (both names when it is unknown)."""
    version = fast_dds_version(distro)
    if version is None:
        return (PROFILE_ENV_3, PROFILE_ENV_2)
    return (PROFILE_ENV_2,) if version.startswith("2.") else (PROFILE_ENV_3,)


def user_choice(environ: Mapping[str, str]) -> str | None:
    """The user's own middleware setting that the demo must keep (``NAME=value``), or None."""
    for name in (PROFILE_ENV_3, PROFILE_ENV_2, BUILTIN_TRANSPORTS_ENV):
        if environ.get(name, "").strip():
            return f"{name}={environ[name]}"
    rmw = environ.get("RMW_IMPLEMENTATION", "").strip()
    if rmw and rmw not in FASTDDS_RMWS:
        return f"RMW_IMPLEMENTATION={rmw}"
    return None


def segment_bytes(profile: Path) -> int:
    """The largest shared-memory ``segment_size`` the profile declares (0 if none or unreadable)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(profile).getroot()
    except (OSError, ET.ParseError):
        return 0
    texts = [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "segment_size"]
    return max((int(t) for t in texts if t.strip().isdigit()), default=0)


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):  # no /dev/shm (not Linux): nothing to check
        return None
    return st.f_bavail * st.f_frsize


def demo_env(
    environ: Mapping[str, str], processes: int, profile: Path | None = None, shm_free: int | None = -1
) -> tuple[dict[str, str], str]:
    """The variables that give ``processes`` demo processes the large-data profile, and one line saying so.

    Empty (and the line says why) when the user chose their own setting (a profile file, builtin transports, another
    RMW), when the profile is missing, or when /dev/shm cannot hold a segment per process (Docker's default 64 MB:
    Fast DDS would then fall back to UDP, over which such images never arrive; stock is the lesser evil there).
    ``profile`` defaults to :func:`shipped_profile`, ``shm_free`` (-1) to what /dev/shm has free now.
    """
    chosen = user_choice(environ)
    if chosen is not None:
        return {}, f"keeping your middleware setting {chosen} for the demo processes"
    profile = profile if profile is not None else shipped_profile()
    if profile is None:
        return {}, f"the Fast DDS profile {PROFILE_NAME} was not found: large demo images may be lost"
    free = shm_free_bytes() if shm_free == -1 else shm_free
    need = int(processes * segment_bytes(profile) * SHM_SLACK)
    if free is not None and free < need:
        return {}, (
            f"/dev/shm has {free / 1e6:.0f} MB free, less than the {need / 1e6:.0f} MB that {processes} processes "
            f"with the large-data profile {profile} need: using stock Fast DDS, which loses large images (in Docker, "
            "run with --shm-size=512m or --ipc=host)"
        )
    names = profile_env_names(ros_distro(environ))
    env = {name: str(profile) for name in names}
    settings = " ".join(f"{k}={v}" for k, v in env.items())
    return env, f"the demo processes use the Fast DDS large-data profile: {settings}"


def large_data_advice(environ: Mapping[str, str] = os.environ, profile: Path | None = None) -> str:
    """What to set so that large images arrive, for the distro and middleware this process runs on (one clause)."""
    rmw = environ.get("RMW_IMPLEMENTATION", "").strip()
    if rmw and rmw not in FASTDDS_RMWS:
        return (
            f"large images need {rmw} configured for large messages in every process that sends or receives them, "
            "the camera driver's included (README: large images)"
        )
    profile = profile if profile is not None else shipped_profile()
    path = str(profile) if profile is not None else f"<share/{PACKAGE}>/config/{PROFILE_NAME}"
    distro = ros_distro(environ)
    names = profile_env_names(distro)
    version = fast_dds_version(distro)
    where = f"{distro.capitalize()}'s Fast DDS {version}" if distro and version else "Fast DDS"
    using = [n for n in names if environ.get(n, "").strip()]
    if using:  # the profile is loaded here, so the loss is on the sending side
        name, value = using[0], environ[using[0]]
        return (
            f"this process loads {name}={value}; the camera driver's process needs a large-data profile too: "
            f"export {name}={value} there as well (its segment_size must exceed the largest image; "
            "README: large images)"
        )
    if len(names) == 2:
        setting = f"export {names[0]}={path} (Fast DDS 3: Kilted on) or {names[1]}={path} (Fast DDS 2: Humble, Jazzy)"
    else:
        setting = f"export {names[0]}={path} ({where} reads that name)"
    builtin = environ.get(BUILTIN_TRANSPORTS_ENV, "").strip()
    instead = f" instead of {BUILTIN_TRANSPORTS_ENV}={builtin}" if builtin else ""
    ignored = [n for n in (PROFILE_ENV_3, PROFILE_ENV_2) if n not in names and environ.get(n, "").strip()]
    note = f"{ignored[0]}, set here, is not read by {where}; " if ignored else ""  # e.g. FASTDDS_... on Jazzy
    return (
        f"large images need the Fast DDS large-data profile{instead}: {setting} in every process that sends or "
        f"receives them, the camera driver's included ({note}README: large images)"
    )


@functools.cache
def advice_here() -> str:
    """:func:`large_data_advice` for this process, worked out once (the node's message-lost warning)."""
    return large_data_advice()
