"""zoedepth_ros: ZoeDepth metric monocular depth in plain torch, with a ROS 2 node around it."""

__version__ = "0.1.0"
