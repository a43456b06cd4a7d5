"""The ROS edge: the lifecycle node's wiring, one unit per camera, pairing, batching mailbox and messages.

Importing this package imports no ROS; the modules that build ROS messages or nodes do (``depth_node``,
``camera_unit``, ``messages``, ``qos``, ``demo_camera``).
"""
