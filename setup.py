"""zoedepth_ros: an ament_python ROS 2 package that is also a plain pip-installable project."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "zoedepth_ros"
# The oldest torch the package supports (README "Jetson": what NVIDIA's JetPack 6 wheels provide); a range, not a
# pin, so that pip keeps a Jetson's torch. The installer pins the exact build (scripts/setup.sh, README).
TORCH = "torch>=2.3"
ONNX = ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"]
FLEET = ["ray[data]>=2.9"]  # zoedepth-ros-fleet: the offline tools on a Ray cluster (Ray Data: image folders)


def requirements() -> list[str]:
    """requirements.txt, the one list of run-time requirements for pip and for a ROS 2 distro install."""
    lines = (Path(__file__).parent / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


setup(
    name=PACKAGE,
    version="0.1.0",
    description="ZoeDepth metric monocular depth for ROS 2, in plain torch",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # the bag tools' DepthRouting definition travels with the code (a link to msg/DepthRouting.msg, the one source)
    package_data={f"{PACKAGE}.offline": ["DepthRouting.msg"]},
    python_requires=">=3.10",
    install_requires=[TORCH, *requirements()],
    extras_require={
        # pytest < 8.4: launch_pytest / launch_testing break with 8.4 (ros2/launch#947); pytest-timeout fails
        # a hung ROS test instead of letting it block CI.
        # opencv-python-headless: zoedepth-ros-predict's video input (pip install zoedepth_ros[video]).
        "video": ["opencv-python-headless"],
        # zoedepth-ros-export and backend onnxruntime (CPU); a GPU machine installs onnxruntime-gpu instead
        # (README, "ONNX Runtime and TensorRT")
        "onnx": ONNX,
        "fleet": FLEET,
        # vermin: the Python 3.10 check (Humble's Ubuntu 22.04) in test_lint.
        "test": [
            "pytest<8.4",
            "pytest-timeout",
            "ruff",
            "vermin",
            "transformers==4.57.6",
            "opencv-python-headless",
            *ONNX,
            *FLEET,
        ],
        # the second distro leg of scripts/test.sh: the ROS tests only, no reference models
        "test-ros": ["pytest<8.4", "pytest-timeout"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),  # zoedepth-ros-bag registers DepthRouting from it
    ],
    entry_points={
        "console_scripts": [
            "zoedepth_node = zoedepth_ros.ros.node:main",
            "zoedepth_demo_camera = zoedepth_ros.ros.demo_camera:main",
            "zoedepth-ros-weights = zoedepth_ros.tools.weights:main",
            "zoedepth-ros-eval = zoedepth_ros.tools.evaluate:main",
            "zoedepth-ros-bench = zoedepth_ros.tools.bench:main",
            "zoedepth-ros-demo = zoedepth_ros.tools.demo:main",
            "zoedepth-ros-soak = zoedepth_ros.tools.soak:main",
            "zoedepth-ros-predict = zoedepth_ros.tools.predict:main",
            "zoedepth-ros-bag = zoedepth_ros.tools.bag:main",
            "zoedepth-ros-export = zoedepth_ros.tools.export:main",
            "zoedepth-ros-fleet = zoedepth_ros.tools.fleet:main",
        ],
    },
)
