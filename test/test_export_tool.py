"""``zoedepth-ros-export`` on tiny random checkpoints: a verified export to a named file, the default file in the
node's cache under its ``GraphKey`` name, and the exit statuses (2 bad input, 1 no GPU for ``--engine``), each with
one ``error:`` line and no traceback."""

from __future__ import annotations

import hashlib
import re
import signal
from pathlib import Path

import pytest
import torch

from zoedepth_ros import weights as W
from zoedepth_ros.engine.onnx.cache import GraphKey
from zoedepth_ros.engine.onnx.graph import ExportSpec
from zoedepth_ros.tools.export import main

VERIFY_RE = re.compile(r"verify: max \|onnxruntime - torch\| (\S+) m, routing identical$", re.MULTILINE)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache, no download mirror, and main's SIGTERM handler undone afterwards."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(W.CACHE_ENV, str(folder))
    monkeypatch.delenv(W.BASE_URL_ENV, raising=False)
    previous = signal.getsignal(signal.SIGTERM)
    yield folder
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def exporter():
    pytest.importorskip("onnxruntime")
    from zoedepth_ros.engine.onnx.export import ExportError, check_exporter

    try:
        check_exporter()
    except ExportError as e:
        pytest.skip(str(e))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def test_export_to_a_file_and_verify(exporter, tiny_checkpoint, tmp_path, capsys):
    ckpt = tiny_checkpoint("nk")
    out = tmp_path / "models" / "zoe_nk_320x240.onnx"
    status = main(["--checkpoint", str(ckpt), "--size", "320x240", "--output", str(out), "--verify"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.strip().splitlines() == [str(out)]
    assert out.is_file() and not out.with_name(out.name + ".data").exists()
    assert "Traceback" not in captured.err and not error_lines(captured.err)
    match = VERIFY_RE.search(captured.err)
    assert match, captured.err
    assert float(match[1]) <= 1e-4
    meta = metadata(out)
    assert meta["zoedepth_ros.variant"] == "nk"
    assert meta["zoedepth_ros.checkpoint_sha256"] == sha256(ckpt)
    assert meta["zoedepth_ros.image_size"] == "320x240"
    assert (meta["zoedepth_ros.batch"], meta["zoedepth_ros.pad_input"], meta["zoedepth_ros.flip_aug"]) == (
        "1",
        "true",  # the node's defaults: padded, no flip
        "false",
    )
    assert (meta["zoedepth_ros.routing"], meta["zoedepth_ros.precision"]) == ("auto", "fp32")
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # nothing temporary left beside it


def test_default_output_is_the_node_cache(exporter, tiny_checkpoint, private_cache, capsys):
    import onnxruntime as ort

    ckpt = tiny_checkpoint("nk")
    status = main(["--checkpoint", str(ckpt), "--size", "320x240", "--batch", "2", "--no-pad", "--flip"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    spec = ExportSpec(240, 320, batch=2, pad_input=False, flip_aug=True)
    expected = private_cache / "onnx" / GraphKey.of("nk", sha256(ckpt), spec).filename()
    assert re.fullmatch(r"nk_320x240_b2_nopad_flip_auto_fp32_[0-9a-f]{16}\.onnx", expected.name)
    assert captured.out.strip().splitlines() == [str(expected)]
    assert sorted((private_cache / "onnx").iterdir()) == [expected]
    session = ort.InferenceSession(str(expected), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", [2, 3, 240, 320])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("depth", [2, 1, 240, 320]),
        ("head", [2, 2]),
        ("head_logits", [2, 2, 2]),
    ]


@pytest.mark.parametrize(
    ("args", "checkpoint", "match"),
    [
        (["--size", "0x5"], "nk", "argument --size: expected WIDTHxHEIGHT"),
        (["--size", "640x480", "--batch", "0"], "nk", "argument --batch: expected a batch size"),
        (["--size", "4x480"], "nk", "too small for reflect padding"),
        (["--size", "10000x1", "--no-pad"], "nk", "too elongated"),
        (["--size", "640x480", "--routing", "indoor"], "k", "--routing indoor needs an NK checkpoint"),
        (["--size", "640x480"], "missing", "checkpoint file not found"),
        (["--size", "640x480", "--engine", "--output", "x.onnx"], "nk", "--engine builds into the node's cache"),
    ],
    ids=["size", "batch", "padding", "elongated", "routing-k", "missing-checkpoint", "engine-output"],
)
def test_bad_input_exits_2(args, checkpoint, match, tiny_checkpoint, private_cache, tmp_path, capsys):
    path = tmp_path / "missing.pt" if checkpoint == "missing" else tiny_checkpoint(checkpoint)
    status = main([*args, "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(error_lines(err)) == 1, err
    assert match in error_lines(err)[0]
    assert "Traceback" not in err
    assert not (private_cache / "onnx").exists()  # nothing exported
    assert not (Path.cwd() / "x.onnx").exists()


def test_engine_without_a_gpu_exits_1_before_exporting(exporter, tiny_checkpoint, private_cache, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --engine would build")
    status = main(["--checkpoint", str(tiny_checkpoint("nk")), "--size", "320x240", "--engine"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and "--engine needs a CUDA GPU" in lines[0], err
    assert not (private_cache / "onnx").exists()  # told at once, not after minutes of exporting
