#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) on a machine without a ROS install.
# Idempotent and quick when nothing changed (a stamp keyed on requirements.txt + setup.py).
# Each step says what failed and why.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${MONOTHER_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.monother_setup_stamp"
key=$(cat "$root/requirements.txt" "$root/setup.py" "$root/scripts/build_tf2_msgs.sh" | sha256sum | cut -c1-16)

fail() { echo "setup failed at step '$1': $2" >&2; exit 1; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && "$venv/bin/python" -c "import rclpy, torch, tf2_msgs.msg, monother_ros" >/dev/null 2>&1; then
  exit 0
fi
echo "[setup] preparing $venv (first run takes a few minutes)"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || fail "create venv" "'$python -m venv' failed (is python3-venv installed?)"
fi
log="$venv/setup.log"
"$venv/bin/python" -m pip install -q --upgrade pip >"$log" 2>&1 || { tail -20 "$log" >&2; fail "upgrade pip" "see $log"; }
echo "[setup] installing requirements (torch CPU build, ROS 2 Kilted wheels, onnxruntime, rosbags, ...)"
"$venv/bin/python" -m pip install -q -r "$root/requirements.txt" >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; fail "pip install -r requirements.txt" "see $log (no network to PyPI?)"; }
echo "[setup] building tf2_msgs into the venv if it is missing"
"$root/scripts/build_tf2_msgs.sh" "$venv" || fail "build tf2_msgs" "cmake/gcc build of the interface package failed (see above)"
echo "[setup] installing monother_ros (editable)"
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; fail "pip install -e ." "see $log"; }
"$venv/bin/python" -c "import rclpy, torch, tf2_msgs.msg, monother_ros" \
  || fail "import check" "rclpy, torch, tf2_msgs or monother_ros does not import"
echo "$key" > "$stamp"
echo "[setup] done"
