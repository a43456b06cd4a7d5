#!/usr/bin/env python3
"""List which rosdep keys and ROS packages that zoedepth_ros relies on exist in ros/rosdistro, as JSON.

Why: ``package.xml`` may only name dependencies that ``rosdep`` can resolve on the target platforms (Humble on
Ubuntu 22.04 jammy, Jazzy and Kilted on Ubuntu 24.04 noble), and the ROS packages it depends on must be released
for each distro. Several of our Python dependencies (torch, safetensors, rosbags, onnxruntime) are not plain apt
packages everywhere, so this records, from a pinned rosdistro commit, what ``rosdep`` would actually install and
what is released. ``test/data/rosdep_keys.json`` is the output; tests and docs read it instead of the network.

Input is either a rosdistro checkout (a folder holding ``rosdep/python.yaml``) or a git directory (e.g. the
``repo`` folder of a bare mirror), read at ``--ref`` with ``git show``. Output (indent=1, sorted keys)::

    {"source": {"repo": "ros/rosdistro", "commit": SHA, "date": ISO-8601 committer date},
     "system_keys": {KEY: {"file": "python.yaml" | "base.yaml" | null, "ubuntu": {"jammy": R, "noble": R}}},
     "pip_keys": {"safetensors": {KEY: {"file": ..., "ubuntu": {...}}}, ...},
     "ros_packages": {DISTRO: {"release_platforms": {...},
                               "packages": {NAME: {"repository": REPO, "version": V} | null}}}}

R is the apt package name(s), ``"pip: NAME"`` for a pip rule (several names are joined by a space), or null when
the key is undefined or has no rule for that Ubuntu release. ``pip_keys`` lists the keys named
``python3-<x>-pip`` (or ``python3-py<x>-pip``) for the Python packages in ``PIP_NAMES``. A ROS package counts as
in a distro when it is a package of a repository's ``release`` section (its ``packages`` list, or the repository
name when that list is absent); ``version`` is null for a release entry without a version.

Example::

    .venv/bin/python scripts/rosdep_keys_listing.py /work/.mirror/ros+rosdistro/repo -o test/data/rosdep_keys.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

SYSTEM_KEYS = (
    "python3-numpy",
    "python3-yaml",
    "python3-pil",
    "python3-tqdm",
    "python3-pytest",
    "python3-safetensors",
    "python3-rosbags",
    "python3-torch",
    "python3-opencv",
    "python3-lark-parser",
    "python3-psutil",
    "python3-onnxruntime",
    "python3-catkin-pkg",
)
PIP_NAMES = ("safetensors", "rosbags", "torch", "onnxruntime")
ROSDEP_FILES = ("python.yaml", "base.yaml")
UBUNTU_RELEASES = ("jammy", "noble")
DISTROS = ("humble", "jazzy", "kilted")
ROS_PACKAGES = (
    "rclpy",
    "sensor_msgs",
    "std_msgs",
    "diagnostic_msgs",
    "rcl_interfaces",
    "lifecycle_msgs",
    "ament_index_python",
    "launch",
    "launch_ros",
    "rosidl_default_generators",
    "rosidl_default_runtime",
    "ament_cmake",
    "ament_cmake_pytest",
    "rviz2",
    "depthimage_to_laserscan",
    "depth_image_proc",
    "image_transport",
    "compressed_image_transport",
    "rosbag2",
    "ros2launch",
    "ros2cli",
    "launch_testing",
    "launch_pytest",
    "sensor_msgs_py",
    "python_cmake_module",
)
INSTALLERS = frozenset({"apt", "pip", "source", "npm", "gem"})
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Source:
    """Reads files from a rosdistro checkout folder or, failing that, from a git directory at a ref."""

    def __init__(self, path: Path, ref: str) -> None:
        self.path = path
        self.ref = ref
        self.checkout = (path / "rosdep" / "python.yaml").is_file()

    def git(self, *args: str) -> str:
        """Output of a git command run on the checkout or git directory."""
        where = ["-C", str(self.path)] if self.checkout else ["--git-dir", str(self.path)]
        return subprocess.run(["git", *where, *args], check=True, capture_output=True, text=True).stdout

    def read(self, rel: str) -> str:
        """Text of a file given by its path relative to the repository root."""
        if self.checkout:
            return (self.path / rel).read_text(encoding="utf-8")
        return self.git("show", f"{self.ref}:{rel}")

    def load(self, rel: str) -> Any:
        """A YAML file, parsed."""
        return yaml.load(self.read(rel), Loader=Loader)

    def commit(self) -> dict[str, str | None]:
        """Commit SHA and committer date (ISO 8601), or nulls for a checkout that is not a git work tree."""
        try:
            sha, date = self.git("log", "-1", "--format=%H %cI", self.ref if not self.checkout else "HEAD").split()
        except (subprocess.CalledProcessError, ValueError):
            return {"commit": None, "date": None}
        return {"commit": sha, "date": date}


def packages_of(rule: Any) -> tuple[str, list[str]] | None:
    """(installer, package names) of a version-level rule, or None when it has none (null or empty)."""
    if rule is None:
        return None
    if isinstance(rule, str):
        return "apt", rule.split()
    if isinstance(rule, list):
        return ("apt", [str(p) for p in rule]) if rule else None
    if isinstance(rule, dict):
        if "packages" in rule:
            return packages_of(rule["packages"])
        for installer in sorted(INSTALLERS & rule.keys()):
            found = packages_of(rule[installer])
            if found:
                return installer, found[1]
    return None


def resolve(definition: Any, os_name: str, release: str) -> str | None:
    """What rosdep would install for a key on ``os_name``/``release``, as ``"pkg ..."`` or ``"pip: pkg ..."``."""
    if not isinstance(definition, dict):
        return None
    os_rule = definition.get(os_name, definition.get("*"))
    if isinstance(os_rule, dict) and not (os_rule.keys() & (INSTALLERS | {"packages"})):
        os_rule = os_rule.get(release, os_rule.get("*"))  # keyed by release codename, '*' as the fallback
    found = packages_of(os_rule)
    if found is None:
        return None
    installer, names = found
    text = " ".join(names)
    return text if installer == "apt" else f"{installer}: {text}"


def key_entry(rules: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """Where a rosdep key is defined and what it resolves to on each Ubuntu release."""
    where = next((name for name in ROSDEP_FILES if key in rules[name]), None)
    definition = rules[where][key] if where else None
    return {"file": where, "ubuntu": {rel: resolve(definition, "ubuntu", rel) for rel in UBUNTU_RELEASES}}


def released_packages(distribution: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Every released package of a distribution file, mapped to its repository and release version."""
    out: dict[str, dict[str, str | None]] = {}
    for repo, entry in (distribution.get("repositories") or {}).items():
        release = (entry or {}).get("release")
        if not release:
            continue
        version = release.get("version")
        for pkg in release.get("packages") or [repo]:
            out[pkg] = {"repository": repo, "version": None if version is None else str(version)}
    return out


