#!/usr/bin/env bash
# Build the zoedepth_ros interfaces (msg/DepthRouting.msg) into the venv from the PyPI ROS 2 wheels.
# The generated Python lands in $VENV/lib/zoedepth_ros_generated/zoedepth_ros and its C libraries in
# $VENV/lib (already on the wheels' library path); zoedepth_ros/__init__.py adds the former to its __path__.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(cd "${VENV:-.venv}" && pwd)"
PY="$VENV/bin/python"
# The wheels bake their manylinux build paths into CMake export files; point them at this interpreter.
PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$PY" -c "import numpy; print(numpy.get_include())")
{ grep -rl "/opt/python/cp3" "$VENV/share" --include="*.cmake" 2>/dev/null || true; } | xargs -r sed -i -E \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g"
export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV"
BUILD="build/interfaces-$(basename "$VENV")"
mkdir -p build
cmake -S . -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
  -DZOEDEPTH_ROS_INSTALL_PYTHON=OFF -DPYTHON_INSTALL_DIR=lib/zoedepth_ros_generated \
  -DPython3_EXECUTABLE="$PY" > "$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j2 >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
echo "interfaces installed into $VENV"
