#!/usr/bin/env python3
"""Developer check: full-size ZoeDepth (BEiT-L) vs transformers' ZoeDepthForDepthEstimation, same weights.

With --hf-folder it compares against an existing HF model folder (e.g. a local Intel/zoedepth-nyu-kitti);
otherwise it builds a full-size HF model with random non-degenerate weights. Prints max/mean differences of the
depth and routing logits at the official network size. Needs `transformers` (a test extra), not ROS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))


def random_hf_model(variant: str, seed: int):
    from model_fixtures import randomize_
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    nyu = {"name": "nyu", "n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}
    kitti = {"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": 80.0}
    backbone = BeitConfig(
        image_size=384,
        num_hidden_layers=24,
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        use_relative_position_bias=True,
        reshape_hidden_states=False,
        out_features=["stage6", "stage12", "stage18", "stage24"],
        layer_norm_eps=1e-6,
    )
    router = {
        "num_patch_transformer_layers": 4,
        "patch_transformer_hidden_size": 128,
        "patch_transformer_intermediate_size": 1024,
        "patch_transformer_num_attention_heads": 4,
    }
    config = ZoeDepthConfig(
        backbone_config=backbone,
        bin_configurations=[nyu, kitti] if variant == "nk" else [nyu],
        **(router if variant == "nk" else {}),
    )
    torch.manual_seed(seed)
    return randomize_(ZoeDepthForDepthEstimation(config), seed).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=["n", "nk"], default="nk")
    parser.add_argument("--hf-folder", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()

    from transformers import ZoeDepthForDepthEstimation

    from zoedepth_ros.model import load

    with tempfile.TemporaryDirectory() as tmp:
        if args.hf_folder:
            folder = args.hf_folder
            hf = ZoeDepthForDepthEstimation.from_pretrained(folder).eval()
        else:
            folder = Path(tmp)
            hf = random_hf_model(args.variant, seed=0)
            hf.save_pretrained(folder)
        ours = load(folder, device=args.device)
    hf = hf.to(args.device)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, args.height), torch.linspace(0, 1, args.width), indexing="ij")
    image = torch.stack([xs, ys, 0.5 + 0.5 * torch.sin(9 * xs * ys)])[None].to(args.device)
    size = ours.net_size_for(args.height, args.width)
    net_input = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=True)
    with torch.no_grad():
        t0 = time.perf_counter()
        expected = hf(pixel_values=(net_input - 0.5) / 0.5)
        t1 = time.perf_counter()
        got = ours(image)
        t2 = time.perf_counter()
    diff = (got.metric_depth[:, 0] - expected.predicted_depth).abs()
    print(
        f"variant {ours.config.variant}  net {size}  depth range {expected.predicted_depth.min():.4f}.."
        f"{expected.predicted_depth.max():.4f} m"
    )
    print(
        f"depth |diff| max {diff.max():.3e}  mean {diff.mean():.3e}  max rel "
        f"{(diff / expected.predicted_depth.abs().clamp_min(1e-6)).max():.3e}"
    )
    if got.head_logits is not None:
        print(f"domain logits |diff| max {(got.head_logits - expected.domain_logits).abs().max():.3e}  head {got.head}")
    print(f"time transformers {t1 - t0:.2f} s, zoedepth_ros {t2 - t1:.2f} s ({args.device}, fp32, one pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
