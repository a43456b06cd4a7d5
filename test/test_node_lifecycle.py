"""The managed (lifecycle) node through the real lifecycle services: configure, activate, deactivate, cleanup,
shutdown, and a failed configure that leaves the node up to retry."""

from __future__ import annotations

import shutil

import pytest

try:
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from test_node_dds import DOMAIN_ID, Graph, diagnostics, rgb_image
except ImportError:  # a venv without ROS: the tests below skip
    rclpy = None

from zoedepth_ros.benchmarks.isolation import ros_args, start_python_module

pytestmark = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy, lifecycle_msgs) is needed for the node tests")

DOMAIN = (DOMAIN_ID + 4) if rclpy is not None else 0


class Lifecycle:
    """Clients of the node's lifecycle services."""

    def __init__(self, graph, node: str = "zoedepth") -> None:
        self.graph = graph
        self.change = graph.node.create_client(ChangeState, f"/{node}/change_state")
        self.get = graph.node.create_client(GetState, f"/{node}/get_state")

    def _call(self, client, request):
        graph = self.graph
        graph.wait(lambda: client.service_is_ready(), f"the {client.srv_name} service", 60)
        future = client.call_async(request)
        graph.wait(future.done, f"a reply from {client.srv_name}", 120)
        return future.result()

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success


@pytest.fixture
def managed(tiny_checkpoint, tmp_path, monkeypatch):
    from ros_graph import stop_node, use_domain

    env = use_domain(monkeypatch, DOMAIN)
    checkpoint = tmp_path / "later" / "tiny_nk.pt"  # does not exist yet: the first configure must fail
    log = tmp_path / "node.log"
    proc = start_python_module(
        "zoedepth_ros.ros.node",
        ["--managed", *ros_args({"checkpoint": checkpoint, "device": "cpu", "download": False})],
        env,
        log,
    )
    graph = Graph()
    try:
        yield graph, Lifecycle(graph), proc, log, checkpoint
    finally:
        graph.close()
        stop_node(proc)


def test_lifecycle_transitions(managed, tiny_checkpoint):
    graph, lc, proc, log, checkpoint = managed
    assert lc.state() == "unconfigured"
    assert graph.pub_image.get_subscription_count() == 0  # nothing subscribed before activate

    # a missing checkpoint: configure fails with the reason, and the node stays up to retry
    assert lc.transition(Transition.TRANSITION_CONFIGURE) is False
    assert lc.state() == "unconfigured" and proc.poll() is None
    graph.wait(lambda: "checkpoint file not found" in log.read_text(), "the reason in the node's log", 10)
    graph.wait(
        lambda: "checkpoint file not found" in diagnostics(graph).get("last error", ""), "the reason in diagnostics", 10
    )
    checkpoint.parent.mkdir()
    shutil.copy(tiny_checkpoint("nk"), checkpoint)
    assert lc.transition(Transition.TRANSITION_CONFIGURE) is True
    assert lc.state() == "inactive"
    assert graph.pub_image.get_subscription_count() == 0

    assert lc.transition(Transition.TRANSITION_ACTIVATE) is True
    assert lc.state() == "active"
    graph.wait(lambda: graph.pub_image.get_subscription_count() > 0, "the image subscription", 30)
    stamp = 1_700_000_500_000_000_000
    graph.request(rgb_image(1), stamp)

    # start-up parameters are frozen while configured, free again once cleaned up
    graph.params.wait_for_services(timeout_sec=20.0)
    from rclpy.parameter import Parameter

    future = graph.params.set_parameters([Parameter("device", value="cuda")])
    graph.wait(future.done, "set device")
    result = future.result().results[0]
    assert not result.successful and "only while the node is unconfigured" in result.reason

    assert lc.transition(Transition.TRANSITION_DEACTIVATE) is True
    assert lc.state() == "inactive"
    graph.wait(lambda: graph.pub_image.get_subscription_count() == 0, "the image subscription to go", 30)
    before = len(graph.received["depth"])
    for i in range(5):  # no model work while inactive
        graph.send(rgb_image(2), stamp + 1 + i)
        graph.spin(0.2)
    assert len(graph.received["depth"]) == before

    assert lc.transition(Transition.TRANSITION_CLEANUP) is True
    assert lc.state() == "unconfigured"
    graph.wait(
        lambda: diagnostics(graph).get("state") == "unconfigured" and diagnostics(graph)["precision"] == "",
        "diagnostics showing the model released",
        10,
    )
    assert lc.transition(Transition.TRANSITION_CONFIGURE) is True  # configure again after cleanup
    assert lc.transition(Transition.TRANSITION_ACTIVATE) is True
    graph.request(rgb_image(3), stamp + 100)

    assert lc.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN) is True
    assert proc.wait(timeout=10) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
