#!/usr/bin/env bash
# Build the tf2_msgs interface package into a venv that has the ROS 2 wheels (no wheel is published for it).
# Idempotent: does nothing when `import tf2_msgs.msg` already works (e.g. on a real ROS 2 install).
# Usage: scripts/build_tf2_msgs.sh VENV_DIR
set -euo pipefail
venv=$(cd "${1:?usage: build_tf2_msgs.sh VENV_DIR}" && pwd)
py="$venv/bin/python3"
if "$py" -c "import tf2_msgs.msg" >/dev/null 2>&1; then
  exit 0
fi
for tool in cmake gcc g++ make; do
  command -v "$tool" >/dev/null || { echo "build_tf2_msgs: '$tool' not found (apt-get install cmake build-essential)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The wheels' generator exports point at the wheel build machine's Python and NumPy headers: point them here.
py_include=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_include=$("$py" -c "import numpy; print(numpy.get_include())")
for f in "$venv"/share/*/cmake/*__rosidl_generator_pyExport.cmake; do
  grep -q "/opt/python/" "$f" || continue
  sed -i -E "s#INTERFACE_INCLUDE_DIRECTORIES \"/opt/python/[^\"]*\"#INTERFACE_INCLUDE_DIRECTORIES \"${py_include};${np_include}\"#" "$f"
done

pkg="$work/tf2_msgs"
mkdir -p "$pkg/msg"
echo "geometry_msgs/TransformStamped[] transforms" > "$pkg/msg/TFMessage.msg"
cat > "$pkg/package.xml" <<'XML'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>tf2 messages, built locally for a wheel-based ROS 2 venv</description>
  <maintainer email="maintainers@monother-ros.invalid">monother_ros</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
XML
cat > "$pkg/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
CMAKE

export CMAKE_PREFIX_PATH="$venv" AMENT_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
cmake -S "$pkg" -B "$work/build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 \
  || { tail -30 "$work/cmake.log" >&2; echo "build_tf2_msgs: cmake configure failed" >&2; exit 1; }
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; echo "build_tf2_msgs: compile failed" >&2; exit 1; }
cmake --install "$work/build" >"$work/install.log" 2>&1 \
  || { tail -30 "$work/install.log" >&2; echo "build_tf2_msgs: install failed" >&2; exit 1; }
"$py" -c "from tf2_msgs.msg import TFMessage; TFMessage()" \
  || { echo "build_tf2_msgs: built, but 'from tf2_msgs.msg import TFMessage' fails" >&2; exit 1; }
echo "build_tf2_msgs: tf2_msgs built into $venv"
