#!/usr/bin/env bash
# The device check: the GPU benchmark, then the gpu-marked tests that need no ROS, in one call.
#
#   bash bench/gpu_check.sh            # on a CUDA machine; at most 240 s + 110 s (timeouts), expected ~2-3 min
#
# Needs python3 with torch (CUDA), numpy, onnx, onnxruntime, safetensors, pyyaml, pytest; no ROS, no
# rosbags, no TensorRT (used when importable). Writes $OUT/bench_gpu.json ($OUT defaults to ./gpu_check_out)
# and $OUT/pytest_gpu.txt. Test files are those with gpu-marked tests that import neither rclpy nor the
# ROS layer nor rosbags; pytest.ini's addopts are replaced because pytest-timeout may be missing there.
# Exit status: non-zero when the benchmark or a test failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

timeout 240 python3 bench/bench_gpu.py --out "$OUT/bench_gpu.json"
bench_rc=$?

files=()
for f in test/test_*.py; do
    grep -q "mark.gpu" "$f" || continue
    grep -qE "rclpy|ros_harness|monother_ros\.ros|rosbags|monother_ros\.(eval|sim)" "$f" && continue
    files+=("$f")
done
echo "gpu test files: ${files[*]}"
timeout 110 python3 -m pytest -o addopts="" -p no:cacheprovider -q -rs -m gpu "${files[@]}" 2>&1 | tee "$OUT/pytest_gpu.txt"
test_rc=${PIPESTATUS[0]}
echo "bench_gpu rc=$bench_rc, gpu tests rc=$test_rc (JSON: $OUT/bench_gpu.json)"
[ "$bench_rc" -eq 0 ] && [ "$test_rc" -eq 0 ]
