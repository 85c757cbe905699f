"""Offline evaluation: rosbag2 reading (rosbags, no rclpy), ground truth, metrics, reports."""
