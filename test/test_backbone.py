"""BEiT backbone numerics (relative-position index and bias resampling, attention) and router helpers, by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoedepth_ros.model.backbone import Attention, Beit, relative_position_index, resample_bias_table
from zoedepth_ros.model.config import BackboneConfig
from zoedepth_ros.model.router import batch_head, sinusoidal_encoding

F64 = torch.float64

# 2x2 grid, patches (y, x) = (0,0), (0,1), (1,0), (1,1); patch pair -> (y_i - y_j + 1) * 3 + (x_i - x_j + 1);
# 9 grid distances, then 9 = cls query -> patch, 10 = patch query -> cls, 11 = cls -> cls.
INDEX_2X2 = [
    [11, 9, 9, 9, 9],
    [10, 4, 3, 1, 0],
    [10, 5, 4, 2, 1],
    [10, 7, 6, 4, 3],
    [10, 8, 7, 5, 4],
]
# 1x3 grid: 1 x 5 distances, patch pair -> x_i - x_j + 2; cls rows 5, 6, 7.
INDEX_1X3 = [
    [7, 5, 5, 5],
    [6, 2, 1, 0],
    [6, 3, 2, 1],
    [6, 4, 3, 2],
]
# 2x1 grid: 3 x 1 distances, patch pair -> y_i - y_j + 1; cls rows 3, 4, 5.
INDEX_2X1 = [
    [5, 3, 3],
    [4, 1, 0],
    [4, 2, 1],
]


@pytest.mark.parametrize(("grid", "expected"), [((2, 2), INDEX_2X2), ((1, 3), INDEX_1X3), ((2, 1), INDEX_2X1)])
def test_relative_position_index_by_hand(grid, expected):
    index = relative_position_index(*grid)
    assert index.dtype == torch.long
    assert index.tolist() == expected


def test_relative_position_index_3x3_spot_values():
    index = relative_position_index(3, 3)  # 5 x 5 distances, 25 grid rows
    assert index.shape == (10, 10)
    # patch 0 = (0,0) to patch 8 = (2,2): dy = -2, dx = -2 -> (0) * 5 + 0 = 0; the reverse -> 4 * 5 + 4 = 24
    assert index[1, 9].item() == 0 and index[9, 1].item() == 24
    # patch 5 = (1,2) to patch 3 = (1,0): dy 0, dx 2 -> 2 * 5 + 4 = 14; diagonal -> centre 12
    assert index[6, 4].item() == 14 and index[5, 5].item() == 12
    assert index[0, 0].item() == 27 and index[0, 3].item() == 25 and index[3, 0].item() == 26


# ---------------------------------------------------------------- bias table resampling


def table_g2() -> torch.Tensor:
    """12 x 2 table of a pretrain grid of 2: rows 0..8 the 3x3 distance grid, 9..11 the cls rows."""
    head0 = torch.arange(12, dtype=F64)
    head1 = torch.tensor([9.0, 8.0, 7.0, 1.0, -1.0, 2.0, 6.0, 5.0, 4.0, 0.5, -0.5, 0.25], dtype=F64)
    return torch.stack([head0, head1], dim=1)


def test_resample_identity_at_pretrain_grid():
    table = table_g2()
    assert torch.equal(resample_bias_table(table, 2, 2, 2), table)
    big = torch.randn(23 * 23 + 3, 3, dtype=F64)
    assert torch.equal(resample_bias_table(big, 12, 12, 12), big)


def test_resample_down_to_one_patch_picks_centre():
    table = table_g2()
    out = resample_bias_table(table, 2, 1, 1)
    # 3x3 -> 1x1, align_corners=False: source (0 + 0.5) * 3 - 0.5 = 1 -> the centre, row 4, exactly
    assert out.shape == (4, 2)
    assert torch.equal(out, table[[4, 9, 10, 11]])
    assert out[0].tolist() == [4.0, -1.0]


def test_resample_up_to_1x3_grid_by_hand():
    out = resample_bias_table(table_g2(), 2, 1, 3)
    # y: 3 -> 1, source 1 (middle row: table rows 3, 4, 5). x: 3 -> 5, source (i + 0.5) * 0.6 - 0.5
    # = -0.2 (clamped to 0), 0.4, 1.0, 1.6, 2.2 (upper neighbour clamped to 2)
    # head 0, row [3, 4, 5]: 3, 0.6*3 + 0.4*4, 4, 0.4*4 + 0.6*5, 5
    # head 1, row [1, -1, 2]: 1, 0.6*1 + 0.4*-1, -1, 0.4*-1 + 0.6*2, 2
    expected = torch.tensor(
        [
            [3.0, 1.0],
            [3.4, 0.2],
            [4.0, -1.0],
            [4.6, 0.8],
            [5.0, 2.0],
            [9.0, 0.5],  # cls rows kept, in order
            [10.0, -0.5],
            [11.0, 0.25],
        ],
        dtype=F64,
    )
    assert out.shape == (8, 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_resample_up_to_3x1_grid_by_hand():
    out = resample_bias_table(table_g2(), 2, 3, 1)
    # x: 3 -> 1 picks column 1 (rows 1, 4, 7); y: 3 -> 5 as above. head 0 column [1, 4, 7]
    head0 = [1.0, 0.6 * 1 + 0.4 * 4, 4.0, 0.4 * 4 + 0.6 * 7, 7.0]
    head1 = [8.0, 0.6 * 8 + 0.4 * -1, -1.0, 0.4 * -1 + 0.6 * 5, 5.0]
    expected = torch.tensor([*zip(head0, head1, strict=True), (9.0, 0.5), (10.0, -0.5), (11.0, 0.25)], dtype=F64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- attention


def random_attention(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(dim=8, num_heads=2, pretrain_grid=2, dtype=F64)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return attn


def attention_by_hand(attn: Attention, x: torch.Tensor, table: torch.Tensor, index: list[list[int]]) -> torch.Tensor:
    w, qb, vb = attn.qkv.weight, attn.q_bias, attn.v_bias
    qkv = x @ w.T + torch.cat([qb, torch.zeros(8, dtype=F64), vb])  # B, N, 24
    q_all, k_all, v_all = qkv[..., 0:8], qkv[..., 8:16], qkv[..., 16:24]
    n = x.shape[1]
    heads = []
    for h in range(2):
        q, k, v = (t[..., 4 * h : 4 * h + 4] for t in (q_all, k_all, v_all))
        bias = torch.tensor([[table[index[i][j], h].item() for j in range(n)] for i in range(n)], dtype=F64)
        scores = (q * 4**-0.5) @ k.transpose(-1, -2) + bias
        weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)
        heads.append(weights @ v)
    merged = torch.cat(heads, dim=-1)
    return merged @ attn.proj.weight.T + attn.proj.bias


def test_attention_matches_explicit_computation_2x2():
    attn = random_attention()
    x = torch.randn(3, 5, 8, dtype=F64)
    out = attn(x, (2, 2))
    expected = attention_by_hand(attn, x, attn.relative_position_bias_table.detach(), INDEX_2X2)
    assert out.shape == (3, 5, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_attention_matches_explicit_computation_1x3_resampled_bias():
    attn = random_attention(1)
    t = attn.relative_position_bias_table.detach()
    # 3x3 -> 1x5 by hand (see test_resample_up_to_1x3_grid_by_hand): middle row r = t[3:6]
    r = t[3:6]
    table = torch.stack([r[0], 0.6 * r[0] + 0.4 * r[1], r[1], 0.4 * r[1] + 0.6 * r[2], r[2], t[9], t[10], t[11]])
    x = torch.randn(2, 4, 8, dtype=F64)
    torch.testing.assert_close(attn(x, (1, 3)), attention_by_hand(attn, x, table, INDEX_1X3), rtol=0, atol=1e-6)


def test_attention_biases():
    attn = random_attention()
    names = {name for name, _ in attn.named_parameters()}
    assert names == {"qkv.weight", "q_bias", "v_bias", "relative_position_bias_table", "proj.weight", "proj.bias"}
    assert attn.qkv.bias is None  # no k bias anywhere (it would cancel in the softmax anyway)
    x = torch.randn(1, 5, 8, dtype=F64)
    for name in ("v_bias", "q_bias", "relative_position_bias_table"):
        attn = random_attention()
        base = attn(x, (2, 2))
        with torch.no_grad():
            param = getattr(attn, name)  # a non-uniform change: a constant table shift cancels in the softmax
            param.add_(torch.linspace(-0.5, 0.5, param.numel(), dtype=F64).view_as(param))
        assert not torch.allclose(attn(x, (2, 2)), base, atol=1e-6), name


def test_attention_qkv_split_and_zero_k_bias(monkeypatch):
    # a k bias cancels in the softmax, so look at what reaches the attention kernel
    attn = random_attention()
    seen = {}
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.update(q=q, k=k, v=v)
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = torch.randn(1, 5, 8, dtype=F64)
    attn(x, (2, 2))
    w = attn.qkv.weight
    for name, rows, bias in (
        ("q", slice(0, 8), attn.q_bias),
        ("k", slice(8, 16), torch.zeros(8, dtype=F64)),
        ("v", slice(16, 24), attn.v_bias),
    ):
        full = x[0] @ w[rows].T + bias  # 5, 8
        by_head = torch.stack([full[:, 0:4], full[:, 4:8]])  # heads, tokens, head_dim
        torch.testing.assert_close(seen[name][0], by_head, rtol=0, atol=1e-12, msg=name)


def test_attention_v_bias_shifts_output_by_projected_bias():
    # softmax rows sum to 1, so a v bias adds proj.weight @ v_bias to every token, exactly
    attn = random_attention()
    x = torch.randn(1, 5, 8, dtype=F64)
    base = attn(x, (2, 2))
    delta = torch.linspace(-1, 1, 8, dtype=F64)
    with torch.no_grad():
        attn.v_bias.add_(delta)
    torch.testing.assert_close(attn(x, (2, 2)) - base, (attn.proj.weight @ delta).expand(1, 5, 8), rtol=0, atol=1e-10)


# ---------------------------------------------------------------- BEiT hooks


def small_beit(depth: int) -> Beit:
    torch.manual_seed(depth)
    cfg = BackboneConfig(embed_dim=8, depth=depth, num_heads=2, mlp_dim=16, patch_size=16, pretrain_grid=2)
    beit = Beit(cfg, dtype=F64)
    with torch.no_grad():
        for p in beit.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return beit


def test_hook_blocks_official():
    assert BackboneConfig().hook_blocks == (5, 11, 17, 23)
    assert BackboneConfig(depth=4).hook_blocks == (0, 1, 2, 3)
    assert BackboneConfig(depth=8).hook_blocks == (1, 3, 5, 7)


@pytest.mark.parametrize("depth", [4, 8])
def test_forward_intermediates_returns_hooked_block_outputs(depth):
    beit = small_beit(depth)
    x = torch.randn(2, 3, 32, 48, dtype=F64)  # grid (2, 3)
    outs = beit.forward_intermediates(x)
    # by hand: cls token, then the 16x16 patches in row-major order, then every block in turn
    patches = F.conv2d(x, beit.patch_embed.proj.weight, beit.patch_embed.proj.bias, stride=16)  # 2, 8, 2, 3
    tokens = torch.cat([beit.cls_token.expand(2, 1, 8), patches.permute(0, 2, 3, 1).reshape(2, 6, 8)], dim=1)
    seq = []
    for block in beit.blocks:
        tokens = block(tokens, (2, 3))
        seq.append(tokens)
    hooks = {4: (0, 1, 2, 3), 8: (1, 3, 5, 7)}[depth]
    assert len(outs) == 4
    for out, i in zip(outs, hooks, strict=True):
        assert out.shape == (2, 1 + 2 * 3, 8)
        torch.testing.assert_close(out, seq[i], rtol=0, atol=1e-10)
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 3, 32, 40), (1, 3, 17, 17)])
def test_forward_intermediates_rejects_non_multiple_of_patch(shape):
    with pytest.raises(ValueError):
        small_beit(4).forward_intermediates(torch.zeros(shape, dtype=F64))


# ---------------------------------------------------------------- router helpers


def test_sinusoidal_encoding_dim4_sines_then_cosines():
    enc = sinusoidal_encoding(3, 4)
    assert enc.shape == (3, 4) and enc.dtype == torch.float32
    # frequencies 10000^(-0/4) = 1 and 10000^(-2/4) = 1/100
    expected = torch.tensor([[math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)] for p in range(3)])
    torch.testing.assert_close(enc, expected, rtol=0, atol=1e-6)
    assert enc[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert enc[1, 0].item() == pytest.approx(0.841471, abs=1e-6)
    assert enc[1, 1].item() == pytest.approx(0.0099998, abs=1e-6)


def test_sinusoidal_encoding_dim6():
    enc = sinusoidal_encoding(4, 6, dtype=F64)
    f1, f2 = 10000 ** (-2 / 6), 10000 ** (-4 / 6)  # 0.0464159, 0.00215443
    expected = torch.tensor(
        [
            [math.sin(p), math.sin(p * f1), math.sin(p * f2), math.cos(p), math.cos(p * f1), math.cos(p * f2)]
            for p in range(4)
        ],
        dtype=F64,
    )
    assert enc.dtype == F64
    torch.testing.assert_close(enc, expected, rtol=0, atol=1e-6)


def test_batch_head_uses_summed_logits():
    # sample 2 prefers index 1, but the batch sum [3, 2] picks 0 ("nyu") for both
    assert int(batch_head(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))) == 0
    # sum [3, 4] -> 1 ("kitti") although sample 1 prefers 0 more strongly than sample 2 prefers 1
    assert int(batch_head(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))) == 1
    assert int(batch_head(torch.tensor([[0.1, 0.2]]))) == 1
    # four of five samples prefer 1, but the summed logits [5, 4] pick 0 (not a majority vote)
    assert int(batch_head(torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]))) == 0
