"""Launch the ZoeDepth node: plain or managed (lifecycle), with an optional demo camera and rviz2.

    ros2 launch zoedepth_ros zoedepth.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
    ros2 launch zoedepth_ros zoedepth.launch.py namespace:=/cam0 image:=image_raw camera_info:=camera_info
    ros2 launch zoedepth_ros zoedepth.launch.py demo:=true rviz:=true          # no camera needed
    ros2 launch zoedepth_ros zoedepth.launch.py lifecycle:=true autostart:=false   # for a lifecycle manager
    ros2 launch zoedepth_ros zoedepth.launch.py namespace:=/robot cameras:="[front, left, rear:compressed]"

Parameters, later wins:
1. the node's built-in defaults (the values in config/zoedepth.yaml);
2. `params_file` (default: the shipped config/zoedepth.yaml; its `/**` key applies under any namespace);
3. `checkpoint:=` and `device:=` only when given: their empty default means "as params_file says", so a
   params_file of yours is never silently overridden by a launch-file default.

Topics: the node's `image` and `camera_info` are remapped to `image:=` / `camera_info:=`; a relative name resolves
in `namespace`. Empty (the default) means /camera/image_raw and /camera/camera_info, or with `demo:=true` the demo
camera's `image` and `camera_info`. Outputs (depth/image, depth/camera_info, points, depth/colormap, routing) are
relative, so they land in `namespace`.

Several cameras, one model: `cameras:=` is a YAML list of relative namespaces, e.g. `cameras:="[front, left]"`:
the node then reads `<namespace>/front/image` and `<namespace>/front/camera_info` (and so on) and publishes each
camera's outputs under its own namespace (`<namespace>/front/depth/image`, ...); `rear:compressed` subscribes
`rear/image/compressed`. `image:=` / `camera_info:=` are for the single camera and are refused with `cameras:=`
(remap a camera's topics with `<camera>/image:=...` in your own launch file, or publish them where the node
looks). Empty or `[]` (the default) means as params_file says (its `cameras`; default: the single camera).
With `demo:=true` each camera gets its own demo camera; rviz2 shows the first camera. Cameras that need
different model settings (checkpoint, routing, pad/flip) are two includes with different namespaces (or names),
each with its own params_file.

- `demo:=true` also runs `zoedepth_demo_camera` in the same namespace (one per camera in its namespace with
  `cameras:=`), publishing to the node's inputs with frame_id = `fixed_frame`. The demo's processes (cameras,
  node, rviz2) then load the shipped Fast DDS large-data profile config/fastdds_large_shm.xml (through the
  variable the distro's Fast DDS reads: FASTRTPS_DEFAULT_PROFILES_FILE on Humble and Jazzy,
  FASTDDS_DEFAULT_PROFILES_FILE from Kilted on), so its 640x480 images are not lost; not when you set
  FASTDDS_DEFAULT_PROFILES_FILE, FASTRTPS_DEFAULT_PROFILES_FILE, FASTDDS_BUILTIN_TRANSPORTS or another
  RMW_IMPLEMENTATION yourself, nor when /dev/shm is too small for it (the log says which).
- `lifecycle:=true` runs `zoedepth_node --managed`, a lifecycle node that starts unconfigured (configure loads the
  model, activate starts its subscriptions and publishers). With `autostart:=true` (the default) this launch
  file drives configure and then activate through the node's lifecycle services; `autostart:=false` leaves it
  unconfigured for `ros2 lifecycle set` or a lifecycle manager. Plain (`lifecycle:=false`) it runs at once.
- `rviz:=true` opens rviz2 on the node's namespaced points / depth/colormap / depth/image with `fixed_frame`
  (a copy of config/zoedepth.rviz written at launch time). Without rviz2 installed, launch fails before starting
  anything.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessStart, OnShutdown
from launch.events import matches_action
from launch.launch_context import LaunchContext
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from launch_ros.utilities import make_namespace_absolute, prefix_namespace
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription
from zoedepth_ros.ros.cameras import CameraListError, CameraSpec, parse_cameras
from zoedepth_ros.ros.fastdds import demo_env

PACKAGE = "zoedepth_ros"
DEFAULT_IMAGE, DEFAULT_CAMERA_INFO = "/camera/image_raw", "/camera/camera_info"
RVIZ_TOPICS = ("/points", "/depth/colormap", "/depth/image")  # in the template: the node's topics at the root

ARGUMENTS = {  # name -> (default, description)
    "namespace": ("", "namespace of the node and of its topics (and of the demo camera and rviz2)"),
    "name": ("zoedepth", "node name"),
    "image": ("", f"camera image topic; empty: {DEFAULT_IMAGE}, or the demo camera's `image` with demo:=true"),
    "camera_info": (
        "",
        f"camera info of that image; empty: {DEFAULT_CAMERA_INFO}, or the demo camera's `camera_info` with demo:=true",
    ),
    "cameras": (
        "",
        "several cameras on one model: a YAML list of relative namespaces, e.g. [front, left] (`rear:compressed` "
        "for a compressed one); empty or []: as params_file says (default: the single camera on image / camera_info)",
    ),
    "checkpoint": ("", "overrides params_file's checkpoint when given: official name, .pt file or HF folder"),
    "device": ("", "overrides params_file's device when given: auto, cpu, cuda or cuda:N"),
    "rviz": ("false", "also start rviz2 on this node's topics"),
    "fixed_frame": ("camera_optical_frame", "rviz2 fixed frame (and the demo camera's frame_id)"),
    "lifecycle": ("false", "true: a managed (lifecycle) node, `zoedepth_node --managed`"),
    "autostart": ("true", "with lifecycle:=true: configure and activate it; false: leave it unconfigured"),
    "demo": ("false", "also start zoedepth_demo_camera publishing to the node's inputs"),
}


def flag(context: LaunchContext, name: str) -> bool:
    """A true/false launch argument; anything else is an error that names the argument."""
    value = context.launch_configurations[name].strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{name}:={context.launch_configurations[name]} must be true or false")
    return value in ("true", "1")


def camera_entries(text: str) -> list[str] | None:
    """``cameras:=`` as the node's parameter value: None when empty or ``[]`` (params_file decides), else the entries.

    (launch_ros cannot pass an empty list parameter, so ``[]`` cannot override a params file's cameras.)

    Checked with the node's own rules (zoedepth_ros.ros.cameras), so a bad list stops the launch before anything runs.
    """
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"cameras:={text} is not a YAML list like [front, left] ({str(e).splitlines()[0]})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"cameras:={text} must be a list of relative namespaces like [front, left]")
    try:
        parse_cameras(value)
    except CameraListError as e:
        raise ValueError(f"cameras:={text}: {e}") from None
    return value or None


def require_rviz2() -> None:
    """Fail with one clear message before anything starts, instead of leaving the node running alone."""
    try:
        executable = Path(get_package_prefix("rviz2")) / "lib" / "rviz2" / "rviz2"
    except (PackageNotFoundError, LookupError, ValueError, OSError):
        executable = None
    if executable is None or not os.access(executable, os.X_OK):
        distro = os.environ.get("ROS_DISTRO") or "<distro>"
        raise RuntimeError(
            f"rviz:=true but rviz2 is not installed; install ros-{distro}-rviz2 or run without rviz:=true"
        )


def full_namespace(context: LaunchContext, namespace: str) -> str:
    """The node's absolute namespace, as launch_ros computes it (a PushRosNamespace around us included)."""
    combined = prefix_namespace(context.launch_configurations.get("ros_namespace"), namespace or None)
    return make_namespace_absolute(combined) if combined else "/"


def camera_namespace(namespace: str, camera: str) -> str:
    """The namespace of one camera of the node (``camera`` relative to the node's ``namespace``)."""
    if not camera:
        return namespace
    return f"{namespace.rstrip('/')}/{camera}" if namespace else camera


def rviz_config(template: Path, namespace: str, fixed_frame: str) -> str:
    """Write ``template`` with its topics moved into ``namespace`` and ``fixed_frame`` set; returns the path.

    rviz2 cannot resolve relative topics against a namespace, so the view is generated per launch.
    """
    config = yaml.safe_load(template.read_text())
    manager = config["Visualization Manager"]
    prefix = namespace.rstrip("/")
    for display in manager.get("Displays", []):
        topic = display.get("Topic")
        if isinstance(topic, dict) and topic.get("Value") in RVIZ_TOPICS:
            topic["Value"] = prefix + topic["Value"]
    manager["Global Options"]["Fixed Frame"] = fixed_frame
    fd, path = tempfile.mkstemp(prefix="zoedepth_", suffix=".rviz")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def launch_setup(context: LaunchContext) -> list:
    """Build the actions from the resolved arguments: everything is checked before anything starts."""
    cfg = context.launch_configurations
    rviz, lifecycle, autostart, demo = (flag(context, n) for n in ("rviz", "lifecycle", "autostart", "demo"))
    if rviz:
        require_rviz2()
    namespace, name, fixed_frame = cfg["namespace"], cfg["name"], cfg["fixed_frame"]
    cameras = camera_entries(cfg["cameras"])
    specs = parse_cameras(cameras) if cameras else []  # the demo cameras and rviz2 need them
    if specs and (cfg["image"] or cfg["camera_info"]):
        raise ValueError(
            "image:= and camera_info:= remap the single camera's topics; with cameras:= each camera reads "
            "<namespace>/<camera>/image and <namespace>/<camera>/camera_info"
        )
    if demo and any(s.transport == "compressed" for s in specs):
        raise ValueError("demo:=true publishes raw images; a camera with :compressed would receive none")
    actions: list = []
    extra_env: dict[str, str] | None = None
    if demo:  # the node, the demo cameras and rviz2 must agree; a real camera's processes are the user's to set
        processes = 1 + max(1, len(specs)) + int(rviz)
        extra_env, note = demo_env(getattr(context, "environment", os.environ), processes)
        actions.append(LogInfo(msg=f"demo:=true: {note}"))
    image = cfg["image"] or ("image" if demo else DEFAULT_IMAGE)
    camera_info = cfg["camera_info"] or ("camera_info" if demo else DEFAULT_CAMERA_INFO)
    remappings = [("image", image), ("camera_info", camera_info)] if not specs else []
    parameters: list = [cfg["params_file"]] if cfg["params_file"] else []
    overrides: dict = {k: ParameterValue(cfg[k], value_type=str) for k in ("checkpoint", "device") if cfg[k]}
    if cameras is not None:
        overrides["cameras"] = cameras
    if overrides:
        parameters.append(overrides)
    node_kw = dict(
        package=PACKAGE,
        executable="zoedepth_node",
        name=name,
        namespace=namespace,
        parameters=parameters,
        remappings=remappings,
        output="screen",
        emulate_tty=True,
        additional_env=extra_env,
    )
    if lifecycle:
        node = LifecycleNode(arguments=["--managed"], **node_kw)
        if autostart:

            def transition(transition_id: int) -> EmitEvent:
                return EmitEvent(
                    event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id)
                )

            actions += [
                RegisterEventHandler(
                    OnProcessStart(target_action=node, on_start=[transition(Transition.TRANSITION_CONFIGURE)])
                ),
                RegisterEventHandler(
                    OnStateTransition(
                        target_lifecycle_node=node,
                        start_state="configuring",
                        goal_state="inactive",
                        entities=[transition(Transition.TRANSITION_ACTIVATE)],
                    )
                ),
            ]
    else:
        node = Node(**node_kw)
    actions.append(node)
    if demo:
        for spec in specs or [CameraSpec("", "raw")]:
            actions.append(
                Node(
                    package=PACKAGE,
                    executable="zoedepth_demo_camera",
                    name="demo_camera",
                    namespace=camera_namespace(namespace, spec.name),
                    parameters=[{"frame_id": fixed_frame}],
                    remappings=remappings,
                    output="screen",
                    additional_env=extra_env,
                )
            )
    if rviz:
        template = Path(get_package_share_directory(PACKAGE)) / "config" / "zoedepth.rviz"
        first = specs[0].name if specs else ""
        path = rviz_config(template, full_namespace(context, camera_namespace(namespace, first)), fixed_frame)
        actions += [
            Node(
                package="rviz2",
                executable="rviz2",
                namespace=namespace,
                arguments=["-d", path],
                output="screen",
                additional_env=extra_env,
            ),
            RegisterEventHandler(OnShutdown(on_shutdown=[OpaqueFunction(function=lambda _: remove_file(path))])),
        ]
    return actions


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "zoedepth.yaml"])
    args = [DeclareLaunchArgument(n, default_value=d, description=text) for n, (d, text) in ARGUMENTS.items()]
    args.append(
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="parameter file (empty: the node's built-in defaults)",
        )
    )
    return LaunchDescription([*args, OpaqueFunction(function=launch_setup)])
