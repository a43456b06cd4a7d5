"""Tests of zoedepth_ros.evaluation (hand-computed metric values) and the zoedepth-ros-eval command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from zoedepth_ros.evaluation import (
    METRIC_NAMES,
    DepthMetrics,
    aggregate,
    compute_metrics,
    crop_mask,
    format_table,
)
from zoedepth_ros.tools.evaluate import main

LN2 = math.log(2.0)
LN125 = math.log(1.25)


def _row(values: list[float]) -> np.ndarray:
    return np.array([values], dtype=np.float64)


# --------------------------------------------------------------------------------------------- metrics


def test_hand_computed_example() -> None:
    # gt = [1, 2, 4], pred = [1, 1, 5]: errors 0, 1, 1; ratios max(d/p, p/d) = 1, 2, 1.25.
    m = compute_metrics(_row([1, 1, 5]), _row([1, 2, 4]))
    assert m.n_valid == 3 and m.n_nonfinite == 0 and m.n_images == 1
    assert m.abs_rel == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert m.sq_rel == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert m.rmse == pytest.approx(math.sqrt((0 + 1 + 1) / 3))
    assert m.rmse_log == pytest.approx(math.sqrt((0 + LN2**2 + LN125**2) / 3))
    assert m.log10 == pytest.approx((0 + math.log10(2) + math.log10(1.25)) / 3)
    # e = ln p - ln d = [0, -ln 2, ln 1.25]
    mean_e2 = (0 + LN2**2 + LN125**2) / 3
    mean_e = (0 - LN2 + LN125) / 3
    assert m.silog == pytest.approx(100 * math.sqrt(mean_e2 - mean_e**2))
    assert m.silog == pytest.approx(39.0133, abs=1e-4)
    # delta thresholds 1.25, 1.5625, 1.953125 (strict): ratio 1.25 only passes from delta2 on, 2 never
    assert m.delta1 == pytest.approx(1 / 3)
    assert m.delta2 == pytest.approx(2 / 3)
    assert m.delta3 == pytest.approx(2 / 3)


def test_second_hand_computed_example() -> None:
    # gt = [2, 4], pred = [3, 2]: |d-p| = 1, 2; ratios 1.5, 2.
    m = compute_metrics(_row([3, 2]), _row([2, 4]))
    assert m.abs_rel == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m.sq_rel == pytest.approx((1 / 2 + 4 / 4) / 2)
    assert m.rmse == pytest.approx(math.sqrt((1 + 4) / 2))
    e = [math.log(1.5), math.log(0.5)]
    assert m.rmse_log == pytest.approx(math.sqrt((e[0] ** 2 + e[1] ** 2) / 2))
    assert m.log10 == pytest.approx((math.log10(1.5) + math.log10(2)) / 2)
    assert m.silog == pytest.approx(100 * math.sqrt((e[0] ** 2 + e[1] ** 2) / 2 - ((e[0] + e[1]) / 2) ** 2))
    assert (m.delta1, m.delta2, m.delta3) == pytest.approx((0.0, 1 / 2, 1 / 2))


def test_perfect_and_scaled_predictions() -> None:
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    perfect = compute_metrics(gt.copy(), gt)
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert getattr(perfect, name) == 0.0
    assert (perfect.delta1, perfect.delta2, perfect.delta3) == (1.0, 1.0, 1.0)
    # a global scale error is invisible to SILog (exactly 0, never NaN from rounding), visible elsewhere
    doubled = compute_metrics(2 * gt, gt)
    assert doubled.silog == pytest.approx(0.0, abs=1e-6)
    assert doubled.abs_rel == pytest.approx(1.0)
    assert doubled.rmse_log == pytest.approx(LN2)
    # ratio 2 fails even the widest threshold 1.25^3 = 1.953125; ratio 1.5 passes from 1.25^2 = 1.5625 on
    assert (doubled.delta1, doubled.delta2, doubled.delta3) == (0.0, 0.0, 0.0)
    one_and_half = compute_metrics(1.5 * gt, gt)
    assert (one_and_half.delta1, one_and_half.delta2, one_and_half.delta3) == (0.0, 1.0, 1.0)


def test_torch_and_batched_shapes_accepted() -> None:
    gt = torch.tensor([[1.0, 2.0, 4.0]])
    pred = torch.tensor([[1.0, 1.0, 5.0]]).view(1, 1, 1, 3)  # model.infer output layout
    m = compute_metrics(pred, gt[None])
    assert m.abs_rel == pytest.approx(0.25)
    assert m.n_valid == 3


def test_masking_by_depth_range_and_finiteness() -> None:
    # only the last two pixels are valid: 0 (missing), 0.0005 < min, 11 > max 10, 10 == max, NaN, inf
    gt = _row([0.0, 0.0005, 11.0, 10.0, math.nan, math.inf, 2.0, 4.0])
    pred = _row([50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 1.0, 5.0])
    m = compute_metrics(pred, gt)
    assert m.n_valid == 2
    assert m.abs_rel == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert m.rmse == pytest.approx(1.0)
    # a larger max_depth admits 11 and 10 (prediction 50 clipped to 20): |11-20|/11, |10-20|/10
    wide = compute_metrics(pred, gt, max_depth=20.0)
    assert wide.n_valid == 4
    assert wide.abs_rel == pytest.approx((9 / 11 + 10 / 10 + 1 / 2 + 1 / 4) / 4)
    # KITTI default max depth is 80
    assert compute_metrics(pred, gt, dataset="kitti").n_valid == 4


def test_prediction_clipped_to_range() -> None:
    # pred 20 -> 10 (max), pred 0 -> 0.001 (min); gt 8 and 0.5
    m = compute_metrics(_row([20.0, 0.0]), _row([8.0, 0.5]))
    assert m.abs_rel == pytest.approx((2 / 8 + (0.5 - 0.001) / 0.5) / 2)
    assert math.isfinite(m.rmse_log) and math.isfinite(m.log10)
    assert m.rmse == pytest.approx(math.sqrt((2**2 + 0.499**2) / 2))


def test_nonfinite_predictions_are_excluded_and_counted() -> None:
    gt = _row([1.0, 2.0, 4.0, 0.0])
    pred = _row([1.0, math.nan, math.inf, math.nan])  # the last NaN sits on invalid gt: not counted
    m = compute_metrics(pred, gt)
    assert m.n_valid == 1 and m.n_nonfinite == 2
    assert m.abs_rel == 0.0
    assert aggregate([m, m]).n_nonfinite == 4


def test_prediction_resized_bilinear_align_corners_false() -> None:
    # [1, 3] -> width 4: sample positions -0.25, 0.25, 0.75, 1.25 -> (clamped) 1, 1.5, 2.5, 3
    m = compute_metrics(_row([1.0, 3.0]), _row([1.0, 1.5, 2.5, 3.0]))
    assert m.abs_rel == pytest.approx(0.0, abs=1e-12)
    assert m.n_valid == 4
    # constant prediction of another size stays constant
    m2 = compute_metrics(np.full((2, 3), 2.0), np.full((5, 7), 4.0))
    assert m2.abs_rel == pytest.approx(0.5) and m2.n_valid == 35


def test_zero_valid_pixels_gives_nan_and_count_zero() -> None:
    m = compute_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    assert m.is_empty and m.n_valid == 0 and m.n_images == 0
    assert all(math.isnan(getattr(m, n)) for n in METRIC_NAMES)


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.ones((2, 3, 4)), np.ones((3, 4)), {}, "2-D"),
        (np.ones((3, 4)), np.ones((2, 3, 4)), {}, "2-D"),
        (np.ones(5), np.ones((1, 5)), {}, "2-D"),
        (np.ones((0, 4)), np.ones((3, 4)), {}, "empty"),
        (np.ones((3, 4)), np.ones((3, 4)), {"min_depth": 5.0, "max_depth": 1.0}, "min_depth"),
        (np.ones((3, 4)), np.ones((3, 4)), {"min_depth": -1.0}, "min_depth"),
        (np.ones((3, 4)), np.ones((3, 4)), {"crop": "both"}, "crop"),
        (np.ones((3, 4)), np.ones((3, 4)), {"dataset": "sunrgbd"}, "dataset"),
        (np.ones((3, 4)), np.ones((3, 4)), {"crop": "eigen"}, "480x640"),
        ("abc", np.ones((3, 4)), {}, "numeric"),
    ],
)
def test_bad_input_raises(pred, gt, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(pred, gt, **kwargs)


# ----------------------------------------------------------------------------------------------- crops


def test_garg_crop_region() -> None:
    # 100x100: rows int(40.81)=40 : int(99.19)=99, cols int(3.59)=3 : int(96.41)=96
    mask = crop_mask((100, 100), "garg")
    expected = np.zeros((100, 100), bool)
    expected[40:99, 3:96] = True
    np.testing.assert_array_equal(mask, expected)
    assert np.array_equal(crop_mask((100, 100), "garg", "kitti"), mask)  # same for both datasets
    # KITTI raw size 375x1242: rows 153:371, cols 44:1197
    kitti = crop_mask((375, 1242), "garg", "kitti")
    assert kitti.sum() == (371 - 153) * (1197 - 44)
    assert kitti[153, 44] and kitti[370, 1196] and not kitti[152, 44] and not kitti[371, 44]
    assert not kitti[153, 43] and not kitti[153, 1197]


def test_eigen_crop_kitti_and_nyu() -> None:
    # KITTI flavour on 100x100: rows int(33.24)=33 : int(91.35)=91, cols 3:96
    expected = np.zeros((100, 100), bool)
    expected[33:91, 3:96] = True
    np.testing.assert_array_equal(crop_mask((100, 100), "eigen", "kitti"), expected)
    # NYU flavour: fixed rows 45:471, cols 41:601 on 480x640
    nyu = crop_mask((480, 640), "eigen", "nyu")
    assert nyu.sum() == 426 * 560
    assert nyu[45, 41] and nyu[470, 600] and not nyu[44, 41] and not nyu[471, 41] and not nyu[45, 601]
    with pytest.raises(ValueError, match="480x640"):
        crop_mask((481, 640), "eigen", "nyu")
    assert crop_mask((3, 4), None).all()


def test_crop_changes_which_pixels_are_scored() -> None:
    gt = np.full((480, 640), 2.0)
    pred = np.full((480, 640), 4.0)
    pred[45:471, 41:601] = 2.0  # perfect inside the NYU Eigen crop, 100% off outside
    inside = compute_metrics(pred, gt, crop="eigen")
    assert inside.abs_rel == 0.0 and inside.n_valid == 426 * 560
    whole = compute_metrics(pred, gt)
    outside = 480 * 640 - 426 * 560
    assert whole.abs_rel == pytest.approx(outside / (480 * 640))
    # Garg on a small image: only rows 40:99, cols 3:96 of 100x100 count
    gt_small = np.full((100, 100), 1.0)
    pred_small = np.full((100, 100), 3.0)
    pred_small[40:99, 3:96] = 1.0
    assert compute_metrics(pred_small, gt_small, crop="garg").abs_rel == 0.0
    assert compute_metrics(pred_small, gt_small, crop="garg").n_valid == 59 * 93


# ---------------------------------------------------------------------------------------- aggregation


def test_per_image_mean_differs_from_pixel_pooling() -> None:
    # image A: one pixel, gt 1, pred 2 -> REL 1; image B: three perfect pixels -> REL 0
    a = compute_metrics(_row([2.0]), _row([1.0]))
    b = compute_metrics(_row([1.0, 1.0, 1.0]), _row([1.0, 1.0, 1.0]))
    mean = aggregate([a, b])
    assert mean.abs_rel == pytest.approx((1 + 0) / 2)  # per image, then over images (ZoeDepth)
    assert mean.delta1 == pytest.approx((0 + 1) / 2)
    assert mean.n_valid == 4 and mean.n_images == 2
    pooled = compute_metrics(_row([2.0, 1.0, 1.0, 1.0]), _row([1.0, 1.0, 1.0, 1.0]))
    assert pooled.abs_rel == pytest.approx(1 / 4)  # all pixels pooled: a different number
    assert pooled.delta1 == pytest.approx(3 / 4)


def test_aggregate_skips_empty_and_rejects_nothing() -> None:
    a = compute_metrics(_row([1.0, 1.0, 5.0]), _row([1.0, 2.0, 4.0]))
    empty = compute_metrics(np.ones((1, 2)), np.zeros((1, 2)))
    mean = aggregate([a, empty])
    assert mean.abs_rel == pytest.approx(0.25) and mean.n_images == 1
    # means of means weigh by n_images
    assert aggregate([aggregate([a, a]), compute_metrics(_row([1.0]), _row([1.0]))]).abs_rel == pytest.approx(
        (0.25 + 0.25 + 0) / 3
    )
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    with pytest.raises(ValueError, match="valid"):
        aggregate([empty, empty])


def test_as_dict_and_table() -> None:
    a = compute_metrics(_row([1.0, 1.0, 5.0]), _row([1.0, 2.0, 4.0]))
    d = a.as_dict()
    assert set(METRIC_NAMES) <= set(d) and d["n_valid"] == 3 and d["abs_rel"] == pytest.approx(0.25)
    assert isinstance(a, DepthMetrics)
    with pytest.raises(AttributeError):
        a.abs_rel = 0.0  # type: ignore[misc]  # frozen
    table = format_table([("img_000", a), ("mean", aggregate([a]))])
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # aligned
    assert lines[0].split("|")[1].strip() == "name" and "REL" in lines[0] and "SILog" in lines[0]
    assert set(lines[1]) <= {"|", "-", ":"}
    assert "0.2500" in lines[2] and "39.0133" in lines[2] and lines[3].startswith("| mean")
    empty = compute_metrics(np.ones((1, 2)), np.zeros((1, 2)))
    assert "nan" in format_table({"e": empty})


# ------------------------------------------------------------------------------------------------ CLI


def _write_pair(
    folder: Path, stem: str, rgb: np.ndarray, depth_m: np.ndarray, kind: str = "png", scale: float = 1000.0
) -> None:
    Image.fromarray(rgb).save(folder / f"{stem}.png")
    if kind == "png":
        Image.fromarray(np.round(depth_m * scale).astype(np.uint16)).save(folder / f"{stem}_depth.png")
    else:
        np.save(folder / f"{stem}_depth.npy", depth_m.astype(np.float32))


def _synthetic_folder(folder: Path, h: int = 48, w: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    depths = {}
    for i, kind in enumerate(("png", "npy")):
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        depth = np.linspace(0.5, 6.0, h * w).reshape(h, w) + i
        depth[0, :5] = 0.0  # missing measurements
        _write_pair(folder, f"img_{i:03d}", rgb, depth, kind)
        depths[f"img_{i:03d}"] = depth
    return depths


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = str(tmp_path / "none.pt")
    assert main(["--checkpoint", ck, "--data", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data folder not found" in err and "Traceback" not in err

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "lonely.png").write_bytes(b"")
    assert main(["--checkpoint", ck, "--data", str(empty)]) == 1
    assert "no <stem>" in capsys.readouterr().err

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    np.save(bad / "a_depth.npy", np.ones((4, 4), np.float32))
    assert main(["--checkpoint", ck, "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "cannot read RGB image" in err and err.count("\n") == 1

    mism = tmp_path / "mismatch"
    mism.mkdir()
    _write_pair(mism, "a", np.zeros((8, 10, 3), np.uint8), np.ones((8, 12)))
    assert main(["--checkpoint", ck, "--data", str(mism)]) == 1
    err = capsys.readouterr().err
    assert "size mismatch for a" in err and err.count("\n") == 1

    amb = tmp_path / "ambiguous"
    amb.mkdir()
    _write_pair(amb, "a", np.zeros((8, 10, 3), np.uint8), np.ones((8, 10)))
    np.save(amb / "a_depth.npy", np.ones((8, 10), np.float32))
    assert main(["--checkpoint", ck, "--data", str(amb)]) == 1
    assert "ambiguous" in capsys.readouterr().err

    assert main(["--checkpoint", ck, "--data", str(amb), "--limit", "0"]) == 1
    assert "--limit" in capsys.readouterr().err
    assert main(["--checkpoint", ck, "--data", str(amb), "--min-depth", "5", "--max-depth", "1"]) == 1
    assert "--min-depth" in capsys.readouterr().err
    assert main(["--data", str(amb)]) == 2  # argparse usage error: --checkpoint is required
    assert main(["--help"]) == 0
    assert "<stem>_depth.png" in capsys.readouterr().out


def test_cli_imports_no_ros_timm_torchvision() -> None:
    code = (
        "import sys, zoedepth_ros.tools.evaluate as e; e.build_parser();"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'timm', 'torchvision', 'cv2')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class _FakeModel:
    """Stands in for ZoeDepth: records the infer arguments, predicts 2 m everywhere."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(variant="nk")
        self.calls: list[tuple[tuple[int, ...], bool, bool, str | None]] = []

    def infer(
        self, x: torch.Tensor, pad_input: bool = True, flip_aug: bool = True, head: str | None = None
    ) -> torch.Tensor:
        assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        self.calls.append((tuple(x.shape), pad_input, flip_aug, head))
        return torch.full((x.shape[0], 1, x.shape[2], x.shape[3]), 2.0)


