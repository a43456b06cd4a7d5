"""The project's speed targets, checked against a benchmark report (never by timed tests).

The GPU targets are defined for one H100 with ZoeD_NK; elsewhere they are reported as "not applicable" with the
measured figure, so a CPU run or a smaller model cannot look like a pass or a fail.
"""

from __future__ import annotations

from typing import Any

from .model_latency import NET_SIZE, best_row

MODEL_LATENCY_MS = 6.0
SPEEDUP_VS_OFFICIAL = 8.0
E2E_P50_MS = 12.0
E2E_P99_MS = 20.0
E2E_RATE_HZ = 60.0
HOST_TOTAL_MS = 3.0
CLOUD_PACK_MS = 3.0  # 640x480 xyzrgb on one CPU core: measurable anywhere
BAG_OVERHEAD = 0.10  # zoedepth-ros-bag's time over the model-only time for the same frames, same run
FLEET_OVERHEAD = 0.10  # zoedepth-ros-fleet (1 worker) over zoedepth-ros-bag run on each bag in turn, start-up included


def _target(name: str, limit: str, measured: float | None, passed: bool | None, applies: bool, note: str = ""):
    return {
        "target": name,
        "limit": limit,
        "measured": measured,
        "passed": passed if applies and measured is not None else None,
        "note": note if applies else (note or "target defined for one H100 with ZoeD_NK"),
    }


def check(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured figure and verdict (None when not measured or not applicable)."""
    env = report["environment"]
    gpu_target = "H100" in env.get("device_name", "") and env.get("variant") == "nk" and not env.get("tiny")
    out = []
    rows = report.get("model", {}).get("rows", [])
    best = best_row(rows, *NET_SIZE, "network") if rows else None
    latency = best["latency"]["p50_ms"] if best else None
    out.append(
        _target(
            "model latency, 384x512, batch 1 (best guarded mode)",
            f"<= {MODEL_LATENCY_MS} ms",
            latency,
            latency is not None and latency <= MODEL_LATENCY_MS,
            gpu_target,
            f"{best['precision']} {best['mode']}" if best else "not measured",
        )
    )
    paths = {(p["height"], p["width"]): p for p in report.get("paths", {}).get("sizes", [])}
    vga = paths.get((480, 640))
    speedup = vga["speedup"].get("official_defaults_fp32") if vga else None
    out.append(
        _target(
            "speed-up vs eager fp32 official defaults (pad + flip), 640x480",
            f">= {SPEEDUP_VS_OFFICIAL}x",
            speedup,
            speedup is not None and speedup >= SPEEDUP_VS_OFFICIAL,
            gpu_target,
        )
    )
    e2e = report.get("end_to_end", {})
    depth = e2e.get("depth", {}) if "skipped" not in e2e and "error" not in e2e else {}
    p50, p99 = depth.get("p50_ms"), depth.get("p99_ms")
    e2e_gpu = gpu_target and e2e.get("width") == 640 and e2e.get("rate_hz", 0) >= E2E_RATE_HZ
    out.append(
        _target(
            "node end to end p50, 640x480", f"<= {E2E_P50_MS} ms", p50, p50 is not None and p50 <= E2E_P50_MS, e2e_gpu
        )
    )
    out.append(
        _target(
            "node end to end p99, 640x480", f"<= {E2E_P99_MS} ms", p99, p99 is not None and p99 <= E2E_P99_MS, e2e_gpu
        )
    )
    other = sum((e2e.get("dropped", {}).get("other") or {}).values()) if depth else None
    rate = depth.get("rate_hz")
    holds = rate is not None and rate >= 0.95 * e2e.get("rate_hz", 0) and other == 0
    out.append(
        _target(
            "holds a 60 Hz camera; drops only by the latest-frame rule",
            f">= {E2E_RATE_HZ} Hz",
            rate,
            holds,
            e2e_gpu,
            f"other drops: {other}" if other is not None else "not measured",
        )
    )
    host = report.get("host", {}).get("sizes", {}).get("640x480", {})
    totals = host.get("total_ms") or {}
    for kind, where in (("xyz_gpu_cloud", "cloud packed on the GPU"), ("xyz", "cloud packed on the CPU")):
        total = totals.get(kind)
        out.append(
            _target(
                f"host-side work per frame, 640x480 xyz, {where}",
                f"<= {HOST_TOTAL_MS} ms",
                total,
                total is not None and total <= HOST_TOTAL_MS,
                True,
                "measured on this machine's CPU",
            )
        )
    pack = host.get("cloud", {}).get("xyzrgb", {}).get("pack", {}).get("p50_ms")
    out.append(
        _target(
            "cloud packing 640x480 xyzrgb, one CPU core",
            f"<= {CLOUD_PACK_MS} ms",
            pack,
            pack is not None and pack <= CLOUD_PACK_MS,
            True,
            "measured on this machine's CPU",
        )
    )
    bag = report.get("bag")
    if bag:  # only when the bag section ran (it is not in every report)
        share = bag["overhead_share"]
        out.append(
            _target(
                "zoedepth-ros-bag overhead over model-only time (read, decode, pair, write), %",
                f"<= {100 * BAG_OVERHEAD:g}",
                round(100 * share, 2),
                share <= BAG_OVERHEAD,
                not env.get("tiny"),
                f"{bag['width']}x{bag['height']}, batch {bag['batch']}, {bag['rung']}",
            )
        )
    fleet = report.get("fleet")
    if fleet and "fleet_overhead_share" in fleet:
        share = fleet["fleet_overhead_share"]
        out.append(
            _target(
                "zoedepth-ros-fleet, 1 worker, time over zoedepth-ros-bag on each bag in turn (start-up included), %",
                f"<= {100 * FLEET_OVERHEAD:g}",
                round(100 * share, 2),
                share <= FLEET_OVERHEAD,
                not env.get("tiny"),
                f"{fleet['bags']} bags x {fleet['frames_per_bag']} frames, {fleet['width']}x{fleet['height']}",
            )
        )
    return out
