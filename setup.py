"""zoedepth_ros: an ament_python ROS 2 package that is also a plain pip-installable project."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "zoedepth_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ZoeDepth metric monocular depth for ROS 2, in plain torch",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    python_requires=">=3.10",
    # torch is pinned by the installer (scripts/setup.sh): an unpinned torch here would pull CUDA wheels.
    # PyYAML: camera_calibration files (zoedepth-ros-predict --camera-info); rosbags: zoedepth-ros-bag.
    install_requires=["torch>=2.1", "numpy", "safetensors", "tqdm", "Pillow", "PyYAML", "rosbags>=0.11.9"],
    extras_require={
        # pytest < 8.4: launch_pytest / launch_testing break with 8.4 (ros2/launch#947); pytest-timeout fails
        # a hung ROS test instead of letting it block CI.
        # opencv-python-headless: zoedepth-ros-predict's video input (pip install zoedepth_ros[video]).
        "video": ["opencv-python-headless"],
        "test": ["pytest<8.4", "pytest-timeout", "ruff", "transformers==4.57.6", "opencv-python-headless"],
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
        ],
    },
)
