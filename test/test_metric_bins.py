"""Metric bins module numerics against values derived by hand (ZoeDepth attractors, seed bins, log-binomial)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoedepth_ros.model.metric_bins import (
    AttractorLayer,
    ConditionalLogBinomial,
    SeedBinRegressor,
    inv_attractor,
    log_binomial_probs,
)

F64 = torch.float64
LN2, LN3 = math.log(2.0), math.log(3.0)


def softplus_inv(a: float) -> float:
    """The pre-activation whose softplus is ``a``: log(exp(a) - 1)."""
    return math.log(math.expm1(a))


def inv_by_hand(dx: float) -> float:
    """The 'inv' attractor with alpha = 300, gamma = 2, written out: dx / (1 + 300 dx^2)."""
    return dx / (1 + 300 * dx * dx)


def constant_net(net: nn.Sequential, last_bias: list[float]) -> None:
    """Zero every conv of a 1x1 MLP and set the last conv's bias, so its output is spatially constant."""
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()
            conv.bias.zero_()
        convs[-1].bias.copy_(torch.tensor(last_bias, dtype=convs[-1].bias.dtype))


def channels(values: list[float], h: int, w: int) -> torch.Tensor:
    """(1, len(values), h, w) tensor, each channel the constant given."""
    return torch.tensor(values, dtype=F64).view(1, -1, 1, 1).expand(1, len(values), h, w).clone()


# ---------------------------------------------------------------- inv attractor


def test_inv_attractor_uses_alpha_300_gamma_2():
    dx = torch.tensor([0.1, -1.0, 0.0, 0.5, -0.2], dtype=F64)
    expected = torch.tensor([0.1 / 4, -1 / 301, 0.0, 0.5 / 76, -0.2 / 13], dtype=F64)
    torch.testing.assert_close(inv_attractor(dx), expected, rtol=0, atol=1e-15)
    # alpha = 1000 (the value in the official config files) would give 0.1 / 11 for dx = 0.1
    assert abs(inv_attractor(torch.tensor(0.1, dtype=F64)).item() - 0.1 / 11) > 0.01


# ---------------------------------------------------------------- unnormed (softplus) attractors


def unnormed_layer(attractors: list[float], in_dim: int = 2, mlp_dim: int = 3) -> AttractorLayer:
    layer = AttractorLayer(in_dim, mlp_dim, len(attractors), normed=False, min_depth=1e-3, max_depth=10, dtype=F64)
    constant_net(layer._net, [softplus_inv(a) for a in attractors])
    return layer


def test_unnormed_single_attractor_moves_bins_by_hand_values():
    layer = unnormed_layer([2.0])
    emb, prev = torch.randn(1, 2, 2, 2, dtype=F64), torch.randn(1, 2, 3, 3, dtype=F64)
    bins, centers = layer(emb, prev, channels([1.9, 2.0, 3.0], 2, 2))
    # dx = 0.1 -> +0.1 / (1 + 3); dx = 0 -> 0; dx = -1 -> -1 / 301
    expected = channels([1.9 + 0.025, 2.0, 3.0 - 1 / 301], 2, 2)
    torch.testing.assert_close(bins, expected, rtol=0, atol=1e-12)
    assert torch.equal(bins, centers)  # unnormed: the same tensor twice, unsorted and unclipped


