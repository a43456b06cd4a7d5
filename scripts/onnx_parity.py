#!/usr/bin/env python3
"""Full-size parity of the exported graph: onnxruntime (CPU) against the project's ``predict`` (torch, fused).

Random full-size ZoeD_N / ZoeD_K / ZoeD_NK weights in the official layout (the same graph as the release
weights), at camera sizes with and without padding and flip, batch 1 and a batch of two images the NK router
sends to different heads. Prints one JSON line per case: max |depth difference| in metres, the deepest depth,
and whether the routing is identical. Slow (each export ~30-60 s on 2 cores, plus the runs): a measurement for
README, not a test. Usage: python scripts/onnx_parity.py [--variants nk,n,k] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from zoedepth_ros.engine.accuracy import probe_images
from zoedepth_ros.engine.onnx.export import export_onnx, remove_export
from zoedepth_ros.engine.onnx.graph import ExportSpec, StaticPredict
from zoedepth_ros.model import PRESETS, ZoeDepth

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from model_fixtures import randomize_  # non-degenerate weights: layer scale, biases, bias tables

CASES = [  # (height, width, batch, pad, flip)
    (480, 640, 1, True, False),
    (480, 640, 1, True, True),
    (720, 1280, 1, True, False),
    (640, 480, 1, False, True),  # portrait
    (640, 480, 1, True, False),
    (480, 640, 2, False, False),  # a batch: NK with two images routed to different heads when found
]


def images(height: int, width: int, batch: int, model: ZoeDepth) -> tuple[torch.Tensor, bool]:
    """A batch from the probe scenes (and flipped / inverted ones); for NK, two the router splits if any."""
    scenes = probe_images(height, width)
    pool = scenes + [1 - s for s in scenes] + [s.flip(2) for s in scenes]
    if batch == 1:
        return pool[0], False
    if model.config.router is None:
        return torch.cat(pool[:batch]), False
    heads = [int(model.predict(x, pad_input=False, flip_aug=False).head_indices[0, 0]) for x in pool]
    for i in range(len(pool)):
        for j in range(i + 1, len(pool)):
            if heads[i] != heads[j]:
                return torch.cat([pool[i], pool[j], *pool[: batch - 2]]), True
    return torch.cat(pool[:batch]), False


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", default="nk,n,k")
    p.add_argument("--json", type=Path)
    p.add_argument("--randomize", action="store_true", help="the tests' non-degenerate random weights, not init's")
    p.add_argument("--cases", default=",".join(map(str, range(len(CASES)))), help="indices into CASES")
    args = p.parse_args()
    out = open(args.json, "a") if args.json else None
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        model = ZoeDepth(PRESETS[variant]).eval()
        if args.randomize:
            randomize_(model, seed=0)
        for h, w, b, pad, flip in [CASES[int(i)] for i in args.cases.split(",")]:
            spec = ExportSpec(h, w, b, pad, flip)
            x, mixed = images(h, w, b, model)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.onnx"
                t0 = time.monotonic()
                export_onnx(model, spec, path, "parity")
                t_export = time.monotonic() - t0
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = session.run(None, {"image": x.numpy()})
                del session
                remove_export(path)
            ref = StaticPredict(model, spec)(x)
            diff = float((torch.from_numpy(got[0]) - ref[0]).abs().max())
            row = {
                "variant": variant,
                "size": f"{w}x{h}",
                "batch": b,
                "pad": pad,
                "flip": flip,
                "mixed_routing": mixed,
                "max_abs_diff_m": diff,
                "deepest_m": float(ref[0].max()),
                "routing_identical": bool((torch.from_numpy(got[1]) == ref[1]).all()),
                "heads": got[1].tolist(),
                "export_s": round(t_export, 1),
            }
            print(json.dumps(row), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
