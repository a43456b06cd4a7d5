#!/usr/bin/env bash
# Create (or update) a venv with a pinned torch, this package and its test tools, ROS 2 from PyPI wheels and,
# where ../shared/ros_tools is (or $ZOEDEPTH_ROS_TOOLS points), the ROS 2 launch and command-line tools.
#
#   ZOEDEPTH_ROS_DISTRO  jazzy (default: the LTS) or kilted: which distro's PyPI wheels (rclpy + Fast DDS, messages)
#   VENV                 where (default .venv); a venv made for another distro is made again
#   TORCH_SPEC           the torch requirement (default torch==2.13.0: the CUDA build from PyPI on a normal machine,
#                        the local CPU wheel on our dev/CI machines). Never leave torch unpinned.
#   NUMPY_SPEC           a numpy requirement to install last (e.g. "numpy==1.26.4", Ubuntu 24.04's series)
#   ZOEDEPTH_ROS_SKIP_ROS=1  no ROS part (the offline tools and the model need none)
#   ZOEDEPTH_ROS_EXTRAS  the pip extras of this package (default test)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
DISTRO="${ZOEDEPTH_ROS_DISTRO:-jazzy}"
VENV="${VENV:-.venv}"
EXTRAS="${ZOEDEPTH_ROS_EXTRAS-test}"
case "$DISTRO" in
  jazzy) P="ros-jazzy-" ;;   # rclpy 7.1, Fast DDS 2.14 (Ubuntu 24.04's distro, LTS until 2029)
  kilted) P="ros-" ;;        # rclpy 9.1, Fast DDS 3.2: the unprefixed ros-* wheels
  *) echo "setup.sh: ZOEDEPTH_ROS_DISTRO=$DISTRO: PyPI has wheels for jazzy and kilted only (Humble: README)" >&2
     exit 2 ;;
esac
STAMP="$VENV/zoedepth_ros_distro"
if [ -x "$VENV/bin/python" ] && [ "${ZOEDEPTH_ROS_SKIP_ROS:-0}" != "1" ] \
    && [ "$(cat "$STAMP" 2>/dev/null || echo none)" != "$DISTRO" ]; then
  echo "setup.sh: $VENV holds $(cat "$STAMP" 2>/dev/null || echo 'another setup'); making it again for $DISTRO"
  rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "$TORCH_SPEC"
"${PIP[@]}" -e ".${EXTRAS:+[$EXTRAS]}"
if [ "${ZOEDEPTH_ROS_SKIP_ROS:-0}" != "1" ]; then
  # ROS 2 from PyPI wheels: rclpy + Fast DDS, the messages we use, and what building our interface needs.
  # On a ROS 2 distro, use colcon instead (README).
  "${PIP[@]}" "${P}rclpy[fastrtps]" "${P}sensor-msgs" "${P}std-msgs" "${P}geometry-msgs" "${P}diagnostic-msgs" \
    "${P}visualization-msgs" "${P}rcl-interfaces" "${P}lifecycle-msgs" "${P}ament-index-python" \
    "${P}rosidl-default-generators" "${P}rosidl-core-generators" "${P}ament-cmake" "${P}ament-cmake-python" \
    "${P}ament-cmake-include-directories" "${P}ament-package" catkin-pkg
  if [ "$DISTRO" = jazzy ]; then
    # Jazzy's wheels declare less of what a rosidl build needs than Kilted's (ament_cmake_ros_core is Kilted's
    # split of ament_cmake_ros).
    "${PIP[@]}" "${P}ament-cmake-ros" "${P}ament-cmake-gmock" "${P}ament-cmake-gtest" "${P}ament-cmake-pytest" \
      "${P}ament-cmake-test" "${P}gmock-vendor" "${P}gtest-vendor" "${P}python-cmake-module" \
      "${P}rosidl-generator-py" "${P}pybind11-vendor"
  else
    "${PIP[@]}" "${P}ament-cmake-ros-core"
  fi
  echo "$DISTRO" > "$STAMP"
  VENV="$VENV" ./scripts/build_interfaces.sh
  # Make the venv an ament prefix (as colcon's install/ would be), so `ros2 launch zoedepth_ros ...`,
  # `ros2 run zoedepth_ros zoedepth_node` and launch_ros Node(package="zoedepth_ros") find this package.
  "$VENV/bin/python" scripts/install_ament_prefix.py
  # The ROS 2 launch / command-line tools (ros2 launch, run, param, lifecycle; launch_pytest), which PyPI
  # lacks: installed from ../shared/ros_tools when it is there, or from $ZOEDEPTH_ROS_TOOLS (`none` skips).
  # Use them in a shell with `. $VENV/ros_tools_env.sh`; the tests set PATH/AMENT_PREFIX_PATH themselves.
  ROS_TOOLS="${ZOEDEPTH_ROS_TOOLS:-../shared/ros_tools}"
  if [ "$ROS_TOOLS" != "none" ]; then
    if [ -f "$ROS_TOOLS/install.sh" ]; then
      bash "$ROS_TOOLS/install.sh" "$VENV"
    elif [ -n "${ZOEDEPTH_ROS_TOOLS:-}" ]; then
      echo "setup.sh: ZOEDEPTH_ROS_TOOLS=$ZOEDEPTH_ROS_TOOLS has no install.sh" >&2; exit 1
    fi
  fi
fi
[ -z "${NUMPY_SPEC:-}" ] || "${PIP[@]}" "$NUMPY_SPEC"
echo "ready ($VENV, ${DISTRO}): $("$VENV/bin/python" -c 'import numpy, torch, zoedepth_ros
print("torch", torch.__version__, "numpy", numpy.__version__)')"
