#!/usr/bin/env bash
# On a CUDA machine (no ROS needed): run the CUDA-only tests, then the model, path and backends sections of the
# benchmark with full-size random ZoeD_NK weights (same speed as the release weights). Writes bench.json into $OUT
# (or .). With rosbags importable (pure Python: carry its wheel) the bag section runs too. The DDS sections (e2e,
# cameras) need ROS: zoedepth-ros-bench --sections e2e,cameras in a venv set up by scripts/setup.sh.
# backends: torch rungs vs onnxruntime's TensorRT and CUDA providers (fp32, fp16) at 640x480; it needs onnx,
# onnxscript and onnxruntime-gpu (with TensorRT's libraries for the TensorRT rows); without them those rows say why.
# fleet: zoedepth-ros-fleet on the GPU against zoedepth-ros-bag, when Ray Data and rosbags are importable (the device
# machine has neither unless they are preinstalled: too big to carry).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 || true
python -m pytest -q -p no:cacheprovider test/test_cuda.py
sections=model,paths,backends
if python -c "import rosbags" 2>/dev/null; then sections=$sections,bag; fi
if python -c "import rosbags, ray.data" 2>/dev/null; then sections=$sections,fleet; fi
python -m zoedepth_ros.tools.bench --random nk --device cuda --sizes 640x480,1280x720,512x384 \
    --sections "${SECTIONS:-$sections}" --modes "${MODES:-eager,cuda_graph,compile}" --iters "${ITERS:-50}" \
    --json "$out/bench.json" | tee "$out/bench.txt"
