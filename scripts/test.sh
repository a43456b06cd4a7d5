#!/usr/bin/env bash
# The whole test run, as CI does it from a clean clone (README "Tests"):
#  1. the default distro's wheels (Jazzy, numpy 2.x): set up .venv and run the whole suite;
#  2. Kilted's wheels with Ubuntu 24.04's numpy 1.26: set up .venv-kilted (no reference models) and run the tests
#     that need ROS (-m ros: node, lifecycle, pairing, cameras, signals, DDS, launch, ros2cli, bag) plus the engine
#     tests, whose checks depend on numpy's casting rules.
# The second leg reuses pip's cache and the same torch wheel. ZOEDEPTH_ROS_LEGS=first|second runs one leg.
set -euo pipefail
cd "$(dirname "$0")/.."
LEGS="${ZOEDEPTH_ROS_LEGS:-first second}"
if [[ " $LEGS " == *" first "* ]]; then
  ./scripts/setup.sh
  .venv/bin/python -m pytest -q test
fi
if [[ " $LEGS " == *" second "* ]]; then
  ZOEDEPTH_ROS_DISTRO=kilted VENV=.venv-kilted ZOEDEPTH_ROS_EXTRAS=test-ros NUMPY_SPEC="numpy==1.26.4" \
    ./scripts/setup.sh
  .venv-kilted/bin/python -m pytest -q -m ros test
  .venv-kilted/bin/python -m pytest -q test/test_engine.py
fi
