"""Two cameras: the shipped launch file included twice, /cam0 and /cam1, each with its own params_file.

Also checks the override rule of the launch file: checkpoint:= / device:= replace the params_file's values only
when given (cam0 passes them over a params file naming a missing checkpoint; cam1 passes none, so its params
file's checkpoint and device must be used).
"""

from __future__ import annotations

import pytest
import yaml
from ros_graph import module_env
from test_launch import (
    DOMAIN_BASE,
    TOOLS_REASON,
    Camera,
    H,
    W,
    apply_env,
    launch_fixture,
    launch_pytest,
    rgb_image,
    shipped_launch_file,
)

try:  # guarded, not a module-level skip: with launch_testing's pytest plugin that would skip the whole run
    from launch.actions import GroupAction, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_pytest.actions import ReadyToTest

    from launch import LaunchDescription
except ImportError:
    pass

pytestmark = [pytest.mark.skipif(launch_pytest is None, reason=TOOLS_REASON), pytest.mark.timeout(120)]

DOMAIN = DOMAIN_BASE + 1
CAMERAS = {  # namespace -> (params file values, launch arguments besides namespace/params_file)
    "/cam0": ({"max_depth": 5.0, "point_cloud": {"decimation": 2}, "checkpoint": "/nonexistent/ZoeD.pt"}, True),
    "/cam1": ({"max_depth": 7.5, "point_cloud": {"decimation": 4}, "device": "cpu"}, False),
}


launch_env = module_env(lambda mp: apply_env(mp, DOMAIN))


@launch_fixture(scope="module")
def two_cameras(launch_env, tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("params")
    includes = []
    for ns, (values, explicit) in CAMERAS.items():
        values = dict(values)
        if not explicit:  # only the params file names the checkpoint (and device)
            values["checkpoint"] = str(tiny_checkpoint("nk"))
        path = folder / f"{ns.strip('/')}.yaml"
        path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
        args = {"namespace": ns, "params_file": str(path), "image": "image", "camera_info": "camera_info"}
        if explicit:
            args |= {"checkpoint": str(tiny_checkpoint("nk")), "device": "cpu"}
        # scoped: launch configurations set by one include must not leak into the next
        includes.append(
            GroupAction(
                [
                    IncludeLaunchDescription(
                        PythonLaunchDescriptionSource(shipped_launch_file()), launch_arguments=args.items()
                    )
                ],
                scoped=True,
            )
        )
    return LaunchDescription([*includes, ReadyToTest()])


@pytest.fixture(scope="module")
def cameras(launch_env):
    cams = {ns: Camera(DOMAIN, ns) for ns in CAMERAS}
    yield cams
    for cam in cams.values():
        cam.close()


@pytest.mark.launch(fixture=two_cameras)
def test_each_namespace_has_its_own_node_with_its_own_parameters(cameras, tiny_checkpoint):
    for ns, (values, _) in CAMERAS.items():
        cam = cameras[ns]
        max_depth, decimation, checkpoint, device = cam.get_params(
            ["max_depth", "point_cloud.decimation", "checkpoint", "device"]
        )
        assert (max_depth, decimation) == (values["max_depth"], values["point_cloud"]["decimation"]), ns
        assert (checkpoint, device) == (str(tiny_checkpoint("nk")), "cpu"), ns
        # the parameters are in effect, and the topics are the namespace's own: the cloud is decimated
        depth, cloud = cam.request(rgb_image(3), 1_700_000_100_000_000_000 + len(ns), topics=("depth", "points"))
        assert (depth.height, depth.width) == (H, W)
        step = values["point_cloud"]["decimation"]
        assert (cloud.height, cloud.width) == (H // step, W // step), ns