def test_unnormed_bins_stay_unsorted_and_unclipped():
    layer = unnormed_layer([2.0])
    bins, centers = layer(
        torch.zeros(1, 2, 1, 1, dtype=F64), torch.zeros(1, 2, 1, 1, dtype=F64), channels([3.0, 1.9, 2.0, 20.0], 1, 1)
    )
    # dx = 2 - 20 = -18 -> -18 / (1 + 300 * 324) = -18 / 97201; nothing sorted, nothing clipped to max_depth 10
    expected = torch.tensor([3.0 - 1 / 301, 1.9 + 0.025, 2.0, 20.0 - 18 / 97201], dtype=F64)
    torch.testing.assert_close(bins.flatten(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(centers.flatten(), expected, rtol=0, atol=1e-12)


def test_unnormed_two_attractors_average_their_updates():
    layer = unnormed_layer([2.0, 1.0])
    bins, centers = layer(
        torch.zeros(1, 2, 2, 2, dtype=F64), torch.zeros(1, 2, 2, 2, dtype=F64), channels([1.9, 2.0, 3.0], 2, 2)
    )
    # b = 1.9: a=2 -> dx 0.1 -> 0.025; a=1 -> dx -0.9 -> -0.9 / (1 + 243) = -0.9 / 244
    # b = 2.0: a=2 -> 0;               a=1 -> dx -1   -> -1 / 301
    # b = 3.0: a=2 -> -1 / 301;        a=1 -> dx -2   -> -2 / (1 + 1200) = -2 / 1201
    expected = channels(
        [
            1.9 + (0.025 - 0.9 / 244) / 2,
            2.0 + (0.0 - 1 / 301) / 2,
            3.0 + (-1 / 301 - 2 / 1201) / 2,
        ],
        2,
        2,
    )
    torch.testing.assert_close(bins, expected, rtol=0, atol=1e-12)
    assert torch.equal(bins, centers)
    # a sum instead of the mean would move b = 1.9 to 1.9 + 0.025 - 0.9 / 244 = 1.92131...
    assert abs(bins[0, 0, 0, 0].item() - (1.9 + 0.025 - 0.9 / 244)) > 1e-3


def test_unnormed_bins_resized_bilinear_align_corners_to_attractor_grid():
    layer = unnormed_layer([2.0])
    bins_in = torch.tensor([0.0, 3.0], dtype=F64).view(1, 1, 1, 2)
    bins, _ = layer(torch.zeros(1, 2, 2, 4, dtype=F64), torch.zeros(1, 2, 2, 4, dtype=F64), bins_in)
    # align_corners=True 1x2 -> 2x4: [0, 1, 2, 3] on both rows (align_corners=False would give [0, .75, 2.25, 3])
    resized = [0.0, 1.0, 2.0, 3.0]
    expected = torch.tensor([b + inv_by_hand(2.0 - b) for b in resized], dtype=F64).expand(2, 4)
    assert bins.shape == (1, 1, 2, 4)
    torch.testing.assert_close(bins[0, 0], expected, rtol=0, atol=1e-12)
    # spot values: b = 1 -> dx 1 -> 1 + 1 / 301; b = 0 -> dx 2 -> 0 + 2 / 1201
    assert bins[0, 0, 1, 1].item() == pytest.approx(1 + 1 / 301, abs=1e-12)
    assert bins[0, 0, 0, 0].item() == pytest.approx(2 / 1201, abs=1e-12)


def test_prev_embedding_is_resized_and_added_before_the_mlp():
    layer = AttractorLayer(2, 2, 1, normed=False, min_depth=1e-3, max_depth=10, dtype=F64)
    seen = []
    layer._net[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    emb = torch.tensor([[[0.5] * 4] * 3, [[1.0, 2.0, 3.0, 4.0]] * 3], dtype=F64).unsqueeze(0)  # 1, 2, 3, 4
    prev = torch.tensor([[[0.0, 3.0]], [[4.0, 4.0]]], dtype=F64).unsqueeze(0)  # 1, 2, 1, 2
    layer(emb, prev, channels([1.0], 1, 1))
    expected = torch.tensor(
        [
            [[0.5, 1.5, 2.5, 3.5]] * 3,  # 0.5 + [0, 1, 2, 3] (align_corners=True); False would give [0, .75, 2.25, 3]
            [[5.0, 6.0, 7.0, 8.0]] * 3,  # [1, 2, 3, 4] + constant 4
        ],
        dtype=F64,
    )
    assert len(seen) == 1
    torch.testing.assert_close(seen[0][0], expected, rtol=0, atol=1e-12)


def test_prev_embedding_reaches_the_attractors_end_to_end():
    # first conv = identity, ReLU, last conv reads channel 0 only -> attractor = softplus(emb0 + resize(prev0))
    layer = AttractorLayer(2, 2, 1, normed=False, min_depth=1e-3, max_depth=10, dtype=F64)
    with torch.no_grad():
        layer._net[0].weight.copy_(torch.eye(2, dtype=F64).view(2, 2, 1, 1))
        layer._net[0].bias.zero_()
        layer._net[2].weight.copy_(torch.tensor([1.0, 0.0], dtype=F64).view(1, 2, 1, 1))
        layer._net[2].bias.zero_()
    emb = torch.full((1, 2, 3, 3), 0.5, dtype=F64)
    prev = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=F64).view(1, 1, 2, 2).expand(1, 2, 2, 2)
    bins, _ = layer(emb, prev, channels([2.0], 1, 1))
    # 0.5 + the 2x2 -> 3x3 resize (corners kept, edge midpoints, centre = mean of the four)
    pre = [[0.5, 1.0, 1.5], [1.5, 2.0, 2.5], [2.5, 3.0, 3.5]]
    attract = [[math.log1p(math.exp(v)) for v in row] for row in pre]
    expected = torch.tensor([[2.0 + inv_by_hand(a - 2.0) for a in row] for row in attract], dtype=F64)
    torch.testing.assert_close(bins[0, 0], expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- normed attractors (ZoeD_K)


def normed_layer(biases: list[float]) -> AttractorLayer:
    layer = AttractorLayer(2, 3, 1, normed=True, min_depth=1.0, max_depth=11.0, dtype=F64)
    constant_net(layer._net, biases)
    return layer


def run_normed(layer: AttractorLayer, bins: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    out, centers = layer(torch.zeros(1, 2, 1, 1, dtype=F64), torch.zeros(1, 2, 1, 1, dtype=F64), channels(bins, 1, 1))
    return out.flatten(), centers.flatten()


def test_normed_attractor_uses_first_channel_plus_eps():
    bins, centers = run_normed(normed_layer([0.4, 5.0]), [0.2, 0.9])
    a = 0.401  # ReLU(0.4) + 1e-3; the normalised 0.401 / 5.402 = 0.0742 computed upstream is overwritten
    # b = 0.2: dx = 0.201 -> 0.201 / (1 + 300 * 0.040401) = 0.201 / 13.1203
    # b = 0.9: dx = -0.499 -> -0.499 / (1 + 300 * 0.249001) = -0.499 / 75.7003
    new = [0.2 + 0.201 / 13.1203, 0.9 - 0.499 / 75.7003]
    assert a - 0.2 == pytest.approx(0.201) and a - 0.9 == pytest.approx(-0.499)
    torch.testing.assert_close(bins, torch.tensor(new, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(centers, torch.tensor([10 * new[0] + 1, 10 * new[1] + 1], dtype=F64), rtol=0, atol=1e-11)
    torch.testing.assert_close(centers, torch.tensor([3.153197717, 9.934082163], dtype=F64), rtol=0, atol=1e-8)


def test_normed_attractor_ignores_second_channel_and_relu_clamps():
    base = run_normed(normed_layer([0.4, 5.0]), [0.2, 0.9])
    other = run_normed(normed_layer([0.4, 0.7]), [0.2, 0.9])
    assert torch.equal(base[0], other[0]) and torch.equal(base[1], other[1])
    # a negative first pre-activation is cut by the ReLU: attractor = 0 + 1e-3
    bins, _ = run_normed(normed_layer([-1.0, 5.0]), [0.2])
    # dx = -0.199 -> -0.199 / (1 + 300 * 0.039601) = -0.199 / 12.8803
    assert bins.item() == pytest.approx(0.2 - 0.199 / 12.8803, abs=1e-12)


def test_normed_centres_are_sorted_but_bins_keep_their_order():
    bins, centers = run_normed(normed_layer([0.4, 5.0]), [0.9, 0.2])
    new = [0.9 - 0.499 / 75.7003, 0.2 + 0.201 / 13.1203]
    torch.testing.assert_close(bins, torch.tensor(new, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(centers, torch.tensor([10 * new[1] + 1, 10 * new[0] + 1], dtype=F64), rtol=0, atol=1e-11)


def test_normed_centres_are_clipped_to_depth_range():
    bins, centers = run_normed(normed_layer([0.4, 5.0]), [1.5, -0.5, 0.401])
    # b = 1.5: dx = -1.099 -> -1.099 / (1 + 300 * 1.207801) = -1.099 / 363.3403 -> centre 15.9697 -> 11
    # b = -0.5: dx = 0.901 -> 0.901 / (1 + 300 * 0.811801) = 0.901 / 244.5403 -> centre -3.963 -> 1
    # b = 0.401: dx = 0 -> unchanged -> centre 5.01
    new = [1.5 - 1.099 / 363.3403, -0.5 + 0.901 / 244.5403, 0.401]
    torch.testing.assert_close(bins, torch.tensor(new, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(centers, torch.tensor([1.0, 5.01, 11.0], dtype=F64), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- seed bins


def test_seed_bins_normed_widths_edges_centres():
    seed = SeedBinRegressor(2, 3, 2, normed=True, min_depth=1.0, max_depth=11.0, dtype=F64)
    constant_net(seed._net, [1.0, 3.0])
    bins, centers = seed(torch.randn(1, 2, 2, 3, dtype=F64))
    # widths (ReLU + 1e-3) = [1.001, 3.001], sum 4.002 -> metric widths 10 * [1.001, 3.001] / 4.002
    w0 = 10 * 1.001 / 4.002  # 2.5012493753...
    edges = [1.0, 1.0 + w0, 11.0]
    mids = [(edges[0] + edges[1]) / 2, (edges[1] + edges[2]) / 2]
    assert mids == pytest.approx([2.2506246877, 7.2506246877])
    assert centers.shape == (1, 2, 2, 3)
    torch.testing.assert_close(centers, channels(mids, 2, 3), rtol=0, atol=1e-12)
    torch.testing.assert_close(bins, channels([(mids[0] - 1) / 10, (mids[1] - 1) / 10], 2, 3), rtol=0, atol=1e-12)


def test_seed_bins_normed_relu_and_eps():
    seed = SeedBinRegressor(2, 3, 2, normed=True, min_depth=1.0, max_depth=11.0, dtype=F64)
    constant_net(seed._net, [-2.0, 3.0])
    _, centers = seed(torch.zeros(1, 2, 1, 1, dtype=F64))
    w0 = 10 * 0.001 / 3.002  # ReLU(-2) + 1e-3 over 0.001 + 3.001
    torch.testing.assert_close(centers.flatten(), torch.tensor([1 + w0 / 2, 6 + w0 / 2], dtype=F64), rtol=0, atol=1e-12)


def test_seed_bins_softplus_returns_softplus_twice():
    seed = SeedBinRegressor(2, 3, 2, normed=False, min_depth=1e-3, max_depth=10.0, dtype=F64)
    constant_net(seed._net, [0.0, math.log(math.exp(2.0) - 1)])
    bins, centers = seed(torch.randn(1, 2, 2, 2, dtype=F64))
    torch.testing.assert_close(bins, channels([LN2, 2.0], 2, 2), rtol=0, atol=1e-12)
    assert torch.equal(bins, centers)


# ---------------------------------------------------------------- log-binomial


def probs(p: float, t: float, n_bins: int = 3) -> torch.Tensor:
    full = lambda v: torch.full((1, 1, 1, 1), v, dtype=F64)  # noqa: E731
    out = log_binomial_probs(full(p), full(t), n_bins)
    assert out.shape == (1, n_bins, 1, 1)
    return out.flatten()


def test_log_binomial_stirling_coefficient_p_half():
    # y_k = logC(2, k) + 2 ln 0.5 with Stirling logC = [0, 2 ln 2, 0] -> exp ∝ [1, 4, 1] (exact C(2,1) = 2)
    torch.testing.assert_close(probs(0.5, 1.0), torch.tensor([1 / 6, 4 / 6, 1 / 6], dtype=F64), rtol=0, atol=1e-5)
    # t = 2 halves the logits: ∝ [1, 2, 1]
    torch.testing.assert_close(probs(0.5, 2.0), torch.tensor([0.25, 0.5, 0.25], dtype=F64), rtol=0, atol=1e-5)


def test_log_binomial_p_09():
    y = [
        0 + 0 + 2 * math.log(0.1),  # -4.605170
        2 * LN2 + math.log(0.9) + math.log(0.1),  # -1.021651
        0 + 2 * math.log(0.9) + 0,
    ]  # -0.210721
    assert y == pytest.approx([-4.605170, -1.021651, -0.210721], abs=1e-6)
    # exp(y) = [0.01, 4 * 0.09, 0.81], sum 1.18
    expected = torch.tensor([0.01 / 1.18, 0.36 / 1.18, 0.81 / 1.18], dtype=F64)
    torch.testing.assert_close(probs(0.9, 1.0), expected, rtol=0, atol=1e-5)


def test_log_binomial_clamps_p_and_one_minus_p():
    # p = 0: p -> 1e-4, 1 - p = 1 -> exp(y) ∝ [1, 4e-4, 1e-8]
    low = torch.tensor([1.0, 4e-4, 1e-8], dtype=F64) / (1 + 4e-4 + 1e-8)
    torch.testing.assert_close(probs(0.0, 1.0), low, rtol=0, atol=1e-6)
    torch.testing.assert_close(probs(-0.5, 1.0), low, rtol=0, atol=1e-6)  # 1 - p = 1.5 clamps to 1
    # p = 1: 1 - p -> 1e-4 -> ∝ [1e-8, 4e-4, 1]
    torch.testing.assert_close(probs(1.0, 1.0), low.flip(0), rtol=0, atol=1e-6)
    assert probs(0.0, 1.0)[0].item() < 1  # no NaN / no all-mass from log(0)


# ---------------------------------------------------------------- conditional log-binomial


def stirling_softmax(p: float, temp: float, n_bins: int) -> torch.Tensor:
    """softmax_k([n ln n - k ln k - (n-k) ln(n-k) + k ln p + (n-k) ln(1-p)] / temp), n = n_bins - 1, 0 ln 0 = 0."""
    n = n_bins - 1
    xlogx = lambda v: 0.0 if v == 0 else v * math.log(v)  # noqa: E731
    y = torch.tensor(
        [xlogx(n) - xlogx(k) - xlogx(n - k) + k * math.log(p) + (n - k) * math.log(1 - p) for k in range(n_bins)],
        dtype=F64,
    )
    return torch.softmax(y / temp, dim=0)


def test_stirling_reference_values():
    # n = 3: logC(3, 1) = logC(3, 2) = 3 ln 3 - 2 ln 2 = 1.909543 (exact ln 3 = 1.098612)
    ref = stirling_softmax(0.5, 1.0, 4)
    c = 3 * LN3 - 2 * LN2
    assert c == pytest.approx(1.909543, abs=1e-6)
    e = math.exp(c)
    torch.testing.assert_close(ref, torch.tensor([1, e, e, 1], dtype=F64) / (2 + 2 * e))


def test_conditional_log_binomial_p_and_temperature():
    head = ConditionalLogBinomial(2, 1, 3, n_bins=4, min_temp=0.5, max_temp=5.0, dtype=F64)
    s = [1.0, 3.0, 2.0, 2.0]
    constant_net(head.mlp, [softplus_inv(v) for v in s])
    out = head(torch.randn(2, 2, 3, 3, dtype=F64), torch.randn(2, 1, 3, 3, dtype=F64))
    p = (1.0 + 1e-4) / (4.0 + 2e-4)  # 0.25000...
    t = (2.0 + 1e-4) / (4.0 + 2e-4)  # 0.5
    temp = (5.0 - 0.5) * t + 0.5  # 2.75
    assert temp == pytest.approx(2.75)
    assert out.shape == (2, 4, 3, 3)
    expected = stirling_softmax(p, temp, 4).view(1, 4, 1, 1).expand(2, 4, 3, 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 3, 3, dtype=F64))


def test_conditional_log_binomial_reads_cat_x_then_cond():
    head = ConditionalLogBinomial(2, 1, 3, n_bins=4, min_temp=0.5, max_temp=5.0, dtype=F64)
    constant_net(head.mlp, [0.0, softplus_inv(1.0), softplus_inv(2.0), softplus_inv(2.0)])
    with torch.no_grad():
        head.mlp[0].weight[0, 2] = 1.0  # hidden unit 0 reads input channel 2 only (cond, if cat([x, cond]))
        head.mlp[2].weight[0, 0] = 1.0  # s0 = softplus(gelu(channel 2))
    x, cond = torch.randn(1, 2, 2, 2, dtype=F64), torch.ones(1, 1, 2, 2, dtype=F64)
    out = head(x, cond)
    assert torch.equal(out, head(x + torch.randn_like(x), cond))  # x does not reach hidden unit 0
    assert not torch.allclose(out, head(x, 2 * cond))
    gelu1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # 0.841345
    s0 = math.log1p(math.exp(gelu1))
    p = (s0 + 1e-4) / (s0 + 1.0 + 2e-4)
    temp = 4.5 * (2.0 + 1e-4) / (4.0 + 2e-4) + 0.5
    expected = stirling_softmax(p, temp, 4).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
