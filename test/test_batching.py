"""The per-camera mailbox and batch scheduler (zoedepth_ros.ros.batching) and the worker threads, without ROS."""

from __future__ import annotations

import random
import threading
import time

import pytest

from zoedepth_ros.engine.pipeline import FrameError
from zoedepth_ros.ros.batching import CameraMailbox, submit_good, warmup_plan
from zoedepth_ros.ros.worker import FrameWorker

VGA, HD = (480, 640), (720, 1280)


def taken(batch) -> list[tuple[str, object]]:
    return [(w.camera, w.frame) for w in batch]


def test_a_newer_frame_replaces_the_waiting_one_and_is_counted_for_its_camera():
    box: CameraMailbox[int] = CameraMailbox(["front", "left"], max_batch=4)
    assert box.put("front", 1, VGA) is False
    assert box.put("front", 2, VGA) is True and box.put("front", 3, VGA) is True
    assert box.put("left", 10, VGA) is False
    assert box.replaced == {"front": 2, "left": 0}
    assert taken(box.take(timeout=0)) == [("front", 3), ("left", 10)]
    assert box.take(timeout=0.01) == [] and box.waiting == 0


def test_oldest_camera_first_with_its_same_key_partners_oldest_first_up_to_max_batch():
    box: CameraMailbox[str] = CameraMailbox(["a", "b", "c", "d", "e"], max_batch=3)
    for camera, key in [("b", HD), ("a", VGA), ("d", VGA), ("c", VGA), ("e", VGA)]:  # arrival order
        box.put(camera, camera + "1", key)
    # b is the oldest: it goes first, alone (nobody else is HD); then a with d and c (oldest first), capped at 3
    assert taken(box.take(0)) == [("b", "b1")]
    assert taken(box.take(0)) == [("a", "a1"), ("d", "d1"), ("c", "c1")]
    assert taken(box.take(0)) == [("e", "e1")]


def test_a_newer_frame_keeps_its_cameras_place_in_the_queue():
    box: CameraMailbox[str] = CameraMailbox(["a", "b"], max_batch=1)
    box.put("a", "a1", VGA)
    box.put("b", "b1", HD)
    box.put("a", "a2", VGA)  # a has waited since a1: it stays first, with its newest frame
    assert taken(box.take(0)) == [("a", "a2")]
    assert taken(box.take(0)) == [("b", "b1")]
    box.put("b", "b2", HD)
    box.put("a", "a3", VGA)
    assert taken(box.take(0)) == [("b", "b2")]


def reference_take(waiting: dict[str, tuple[int, object, object]], max_batch: int) -> list[str]:
    """The rule written out plainly: the camera waiting since the smallest arrival number first, then the same-key
    cameras in that order."""
    ordered = sorted(waiting, key=lambda cam: waiting[cam][0])
    first = ordered[0]
    same = [cam for cam in ordered[1:] if waiting[cam][2] == waiting[first][2]]
    return [first, *same[: max_batch - 1]]


@pytest.mark.parametrize("max_batch", [1, 2, 4])
def test_random_traffic_follows_the_rule_and_no_camera_waits_more_than_one_take_per_camera(max_batch):
    cameras = [f"cam{i}" for i in range(6)]
    keys = {cam: (VGA if i % 2 else HD) for i, cam in enumerate(cameras)}
    rng = random.Random(max_batch)
    box: CameraMailbox[int] = CameraMailbox(cameras, max_batch)
    model: dict[str, tuple[int, object, object]] = {}  # camera -> (arrival, frame, key)
    takes_waited: dict[str, int] = {}
    arrivals = 0
    for step in range(3000):
        if rng.random() < 0.75:  # more puts than takes (the model falls behind), half of them from fast cam0
            cam = "cam0" if rng.random() < 0.5 else rng.choice(cameras)
            frame = step
            box.put(cam, frame, keys[cam])
            if cam not in model:
                takes_waited[cam] = 0
            since = model[cam][0] if cam in model else arrivals  # a replacement keeps the camera's place
            model[cam] = (since, frame, keys[cam])
            arrivals += 1
        elif model:
            expected = reference_take(model, max_batch)
            got = box.take(0)
            assert [w.camera for w in got] == expected
            assert [w.frame for w in got] == [model[cam][1] for cam in expected]
            for cam in expected:
                del model[cam]
                del takes_waited[cam]
            for cam in takes_waited:
                takes_waited[cam] += 1
                assert takes_waited[cam] < len(cameras), f"{cam} waited {takes_waited[cam]} takes"


