"""Named QoS profiles for every topic of the monother_ros graph (one place to read and change them).

Choices (ROS conventions, REP 2003 "sensor data"):

* ``SENSOR``: camera images, camera_info, depth/confidence images and point clouds. Best effort, keep
  last 5, volatile: the same as ``rclpy.qos.qos_profile_sensor_data`` / rclcpp ``SensorDataQoS``, so RViz,
  depth_image_proc and Nav2 subscribe without QoS warnings. A best-effort publisher is heard by both
  best-effort and reliable subscribers; a reliable subscription would NOT hear a best-effort camera
  driver, which is why the depth outputs are best effort too (stale depth is worthless, a reliable
  queue would only add latency under load).
* ``TF`` / ``TF_STATIC``: tf2's standard profiles. ``/tf`` reliable, volatile, depth 100; ``/tf_static``
  reliable, transient local (latched) so late joiners get the rig extrinsics. The listener keeps depth
  100 on ``/tf_static`` as tf2_ros does; the broadcaster publishes one message holding all static
  transforms with depth 1, as tf2_ros' StaticTransformBroadcaster.
* ``DIAGNOSTICS``: reliable, volatile, depth 10 (the ``diagnostic_updater`` default).
* ``CLOCK``: ``/clock`` reliable, keep last 1, volatile, as ``ros2 bag play --clock`` publishes it;
  rclpy's TimeSource subscribes best effort depth 1, which a reliable publisher satisfies.

Only APIs that exist in Humble are used (``QoSProfile`` keyword constructor and the policy enums).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["SENSOR", "TF", "TF_STATIC", "TF_STATIC_PUBLISHER", "DIAGNOSTICS", "CLOCK", "RELIABLE_OUTPUT", "describe"]

SENSOR = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

TF = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

TF_STATIC = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

TF_STATIC_PUBLISHER = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

DIAGNOSTICS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

CLOCK = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# For tools that want every message (e.g. a recorder of the depth outputs on a loaded machine).
RELIABLE_OUTPUT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


def describe(profile: QoSProfile) -> str:
    """Short human text for README tables and logs, e.g. ``best effort, keep last 5, volatile``."""
    reliability = "reliable" if profile.reliability == ReliabilityPolicy.RELIABLE else "best effort"
    if profile.history == HistoryPolicy.KEEP_ALL:
        history = "keep all"
    else:
        history = f"keep last {profile.depth}"
    durability = "transient local" if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL else "volatile"
    return f"{reliability}, {history}, {durability}"
