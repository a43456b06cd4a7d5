"""Image / CameraInfo pairing by stamp in either order (zoedepth_ros.ros.pairing), on a hand-driven clock."""

from __future__ import annotations

import random

from zoedepth_ros.ros.pairing import Paired, StampPairer, Unpaired

MS = 1_000_000  # ns
WAIT, TOL = 0.5, 0.1


def paired(results) -> list[str]:
    return [r.image for r in results if isinstance(r, Paired)]


def reasons(results) -> list[str]:
    return [r.reason for r in results if isinstance(r, Unpaired)]


def test_info_first_pairs_at_once():
    p: StampPairer[str, str] = StampPairer()
    assert p.add_info(100 * MS, "info100", now=0.0, tolerance=TOL) == []
    (r,) = p.add_image(100 * MS, "img100", now=0.01, wait=WAIT, tolerance=TOL)
    assert isinstance(r, Paired) and (r.image, r.info, r.exact, r.waited) == ("img100", "info100", True, 0.0)
    assert p.stats.exact == 1 and p.stats.waited == 0


def test_image_first_waits_for_its_own_info_not_the_previous_one():
    p: StampPairer[str, str] = StampPairer()
    p.add_info(0, "info0", now=0.0, tolerance=TOL)
    # the previous CameraInfo is 200 ms older (a 5 Hz camera): the old rule dropped this image as late
    assert p.add_image(200 * MS, "img200", now=0.2, wait=WAIT, tolerance=TOL) == []
    assert p.waiting == 1
    (r,) = p.add_info(200 * MS, "info200", now=0.23, tolerance=TOL)
    assert (r.image, r.info, r.exact) == ("img200", "info200", True)
    assert abs(r.waited - 0.03) < 1e-9 and p.stats.waited == 1 and p.waiting == 0


def test_info_several_periods_late_still_pairs_every_image():
    p: StampPairer[int, int] = StampPairer()
    out = []
    for i in range(3):  # 30 Hz images whose CameraInfos come 2.5 periods late
        out += p.add_image(i * 33 * MS, i, now=i * 0.033, wait=WAIT, tolerance=TOL)
    for i in range(3):
        out += p.add_info(i * 33 * MS, i, now=0.08 + i * 0.033, tolerance=TOL)
    assert paired(out) == [0, 1, 2] and reasons(out) == []


def test_wait_expires_into_the_tolerance_rule():
    p: StampPairer[str, str] = StampPairer()
    p.add_info(0, "info0", now=0.0, tolerance=TOL)
    assert p.add_image(50 * MS, "near", now=0.05, wait=WAIT, tolerance=TOL) == []
    assert p.expire(now=0.5, wait=WAIT, tolerance=TOL) == []  # not yet: waited 0.45 s
    (r,) = p.expire(now=0.56, wait=WAIT, tolerance=TOL)
    assert isinstance(r, Paired) and (r.info, r.exact) == ("info0", False)  # 50 ms away: within 0.1 s
    assert p.add_image(400 * MS, "far", now=0.6, wait=WAIT, tolerance=TOL) == []
    (r,) = p.expire(now=1.2, wait=WAIT, tolerance=TOL)
    assert isinstance(r, Unpaired) and r.reason == "camera_info_late" and "0.400 s away" in r.message


def test_no_camera_info_at_all():
    p: StampPairer[str, str] = StampPairer()
    assert p.add_image(0, "img", now=0.0, wait=WAIT, tolerance=TOL) == []
    assert reasons(p.expire(now=0.6, wait=WAIT, tolerance=TOL)) == ["no_camera_info"]
    assert p.stats.dropped == {"no_camera_info": 1}


def test_a_newer_info_settles_an_image_whose_own_info_will_not_come():
    p: StampPairer[str, str] = StampPairer()
    assert p.add_image(100 * MS, "img", now=0.0, wait=WAIT, tolerance=TOL) == []
    # this driver stamps its CameraInfo 20 ms after the image: no need to sit out the wait
    (r,) = p.add_info(120 * MS, "info120", now=0.02, tolerance=TOL)
    assert isinstance(r, Paired) and (r.info, r.exact) == ("info120", False)
    # and once such an info is here, a later image that is older than it resolves at once too
    (r,) = p.add_image(110 * MS, "img110", now=0.03, wait=WAIT, tolerance=TOL)
    assert isinstance(r, Paired) and r.info == "info120"


def test_zero_wait_is_the_tolerance_rule_at_once():
    p: StampPairer[str, str] = StampPairer()
    p.add_info(0, "info0", now=0.0, tolerance=TOL)
    assert reasons(p.add_image(200 * MS, "img", now=0.2, wait=0.0, tolerance=TOL)) == ["camera_info_late"]


