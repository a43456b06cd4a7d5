"""The parameter table: validation messages, the generated YAML file, and the latest-frame mailbox."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from zoedepth_ros.latest import LatestSlot
from zoedepth_ros.params import BY_NAME, PARAMS, default_yaml, defaults, validate

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


def test_latest_slot_keeps_only_the_newest():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.replaced == 2
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None


def test_latest_slot_wakes_a_waiting_worker_and_closes():
    slot: LatestSlot[str] = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    worker.start()
    slot.put("frame")
    worker.join(timeout=5)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    waiter.start()
    slot.close()
    waiter.join(timeout=5)
    assert got == ["frame", None] and slot.closed
