"""Measurement code behind ``zoedepth-ros-bench``: timings, the end-to-end DDS harness, reference paths.

Nothing here imports ROS at module import time; the DDS parts import rclpy when they run.
"""