def test_when_an_image_pairs_older_waiting_ones_are_superseded():
    p: StampPairer[str, str] = StampPairer()
    p.add_image(0, "old", now=0.0, wait=WAIT, tolerance=TOL)
    p.add_info(10 * MS, "info10", now=0.005, tolerance=TOL)  # resolves "old" by tolerance (10 ms away)
    p.add_info(30 * MS, "info30", now=0.006, tolerance=TOL)
    (r,) = p.add_image(30 * MS, "new", now=0.01, wait=WAIT, tolerance=TOL)
    assert r.image == "new"
    p2: StampPairer[str, str] = StampPairer()
    p2.add_image(0, "a", now=0.0, wait=WAIT, tolerance=TOL)
    p2.add_image(33 * MS, "b", now=0.033, wait=WAIT, tolerance=TOL)
    out = p2.add_info(33 * MS, "info33", now=0.04, tolerance=TOL)  # b's info came first (a's was lost)
    assert paired(out) == ["b"] and reasons(out) == ["superseded"] and p2.waiting == 0


def test_waiting_images_are_bounded():
    p: StampPairer[int, str] = StampPairer(max_pending=4)
    p.add_info(0, "info0", now=0.0, tolerance=TOL)
    out = []
    for i in range(1, 20):  # a driver that never publishes CameraInfo again, at 1 kHz
        out += p.add_image(i * MS, i, now=i * 0.001, wait=WAIT, tolerance=TOL)
        assert p.waiting <= 4
    assert len(out) == 15  # each one beyond the bound was resolved (by tolerance: 1..15 ms away)


def test_random_orders_and_jitter_never_lose_a_pair_within_the_wait():
    rng = random.Random(7)
    for period in (0.5, 0.2, 1 / 30):
        p: StampPairer[int, int] = StampPairer()
        events, last = [], {"info": 0.0, "image": 0.0}
        for i in range(200):
            t = i * period + rng.uniform(0, 0.2 * period)
            delay = rng.uniform(0, min(0.45, 3 * period))  # the CameraInfo within the wait, before or after
            first_info = rng.random() < 0.5
            for kind, when in (("info", t if first_info else t + delay), ("image", t + delay if first_info else t)):
                last[kind] = max(last[kind], when)  # each topic arrives in order (one DDS writer)
                events.append((last[kind], kind, i))
        got, lost = [], []
        for now, kind, i in sorted(events):
            stamp = int(i * period * 1e9)
            if kind == "info":
                out = p.add_info(stamp, i, now, TOL)
            else:
                out = p.add_image(stamp, i, now, WAIT, TOL)
            out += p.expire(now, WAIT, TOL)
            got += [(r.image, r.info, r.exact) for r in out if isinstance(r, Paired)]
            lost += [r.reason for r in out if isinstance(r, Unpaired) and r.reason != "superseded"]
        assert lost == []
        assert all(img == info and exact for img, info, exact in got)
        assert len(got) > 100  # most frames pair; the rest were superseded by a newer ready frame


def test_camera_infos_whose_image_never_comes_are_counted():
    p: StampPairer[str, str] = StampPairer()
    p.add_info(0, "i0", now=0.0, tolerance=TOL)
    p.add_image(0, "img0", now=0.01, wait=WAIT, tolerance=TOL)
    p.add_info(100 * MS, "i100", now=0.1, tolerance=TOL)  # its 36 MB image is lost in transport
    p.add_info(200 * MS, "i200", now=0.2, tolerance=TOL, watch=False)  # nobody subscribed: not expected
    p.expire(now=1.0, wait=WAIT, tolerance=TOL)
    assert p.stats.infos_without_image == 0  # not yet: it may still come
    p.expire(now=1.7, wait=WAIT, tolerance=TOL)
    assert p.stats.infos_without_image == 1
    p.expire(now=9.0, wait=WAIT, tolerance=TOL)
    assert p.stats.infos_without_image == 1  # counted once


def test_drivers_pairing_by_tolerance_do_not_count_missing_images():
    p: StampPairer[int, int] = StampPairer()
    for i in range(10):  # CameraInfo stamped 5 ms after its image, twice as often as the images
        p.add_image(i * 100 * MS, i, now=i * 0.1, wait=WAIT, tolerance=TOL)
        p.add_info(i * 100 * MS + 5 * MS, i, now=i * 0.1 + 0.001, tolerance=TOL)
        p.add_info(i * 100 * MS + 55 * MS, i, now=i * 0.1 + 0.05, tolerance=TOL)
        p.expire(now=i * 0.1 + 0.06, wait=WAIT, tolerance=TOL)
    p.expire(now=10.0, wait=WAIT, tolerance=TOL)
    assert p.stats.tolerance == 10 and p.stats.infos_without_image == 0
