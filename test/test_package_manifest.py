"""package.xml, requirements.txt and setup.py agree with what the code imports, and rosdep can install every key.

``rosdep install --from-paths src --ignore-src -y`` resolves each key of package.xml on the user's distro: a ROS
package must be released there, a system key must have a rule for Ubuntu 22.04 (Humble) and 24.04 (Jazzy,
Kilted). The facts come from ros/rosdistro (``test/data/rosdep_keys.json``, ``scripts/rosdep_keys_listing.py``).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROSDEP = json.loads((REPO / "test" / "data" / "rosdep_keys.json").read_text())
DEPEND_TAGS = ("depend", "exec_depend", "build_depend", "buildtool_depend", "test_depend")
# import name -> (pip distribution, rosdep key or None where rosdep has none: pip only)
PYTHON_REQUIREMENTS = {
    "numpy": ("numpy", "python3-numpy"),
    "yaml": ("PyYAML", "python3-yaml"),
    "PIL": ("Pillow", "python3-pil"),
    "tqdm": ("tqdm", "python3-tqdm"),
    "safetensors": ("safetensors", None),
    "rosbags": ("rosbags", None),
}
TORCH = "torch"  # declared by setup.py as a range (a Jetson keeps NVIDIA's build), installed by the user
# imported only where that extra is installed (tensorrt: beside onnxruntime-gpu on a GPU machine, README)
OPTIONAL = {
    "transformers": "test",
    "cv2": "video",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "tensorrt": "onnxruntime-gpu's TensorRT, installed by the user",
    "ray": "fleet",
}
INDIRECT = {"apsw": "rosbags"}  # a requirement's own dependency, imported (guarded) for its error class
# ROS packages the code imports (Python module -> package.xml key); the message packages are their own keys.
ROS_MODULES = {"rclpy", "launch", "launch_ros", "ament_index_python"}


def manifest_keys() -> dict[str, str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip(): e.tag for tag in DEPEND_TAGS for e in root.iter(tag)}


def requirements() -> dict[str, str]:
    """requirements.txt: distribution name -> its line."""
    out = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out[re.split(r"[<>=!~\[ ;]", line)[0]] = line
    return out


def imported_top_levels() -> dict[str, set[str]]:
    """Top-level modules imported (anywhere) by the shipped sources -> the files importing them."""
    files = [*(REPO / "zoedepth_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]
    files += [REPO / "scripts" / "zoedepth_node", REPO / "scripts" / "zoedepth_demo_camera"]
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def is_ros_message_package(name: str) -> bool:
    return name.endswith(("_msgs", "_interfaces"))


def test_every_import_is_declared():
    declared = manifest_keys()
    reqs = requirements()
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for module, files in sorted(imported_top_levels().items()):
        if module in stdlib or module in ("zoedepth_ros", "__future__") or module in OPTIONAL:
            continue
        if module in INDIRECT and PYTHON_REQUIREMENTS[INDIRECT[module]][0] in reqs:
            continue
        if module == TORCH:
            continue
        if module in PYTHON_REQUIREMENTS:
            dist, key = PYTHON_REQUIREMENTS[module]
            if dist not in reqs or (key is not None and key not in declared):
                missing.append(f"{module} ({dist} in requirements.txt, {key} in package.xml): {sorted(files)}")
        elif module in ROS_MODULES or is_ros_message_package(module):
            if module not in declared:
                missing.append(f"ROS package {module} is not in package.xml: {sorted(files)}")
        else:
            missing.append(f"{module} is imported but declared nowhere: {sorted(files)}")
    assert not missing, "\n".join(missing)


def test_requirements_txt_and_package_xml_agree():
    reqs = requirements()
    declared = manifest_keys()
    known = {dist for dist, _ in PYTHON_REQUIREMENTS.values()}
    assert set(reqs) == known, "requirements.txt and this test's table differ"
    system_keys = {k for k in declared if k.startswith("python3-")}
    assert system_keys == {key for _, key in PYTHON_REQUIREMENTS.values() if key is not None} | {"python3-pytest"}
    assert TORCH not in reqs, "torch is left to the installer (README), setup.py only declares the oldest one"


def test_every_rosdep_key_resolves_on_the_distros_ubuntu():
    problems = []
    for key, tag in manifest_keys().items():
        if key.startswith("python3-"):
            rule = ROSDEP["system_keys"].get(key)
            if rule is None:
                problems.append(f"{key}: not in the rosdep listing (add it to scripts/rosdep_keys_listing.py)")
                continue
            for release in ("jammy", "noble"):
                if not rule["ubuntu"].get(release):
                    problems.append(f"{key} ({tag}) has no rosdep rule for Ubuntu {release}")
        else:
            for distro, listing in ROSDEP["ros_packages"].items():
                if not listing["packages"].get(key):
                    problems.append(f"{key} ({tag}) is not released in {distro} (or not in the rosdep listing)")
    assert not problems, "\n".join(problems)


def test_pip_only_requirements_really_have_no_rosdep_key():
    """safetensors and rosbags come from pip because rosdep has no system key for them (if one appears, use it)."""
    for module, (dist, key) in PYTHON_REQUIREMENTS.items():
        if key is None:
            assert ROSDEP["system_keys"].get(f"python3-{dist.lower()}", {}).get("file") is None, module


def test_setup_py_reads_requirements_txt():
    tree = ast.parse((REPO / "setup.py").read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "requirements.txt" in strings
    torch = [s for s in strings if s.startswith("torch")]
    assert torch and all(">=" in s and "==" not in s and "<" not in s for s in torch), torch