def test_take_waits_for_a_frame_and_close_wakes_it():
    box: CameraMailbox[str] = CameraMailbox(["a"], max_batch=2)
    got = []
    taker = threading.Thread(target=lambda: got.append(taken(box.take(timeout=5))))
    taker.start()
    box.put("a", "frame", VGA)
    taker.join(timeout=5)
    assert got == [[("a", "frame")]]
    waiter = threading.Thread(target=lambda: got.append(box.take(timeout=5)))
    waiter.start()
    t0 = time.monotonic()
    box.close()
    waiter.join(timeout=5)
    assert got[-1] == [] and box.closed and time.monotonic() - t0 < 1.0
    assert box.put("a", "late", VGA) is False and box.take(0) == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        CameraMailbox(["a"], max_batch=0)
    with pytest.raises(ValueError, match="camera names repeat"):
        CameraMailbox(["a", "a"], max_batch=2)
    with pytest.raises(KeyError, match="unknown camera 'z'"):
        CameraMailbox(["a"], max_batch=2).put("z", 1, VGA)


def test_warmup_plan_has_one_batch_size_per_possible_group():
    plan = warmup_plan([VGA, HD, VGA, VGA], max_batch=2)
    assert plan == {VGA: [1, 2], HD: [1]}
    assert warmup_plan([VGA, VGA, VGA], max_batch=4) == {VGA: [1, 2, 3]}
    assert warmup_plan([], max_batch=4) == {}


def test_a_frame_the_engine_turns_away_is_dropped_alone_and_the_rest_resubmitted():
    box: CameraMailbox[str] = CameraMailbox(["a", "b", "c", "d"], max_batch=4)
    for cam in "abcd":
        box.put(cam, "bad" if cam in "bd" else "good", VGA)
    batch = box.take(0)
    calls, rejected = [], []

    def submit(frames):
        calls.append([w.camera for w in frames])
        for i, w in enumerate(frames):
            if w.frame == "bad":
                raise FrameError(i, f"frame {i} is bad")
        return "job"

    job, frames = submit_good(submit, batch, lambda w, e: rejected.append((w.camera, str(e))))
    assert job == "job" and [w.camera for w in frames] == ["a", "c"]
    assert calls == [["a", "b", "c", "d"], ["a", "c", "d"], ["a", "c"]]
    assert rejected == [("b", "frame 1 is bad"), ("d", "frame 2 is bad")]
    only_bad = [w for w in batch if w.frame == "bad"]
    assert submit_good(submit, only_bad, lambda w, e: None) is None


def test_other_errors_and_a_wrong_index_propagate():
    box: CameraMailbox[str] = CameraMailbox(["a"], max_batch=1)
    box.put("a", "x", VGA)
    batch = box.take(0)

    def out_of_range(frames):
        raise FrameError(5, "no such frame")

    with pytest.raises(FrameError, match="no such frame"):
        submit_good(out_of_range, batch, lambda w, e: None)
    with pytest.raises(RuntimeError, match="device"):
        submit_good(lambda frames: (_ for _ in ()).throw(RuntimeError("device")), batch, lambda w, e: None)


def test_worker_batches_while_busy_and_a_silent_camera_holds_nothing_back():
    """The first frame occupies the 'model'; frames of two cameras arriving meanwhile go in one batch, and a
    third camera that never sends does not delay anything."""
    release = threading.Event()
    submitted: list[list[str]] = []
    published: list[list[str]] = []

    def submit(batch):
        submitted.append([w.frame for w in batch])
        if len(submitted) == 1:
            release.wait(5)
        return [w.frame for w in batch]

    worker = FrameWorker(["a", "b", "silent"], 4, submit, published.append, poll=0.02).start()
    try:
        worker.put("a", "a1", VGA)
        deadline = time.monotonic() + 5
        while not submitted and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.put("b", "b1", VGA)
        worker.put("a", "a2", VGA)
        release.set()
        while len(published) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert submitted == [["a1"], ["b1", "a2"]]
        assert published == [["a1"], ["b1", "a2"]]
        assert worker.replaced("a") == 0 and worker.replaced("silent") == 0
    finally:
        assert worker.stop(2.0)


def test_stop_is_bounded_when_a_batch_never_finishes():
    stuck = threading.Event()
    worker = FrameWorker(["a"], 1, lambda batch: stuck.wait(10), lambda job: None, poll=0.02).start()
    worker.put("a", "frame", VGA)
    time.sleep(0.1)
    t0 = time.monotonic()
    assert worker.stop(0.2) is False
    assert time.monotonic() - t0 < 1.0
    stuck.set()
