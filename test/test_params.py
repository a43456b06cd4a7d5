"""The parameter table: validation messages, the generated YAML file, the camera list."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoedepth_ros.ros.cameras import CameraListError, CameraSpec, parse_cameras
from zoedepth_ros.ros.params import BY_NAME, PARAMS, default_yaml, defaults, validate

REPO = Path(__file__).resolve().parents[1]


def test_config_file_equals_the_table():
    assert (REPO / "config" / "zoedepth.yaml").read_text() == default_yaml()


def test_defaults_are_valid_and_every_parameter_is_described():
    assert validate(defaults()) == []
    assert all(p.description for p in PARAMS)
    assert len({p.name for p in PARAMS}) == len(PARAMS)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("routing", "sideways", "routing must be one of auto, indoor, outdoor"),
        ("device", "gpu", "device 'gpu' is not valid"),
        ("device", 3, "device must be a string, got 3"),
        ("point_cloud.decimation", 0, "point_cloud.decimation must be an integer in [1, 32], got 0"),
        ("point_cloud.decimation", 1.5, "must be an integer in [1, 32], got 1.5"),
        ("max_depth", "abc", "max_depth must be a number in [0, 1000], got 'abc'"),
        ("output_scale", 2.0, "output_scale must be a number in [0.05, 1], got 2.0"),
        ("pad_input", "yes", "pad_input must be a bool (true or false)"),
    ],
)
def test_bad_values_are_named(name, value, reason):
    (message,) = validate({name: value})
    assert reason in message


def test_cross_parameter_rule_and_int_for_float():
    assert validate({"min_depth": 5, "max_depth": 2.0}) == ["min_depth (5) must be below max_depth (2.0)"]
    assert BY_NAME["max_depth"].check(10) is None  # an int is fine where a float is expected


def test_yaml_nests_dotted_names():
    text = default_yaml()
    assert "    point_cloud:\n      # " in text and "      decimation: 1\n" in text
    assert "    qos:\n" in text and '      output_reliability: "reliable"\n' in text


def test_camera_list_names_topics_and_transports():
    assert parse_cameras(None) == parse_cameras([]) == [CameraSpec("", "raw")]
    front, rear, side = parse_cameras(["front", "rear:compressed", "robot/side_2:raw"], "compressed")
    assert (front.transport, rear.transport, side.transport) == ("compressed", "compressed", "raw")
    assert (rear.name, front.topic("depth/image"), side.topic("camera_info")) == (
        "rear",
        "front/depth/image",
        "robot/side_2/camera_info",
    )
    assert CameraSpec("", "raw").topic("points") == "points"
    assert validate({"cameras": ["front", "left"], "max_batch": 16}) == []
    assert validate({"cameras": None}) == []  # `cameras: []` arrives from rcl as an unset parameter


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("front", "cameras must be a list of strings, e.g. [front, left], got 'front'"),
        (["/front"], "cameras entry '/front' is absolute; give the namespace relative to the node's ('front')"),
        (["front", "front"], "cameras lists 'front' twice"),
        (["front", "front/depth"], "cameras entry 'front/depth' is inside 'front': their topics would mix"),
        (["2nd"], "cameras entry '2nd' is not a valid relative ROS namespace"),
        (["a//b"], "cameras entry 'a//b' is not a valid relative ROS namespace"),
        (["~/cam"], "cameras entry '~/cam' is not a valid relative ROS namespace"),
        (["front/"], "cameras entry 'front/' is not a valid relative ROS namespace"),
        ([""], "cameras entry '' has no name; leave cameras empty for the single camera"),
        (["rear:jpeg"], "cameras entry 'rear:jpeg': the transport after ':' must be one of raw, compressed"),
        ([3], "cameras entries must be strings (relative namespaces), got 3"),
    ],
)
def test_bad_camera_lists_are_named(value, reason):
    (message,) = validate({"cameras": value})
    assert reason in message
    if not isinstance(value, str):
        with pytest.raises(CameraListError, match="cameras"):
            parse_cameras(value)


@pytest.mark.parametrize("value", [0, 17, 2.0])
def test_max_batch_is_an_integer_from_1_to_16(value):
    (message,) = validate({"max_batch": value})
    assert f"max_batch must be an integer in [1, 16], got {value}" in message


def test_yaml_writes_the_camera_list():
    assert "\n    cameras: []\n" in default_yaml() and "\n    max_batch: 4\n" in default_yaml()
