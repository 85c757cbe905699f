"""Numpy/torch math with no ROS: cameras, SE(3), warping, preprocessing, point clouds, metrics."""