def listing(src: Source) -> dict[str, Any]:
    """The whole JSON document."""
    rules = {name: src.load(f"rosdep/{name}") or {} for name in ROSDEP_FILES}
    all_keys = sorted(set(rules["python.yaml"]) | set(rules["base.yaml"]))
    pip_keys = {
        name: {
            key: key_entry(rules, key) for key in all_keys if re.fullmatch(rf"python3-(py)?{re.escape(name)}-pip", key)
        }
        for name in PIP_NAMES
    }
    ros_packages = {}
    for distro in DISTROS:
        distribution = src.load(f"{distro}/distribution.yaml")
        released = released_packages(distribution)
        ros_packages[distro] = {
            "release_platforms": distribution.get("release_platforms"),
            "packages": {pkg: released.get(pkg) for pkg in ROS_PACKAGES},
        }
    return {
        "source": {"repo": "ros/rosdistro", **src.commit()},
        "system_keys": {key: key_entry(rules, key) for key in SYSTEM_KEYS},
        "pip_keys": pip_keys,
        "ros_packages": ros_packages,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rosdistro", type=Path, help="rosdistro checkout folder or git directory")
    parser.add_argument("--ref", default="HEAD", help="commit to read from a git directory (default: HEAD)")
    parser.add_argument("-o", "--output", type=Path, help="JSON file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = json.dumps(listing(Source(args.rosdistro, args.ref)), indent=1, sort_keys=True) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
