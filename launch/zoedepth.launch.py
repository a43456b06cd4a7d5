"""Launch the zoedepth_ros node against a camera, optionally with rviz.

ros2 launch zoedepth_ros zoedepth.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("zoedepth_ros")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="camera image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="camera info topic of that image"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "zoedepth.yaml"]),
                              description="parameter file"),
        DeclareLaunchArgument("checkpoint", default_value="ZoeD_M12_NK",
                              description="official name (from the weights cache), .pt file or HF folder"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2 with our view"),
    ]
    node = Node(
        package="zoedepth_ros",
        executable="zoedepth_node",
        name="zoedepth",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {"checkpoint": LaunchConfiguration("checkpoint"), "device": LaunchConfiguration("device")}],
        remappings=[("image", LaunchConfiguration("image")), ("camera_info", LaunchConfiguration("camera_info"))],
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "zoedepth.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    return LaunchDescription([*args, node, rviz])
