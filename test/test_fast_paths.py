"""Speed features of the model: on-device routing, fp32 islands, the cached attention bias, execution modes."""

from __future__ import annotations

import copy

import pytest
import torch
from model_fixtures import tiny_model

from zoedepth_ros.engine.runtime import DepthRunner
from zoedepth_ros.model import precision_of, set_precision
from zoedepth_ros.model.backbone import MASK_ALIGNMENT, Attention


def steer(model, logits_bias):
    with torch.no_grad():
        model.mlp_classifier[2].bias.copy_(torch.tensor(logits_bias))


# ---------------------------------------------------------------- on-device routing


@pytest.mark.parametrize("bias, head", [([30.0, -30.0], "nyu"), ([-30.0, 30.0], "kitti")])
def test_routing_on_the_device_selects_the_same_depth_as_host_routing(rgb, bias, head):
    model = tiny_model("nk", seed=2)
    steer(model, bias)
    host = model(rgb)
    device = model(rgb, route_on_device=True)
    assert host.head == head and device.head is None
    assert model.heads[int(device.head_index[0])] == head
    assert torch.equal(device.metric_depth, host.metric_depth)  # the chosen head's values, bit for bit
    other = model(rgb, head="kitti" if head == "nyu" else "nyu").metric_depth
    assert not torch.allclose(other, host.metric_depth)  # the selection mattered


def test_predict_reports_routing_per_pass_without_reading_it_on_the_host(rgb):
    model = tiny_model("nk", seed=3)
    result = model.predict(rgb[:1], pad_input=True, flip_aug=True, route_on_device=True)
    reference = model.predict(rgb[:1], pad_input=True, flip_aug=True)
    assert result.head_indices.shape == (2, 1) and result.head_indices.dtype == torch.long
    assert result.heads == reference.heads
    assert torch.equal(result.depth, reference.depth)


def test_device_routed_predict_traces_as_one_graph(rgb):
    """No host sync and no data-dependent Python: what CUDA graph capture and fullgraph compile need."""
    model = tiny_model("nk", seed=1)

    def run(x):
        r = model.predict(x, pad_input=True, flip_aug=True, route_on_device=True)
        return r.depth, r.head_indices

    compiled = torch.compile(run, backend="eager", fullgraph=True, dynamic=False)
    with torch.inference_mode():
        depth, indices = compiled(rgb[:1])
        expected = model.predict(rgb[:1], pad_input=True, flip_aug=True)
    assert torch.equal(depth, expected.depth) and torch.equal(indices, expected.head_indices)


# ---------------------------------------------------------------- precision islands


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_only_the_encoder_runs_in_low_precision(precision, dtype):
    model = set_precision(tiny_model("nk"), precision)
    assert precision_of(model) == precision
    for name, p in model.named_parameters():
        expected = dtype if name.startswith("core.core.pretrained.") else torch.float32
        assert p.dtype == expected, name


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.02), ("fp16", 2e-3)])
def test_low_precision_depth_stays_close_to_fp32(rgb, precision, tolerance):
    model = tiny_model("n")
    reference = model.predict(rgb, flip_aug=False).depth
    fast = set_precision(copy.deepcopy(model), precision).predict(rgb, flip_aug=False).depth
    assert fast.dtype == torch.float32
    rel = ((fast - reference).abs() / reference).mean()
    assert 0 < rel < tolerance  # changed by rounding (it did run in low precision), but only by rounding


def test_fp32_islands_survive_a_decoder_activation_that_overflows_fp16(rgb):
    """MiDaS activations can exceed fp16's 65504 (ZoeDepth #56). Scale one decoder conv up by 1e6 and the next
    one down by the same factor (only linear upsampling between them): fp32 maths is unchanged, fp16 overflows."""
    model = tiny_model("n", seed=7)
    reference = model.predict(rgb[:1], flip_aug=False).depth
    with torch.no_grad():
        head = model.core.core.scratch.output_conv
        head[0].weight.mul_(1e6)
        head[0].bias.mul_(1e6)
        head[2].weight.div_(1e6)
    scaled = model.predict(rgb[:1], flip_aug=False).depth
    torch.testing.assert_close(scaled, reference, rtol=1e-3, atol=1e-4)

    everything_half = copy.deepcopy(model).half()
    assert not torch.isfinite(everything_half.predict(rgb[:1].half(), flip_aug=False).depth).all()
    islands = set_precision(copy.deepcopy(model), "fp16").predict(rgb[:1], flip_aug=False).depth
    assert torch.isfinite(islands).all()
    assert ((islands - reference).abs() / reference).mean() < 2e-3


