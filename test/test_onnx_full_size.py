"""The exported graph at full size (random ZoeD_NK weights in the official architecture, 640x480, the node's
defaults): onnxruntime on the CPU equals the torch model within 1e-4 m with the same routing, and a session with
onnxruntime's default options loads and runs within a few times the weights' size (the per-size attention bias is
data in the file, not a subgraph onnxruntime would fold at load time: tens of GB before). The slowest ONNX test
(about a minute and a half on 2 cores, 9 GB of memory at its peak)."""

from __future__ import annotations

import pytest
import torch

from zoedepth_ros.benchmarks.backends import session_memory
from zoedepth_ros.engine.accuracy import probe_images
from zoedepth_ros.engine.onnx.export import export_onnx
from zoedepth_ros.engine.onnx.graph import ExportSpec, StaticPredict
from zoedepth_ros.model import ZOED_NK, ZoeDepth

H, W = 480, 640


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_full_size_nk_graph_equals_torch_and_loads_in_bounded_memory(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (the test extra installs it)")
    pytest.importorskip("onnxscript", reason="exporting needs onnxscript (the test extra installs it)")
    torch.manual_seed(0)
    model = ZoeDepth(ZOED_NK).eval()
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    spec = ExportSpec(H, W, pad_input=True, flip_aug=False)
    path = tmp_path / "nk.onnx"
    result = export_onnx(model, spec, path, "test")
    assert result.external_data and path.with_name("nk.onnx.data").exists()  # over protobuf's 2 GB
    image = probe_images(H, W)[0]
    reference = StaticPredict(model, spec)(image)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    depth, heads, logits = session.run(None, {"image": image.numpy()})
    del session
    assert float((torch.from_numpy(depth) - reference[0]).abs().max()) <= 1e-4
    assert torch.equal(torch.from_numpy(heads), reference[1])
    torch.testing.assert_close(torch.from_numpy(logits), reference[2], rtol=1e-4, atol=1e-4)
    del model
    memory = session_memory(path, H, W)
    assert "error" not in memory, memory
    assert memory["session_peak_mb"] - memory["baseline_mb"] < 3 * weights_mb, memory
    assert memory["run_peak_mb"] - memory["baseline_mb"] < 4 * weights_mb, memory
