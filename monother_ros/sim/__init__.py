"""The simulated thermal + RGB + LiDAR rig (numpy only; bags through ``rosbags``, never rclpy).

Public API::

    from monother_ros.sim import SimRig, write_bag

    rig = SimRig(seed=0, scenario="night", family="campus")   # scenario: day|night|fog, family: urban|campus
    rig.thermal_camera, rig.rgb_camera                         # PinholeCamera 640x512 ~50 deg, 1280x720 ~70 deg
    rig.T_base_thermal, rig.T_base_rgb, rig.T_base_lidar       # (4, 4) p_base = T @ p_child
    rig.T_rgb_thermal                                          # (4, 4) p_rgb = T @ p_thermal
    f = rig.render_thermal(t)          # f.counts (512, 640) uint16 mono16, f.depth (512, 640) float32 m, NaN
    f = rig.render_thermal(t, rig.thermal_camera.resized(224, 280))   # any size: same pose and scene
    g = rig.render_rgb(t)              # g.rgb (720, 1280, 3) uint8, g.depth (720, 1280) float32 m, NaN
    pts = rig.lidar_scan(t)            # (N, 4) float32 x, y, z [m], intensity [0-255] in lidar_link
    rig.schedule(seconds)              # [SensorEvent(stamp_ns, kind)] sorted; thermal 30 Hz, RGB ~20 Hz, LiDAR 10 Hz
    rig.pose(t)                        # (4, 4) T_world_base
    write_bag("out/day", seconds=10, seed=0, scenario="day", family="urban", storage="mcap")

Depth is the optical z-depth in metres (REP 118 32FC1 semantics), NaN for sky and beyond ``MAX_DEPTH_M``
(80 m). Time ``t`` is seconds of simulation; bags stamp it as ``SIM_EPOCH_NS + t``. Everything is a pure
function of (seed, scenario, family, t): frames can be rendered in any order, in any process.

Modules: ``scene`` (procedural primitives, 100 m segments), ``raycast`` (analytic ray casting with
screen-space culling), ``shading`` (materials, lighting, temperature model), ``trajectory``, ``rig``
(cameras, sensor models, timing), ``bag`` (rosbag2 writer + preview), ``preview`` (colour maps, mosaic),
``commands`` (``monother sim``).
"""
from monother_ros.sim.bag import SIM_EPOCH_NS, BagSummary, write_bag
from monother_ros.sim.rig import (
    BASE_FRAME, LIDAR_FRAME, MAX_DEPTH_M, RGB_FRAME, THERMAL_FRAME, RgbFrame, SensorEvent, SimRig, ThermalFrame,
)

__all__ = [
    "BASE_FRAME", "LIDAR_FRAME", "MAX_DEPTH_M", "RGB_FRAME", "SIM_EPOCH_NS", "THERMAL_FRAME", "BagSummary",
    "RgbFrame", "SensorEvent", "SimRig", "ThermalFrame", "write_bag",
]