def test_set_precision_refuses_to_go_back_up_or_unknown_names():
    model = set_precision(tiny_model("n"), "bf16")
    with pytest.raises(ValueError, match="reload fp32 weights"):
        set_precision(model, "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        set_precision(tiny_model("n"), "int8")


# ---------------------------------------------------------------- cached relative-position bias


@pytest.fixture
def attention():
    torch.manual_seed(0)
    attn = Attention(dim=16, num_heads=2, pretrain_grid=3)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    return attn


def test_bias_is_computed_once_per_size_and_row_aligned(attention):
    with torch.no_grad():
        first = attention.relative_position_bias(2, 3)
        again = attention.relative_position_bias(2, 3)
        other = attention.relative_position_bias(3, 4)
    fresh = attention._compute_bias(2, 3)
    assert again is first and other is not first
    assert torch.equal(first, fresh)
    assert first.shape == (2, 7, 7) and first.stride(-2) % MASK_ALIGNMENT == 0


def test_bias_cache_follows_the_table(attention):
    with torch.no_grad():
        before = attention.relative_position_bias(2, 2).clone()
        attention.relative_position_bias_table.add_(1.0)  # in place: version changes
        after = attention.relative_position_bias(2, 2)
        torch.testing.assert_close(after, before + 1.0)
        state = {k: v.clone() for k, v in attention.state_dict().items()}
        state["relative_position_bias_table"].mul_(-1)
        attention.load_state_dict(state)
        torch.testing.assert_close(attention.relative_position_bias(2, 2), -(before + 1.0))
        attention.double()
        assert attention.relative_position_bias(2, 2).dtype == torch.float64


def test_bias_is_not_cached_while_training(attention):
    bias = attention.relative_position_bias(2, 2)
    bias.sum().backward()
    assert attention.relative_position_bias_table.grad is not None
    assert not attention._bias_cache


def test_cached_bias_gives_the_same_model_output(rgb):
    model = tiny_model("nk", seed=6)
    with torch.no_grad():
        first = model(rgb).metric_depth
        cached = model(rgb).metric_depth  # every block now reads its cached bias
    with torch.enable_grad():
        uncached = model(rgb).metric_depth.detach()
    assert torch.equal(first, cached)
    torch.testing.assert_close(cached, uncached, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- execution modes


def test_runner_eager_equals_predict(rgb):
    model = tiny_model("nk")
    runner = DepthRunner(model, torch.device("cpu"))
    out = runner(rgb[:1], pad_input=True, flip_aug=True)
    ref = model.predict(rgb[:1], pad_input=True, flip_aug=True)
    assert torch.equal(out.depth, ref.depth) and out.heads == ref.heads
    assert runner.describe() == "fp32 eager"


def test_runner_rejects_graphs_without_cuda_and_unknown_modes():
    model = tiny_model("n")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        DepthRunner(model, torch.device("cpu"), mode="cuda_graph")
    with pytest.raises(ValueError, match="unknown execution mode"):
        DepthRunner(model, torch.device("cpu"), mode="turbo")


def test_compiled_runner_matches_eager_on_cpu(rgb):
    """torch.compile (inductor, C++ on the CPU) of the whole device-routed predict."""
    model = tiny_model("nk", seed=8)
    runner = DepthRunner(model, torch.device("cpu"), mode="compile")
    out = runner(rgb[:1], pad_input=True, flip_aug=False, head=None)
    ref = model.predict(rgb[:1], pad_input=True, flip_aug=False)
    assert out.heads == ref.heads
    torch.testing.assert_close(out.depth, ref.depth, rtol=1e-4, atol=1e-5)
