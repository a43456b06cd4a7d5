"""The offline tools' pieces, without ROS: bag reading / writing (rosbags), image and depth files, shared CLI."""
