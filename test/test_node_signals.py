"""SIGINT (once or twice) and SIGTERM end the node with exit 0 and no traceback: idle, busy and during start-up."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

try:
    import rclpy
    from test_node_dds import DOMAIN_ID, Graph, rgb_image
except ImportError:  # a venv without ROS: the tests below skip
    rclpy = None

from zoedepth_ros.benchmarks.isolation import ros_args, start_python_module

pytestmark = pytest.mark.skipif(rclpy is None, reason="ROS 2 (rclpy) is needed for the node tests")

DOMAIN = (DOMAIN_ID + 5) if rclpy is not None else 0
IDLE_LIMIT_S, BUSY_LIMIT_S = 2.0, 3.0


@pytest.fixture
def ros(monkeypatch):
    from ros_graph import use_domain

    env = use_domain(monkeypatch, DOMAIN)
    return env


def start(env, checkpoint, log, **params):
    return start_python_module(
        "zoedepth_ros.ros.node", ros_args({"checkpoint": checkpoint, "device": "cpu", **params}), env, log
    )


def signal_and_time(proc, signals: list[signal.Signals], gap: float = 0.05) -> tuple[int, float]:
    """Send ``signals`` ``gap`` seconds apart; the exit status and the seconds from the first one to the exit."""
    t0 = time.monotonic()
    for i, sig in enumerate(signals):
        if i:
            time.sleep(gap)
        if proc.poll() is None:
            proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, time.monotonic() - t0


def assert_clean(log, text_must_not=("Traceback", "KeyboardInterrupt", "context is invalid", "RCLError")):
    text = log.read_text()
    for bad in text_must_not:
        assert bad not in text, text


def running_node(env, tiny_checkpoint, tmp_path):
    log = tmp_path / "node.log"
    proc = start(env, tiny_checkpoint("nk"), log)
    graph = Graph()
    graph.wait_for_node(proc, log)
    return proc, graph, log


IDLE_CASES = {  # signals and the gap between them (s); a second SIGINT 0.2-0.4 s later once killed it with -2
    "sigint": ([signal.SIGINT], 0.0),
    "sigterm": ([signal.SIGTERM], 0.0),
    "double-sigint": ([signal.SIGINT, signal.SIGINT], 0.05),
    "sigint-0.3s-sigint": ([signal.SIGINT, signal.SIGINT], 0.3),
    "sigint-0.6s-sigterm": ([signal.SIGINT, signal.SIGTERM], 0.6),
}


@pytest.mark.parametrize(("signals", "gap"), IDLE_CASES.values(), ids=IDLE_CASES.keys())
def test_idle_node_exits_0_quickly(ros, tiny_checkpoint, tmp_path, signals, gap):
    proc, graph, log = running_node(ros, tiny_checkpoint, tmp_path)
    try:
        graph.request(rgb_image(0), 1_700_000_600_000_000_000)  # it did work before going idle
        graph.spin(0.5)
        code, seconds = signal_and_time(proc, signals, gap)
    finally:
        graph.close()
    assert code == 0, log.read_text()
    assert seconds < IDLE_LIMIT_S, f"took {seconds:.2f} s"
    assert_clean(log)


def test_busy_node_exits_0_within_3_s(ros, tiny_checkpoint, tmp_path):
    proc, graph, log = running_node(ros, tiny_checkpoint, tmp_path)
    big = np.ascontiguousarray(np.tile(rgb_image(1), (6, 6, 1)))  # 384x288: keeps the CPU model busy
    h, w = big.shape[:2]
    stamp = [1_700_000_700_000_000_000]
    stop = threading.Event()
    try:
        graph.wait(
            lambda: (
                graph.send(big, stamp[0], width=w, height=h),
                stamp.__setitem__(0, stamp[0] + 1),
                graph.spin(0.2),
                len(graph.received["depth"]) > 0,
            )[-1],
            "depth for large frames",
            60,
        )

        def flood() -> None:  # 30 Hz, faster than the model: there is always a frame in the model
            while not stop.is_set():
                graph.send(big, stamp[0], width=w, height=h)
                stamp[0] += 1
                time.sleep(1 / 30)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        time.sleep(1.0)
        code, seconds = signal_and_time(proc, [signal.SIGINT, signal.SIGINT], 0.3)
    finally:
        stop.set()
        time.sleep(0.1)
        graph.close()
    assert code == 0, log.read_text()
    assert seconds < BUSY_LIMIT_S, f"took {seconds:.2f} s"
    assert_clean(log)


@pytest.mark.parametrize(("delay", "gap"), [(0.3, 0.05), (1.5, 0.3), (3.0, 0.2)])
def test_signal_during_start_up_exits_0(ros, tiny_checkpoint, tmp_path, delay, gap):
    """Whatever the node is doing then: importing torch, initialising rclpy, loading the model or warming up."""
    log = tmp_path / "node.log"
    proc = start(ros, tiny_checkpoint("nk"), log)
    time.sleep(delay)
    code, seconds = signal_and_time(proc, [signal.SIGINT, signal.SIGINT], gap)
    assert code == 0, log.read_text()
    assert seconds < IDLE_LIMIT_S, f"took {seconds:.2f} s"
    assert_clean(log)


def test_signal_while_downloading_the_weights_exits_0(ros, tmp_path, tiny_checkpoint):
    """Start-up stuck in the first-use download of an official checkpoint (a server that stalls)."""
    from helpers_http import CheckpointServer, Stall

    data = tiny_checkpoint("nk").read_bytes()
    with CheckpointServer() as server:
        server.add("ZoeD_M12_NK.pt", data, Stall(after=len(data) // 3, seconds=30))
        env = {**ros, "ZOEDEPTH_ROS_CACHE": str(tmp_path / "cache"), "ZOEDEPTH_ROS_BASE_URL": server.url}
        log = tmp_path / "node.log"
        proc = start_python_module(
            "zoedepth_ros.ros.node", ros_args({"checkpoint": "ZoeD_M12_NK", "device": "cpu"}), env, log
        )
        deadline = time.monotonic() + 60
        while "downloading ZoeD_M12_NK" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # inside the stalled transfer
        code, seconds = signal_and_time(proc, [signal.SIGINT, signal.SIGINT])
    assert code == 0, log.read_text()
    assert seconds < IDLE_LIMIT_S, f"took {seconds:.2f} s"
    assert_clean(log)
    assert (tmp_path / "cache" / "ZoeD_M12_NK.pt.part").exists()  # kept, to be resumed next time
    assert not (tmp_path / "cache" / "ZoeD_M12_NK.pt").exists()
