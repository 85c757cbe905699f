"""monother_ros: metric depth from thermal images (MonoTher-Depth, arXiv 2504.16127) for ROS 2.

Layers (imports point downwards only): ``core`` (numpy/torch math) <- ``model`` <- ``distill`` <-
``runtime`` <- ``sim`` / ``eval`` <- ``ros`` (the only rclpy code) <- ``cli``.
"""

__version__ = "0.1.0"