def test_cli_with_fake_model_passes_flags_and_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import zoedepth_ros.model as model_pkg

    depths = _synthetic_folder(tmp_path / "data")
    (tmp_path / "data" / "no_gt.jpg").write_bytes(b"")  # RGB without depth: skipped with a warning
    fake = _FakeModel()
    seen: dict[str, object] = {}

    def fake_load(source, variant=None, device="cpu", dtype=torch.float32):
        seen.update(source=source, device=device, dtype=dtype)
        return fake

    monkeypatch.setattr(model_pkg, "load", fake_load)
    out_json = tmp_path / "out" / "r.json"
    rc = main(
        [
            "--checkpoint",
            "ck.pt",
            "--data",
            str(tmp_path / "data"),
            "--crop",
            "none",
            "--no-pad",
            "--no-flip",
            "--domain",
            "kitti",
            "--device",
            "cpu",
            "--json",
            str(out_json),
            "--per-image",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "1 RGB image(s) without ground truth" in captured.err
    assert seen == {"source": "ck.pt", "device": "cpu", "dtype": torch.float32}
    assert fake.calls == [((1, 3, 48, 64), False, False, "kitti")] * 2
    assert "evaluated 2 image(s)" in captured.out
    assert "| img_000" in captured.out and "| img_001" in captured.out and "| mean" in captured.out
    report = json.loads(out_json.read_text())
    assert report["settings"]["crop"] is None and report["settings"]["domain"] == "kitti"
    # expected: a 2 m prediction against the ground truth as stored (PNG rounded to millimetres)
    gt0 = np.round(depths["img_000"] * 1000) / 1000
    gt1 = depths["img_001"].astype(np.float32)
    expected = [compute_metrics(np.full((48, 64), 2.0), gt) for gt in (gt0, gt1)]
    for entry, exp in zip(report["per_image"], expected, strict=True):
        for key, value in exp.as_dict().items():
            assert entry[key] == pytest.approx(value), key
    for key, value in aggregate(expected).as_dict().items():
        assert report["mean"][key] == pytest.approx(value), key
    assert report["per_image"][0]["n_valid"] == 48 * 64 - 5  # the five zero pixels are missing gt

    # defaults: nyu eigen crop does not fit 48x64 -> one clear line; kitti garg crop works; limit 1
    fake.calls.clear()
    assert main(["--checkpoint", "ck.pt", "--data", str(tmp_path / "data")]) == 1
    assert "480x640" in capsys.readouterr().err
    assert (
        main(
            [
                "--checkpoint",
                "ck.pt",
                "--data",
                str(tmp_path / "data"),
                "--dataset",
                "kitti",
                "--depth-scale",
                "1000",
                "--limit",
                "1",
            ]
        )
        == 0
    )
    assert "crop garg" in capsys.readouterr().out
    assert fake.calls[-1] == ((1, 3, 48, 64), True, True, None)
    # forcing a head the model lacks fails before any inference
    fake.heads = ("nyu",)
    fake.calls.clear()
    assert main(["--checkpoint", "ck.pt", "--data", str(tmp_path / "data"), "--crop", "none", "--domain", "kitti"]) == 1
    assert "only has the nyu head" in capsys.readouterr().err and not fake.calls


def test_cli_end_to_end_with_tiny_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoedepth_ros.model import ZoeDepth, official_state_dict, tiny_config

    torch.manual_seed(0)
    model = ZoeDepth(tiny_config("nk")).eval()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(model), "optimizer": None, "epoch": 0}, ckpt)
    data = tmp_path / "data"
    _synthetic_folder(data)
    out_json = tmp_path / "results.json"
    rc = main(
        [
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--crop",
            "none",
            "--no-flip",
            "--device",
            "cpu",
            "--json",
            str(out_json),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "evaluated 2 image(s)" in captured.out and "variant nk" in captured.out
    assert "| mean" in captured.out and "SILog" in captured.out

    expected = []
    for stem, depth_file in (("img_000", "img_000_depth.png"), ("img_001", "img_001_depth.npy")):
        rgb = np.array(Image.open(data / f"{stem}.png").convert("RGB"))
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            pred = model.infer(x, pad_input=True, flip_aug=False)
        assert pred.shape == (1, 1, 48, 64)
        path = data / depth_file
        gt = np.load(path) if path.suffix == ".npy" else np.array(Image.open(path)) / 1000.0
        expected.append(compute_metrics(pred, gt))
    report = json.loads(out_json.read_text())
    assert [e["name"] for e in report["per_image"]] == ["img_000", "img_001"]
    for entry, exp in zip(report["per_image"], expected, strict=True):
        for key, value in exp.as_dict().items():
            assert entry[key] == pytest.approx(value, rel=1e-5), key
    for key, value in aggregate(expected).as_dict().items():
        assert report["mean"][key] == pytest.approx(value, rel=1e-5), key
