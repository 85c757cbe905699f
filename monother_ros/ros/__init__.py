"""The rclpy layer of monother_ros: the only package code that imports rclpy.

Modules: ``convert`` (messages <-> numpy), ``pairing`` (ApproximateTime sync), ``tf`` (TF buffer and
listener), ``diagnostics`` (rates, latencies, problems, ``/diagnostics``), ``qos`` (named profiles),
``params`` (declarative parameter tables) and the nodes (``sim_node``, ...). Import the modules
directly; this package imports nothing, so ``import monother_ros.ros`` stays cheap.
"""
