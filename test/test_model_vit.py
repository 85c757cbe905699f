"""DINOv2 ViT: position-embedding resampling, one block against a hand-written computation, taps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monother_ros.model.vit import Block, DinoVisionTransformer, interpolate_pos_embed

@pytest.fixture(autouse=True)
def _no_autograd():
    """Inference-only tests; scoped per test so autograd is not switched off for the whole session."""
    with torch.no_grad():
        yield



def _cubic_weights(n_in: int, n_out: int, scale: float, a: float = -0.75) -> np.ndarray:
    """(n_out, n_in) matrix of PyTorch-style bicubic resampling with a given scale factor.

    Written from the definition: source x = (dst + 0.5) / scale - 0.5 (not clamped), Keys cubic
    convolution with a = -0.75 over the 4 neighbours floor(x) - 1 .. floor(x) + 2, border replicated.
    """
    w = np.zeros((n_out, n_in))
    for dst in range(n_out):
        x = (dst + 0.5) / scale - 0.5
        x0 = math.floor(x)
        t = x - x0
        for k in range(-1, 3):
            d = abs(t - k)
            if d <= 1:
                c = ((a + 2) * d - (a + 3)) * d * d + 1
            elif d < 2:
                c = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            else:
                c = 0.0
            w[dst, min(max(x0 + k, 0), n_in - 1)] += c
    return w


def _random_pos(grid: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 1 + grid * grid, dim, generator=g)


def test_pos_embed_identity_at_training_grid():
    pos = _random_pos(37, 8)
    out = interpolate_pos_embed(pos, 37, 37)
    assert out is pos  # 518x518 input: the learnt embedding is used unchanged


@pytest.mark.parametrize("grid_hw", [(18, 46), (37, 20), (16, 20), (40, 40)])
def test_pos_embed_matches_independent_bicubic(grid_hw):
    gh, gw = grid_hw
    pos = _random_pos(37, 6, seed=gh * 100 + gw)
    out = interpolate_pos_embed(pos, gh, gw, offset=0.1)
    assert out.shape == (1, 1 + gh * gw, 6)
    assert torch.equal(out[:, 0], pos[:, 0])  # class position untouched
    grid = pos[0, 1:].reshape(37, 37, 6).double().numpy()
    wh = _cubic_weights(37, gh, (gh + 0.1) / 37)  # rows use the height scale
    ww = _cubic_weights(37, gw, (gw + 0.1) / 37)
    expect = np.einsum("ai,ijc,bj->abc", wh, grid, ww).reshape(gh * gw, 6)
    np.testing.assert_allclose(out[0, 1:].numpy(), expect, atol=2e-5)


def test_pos_embed_uses_scale_factor_not_output_size():
    # DINOv2 passes scale_factor; resizing to the output size gives different numbers (~1e-1 here),
    # which is exactly the timm/DINOv2 discrepancy at 252x644.
    pos = _random_pos(37, 4, seed=3)
    out = interpolate_pos_embed(pos, 18, 46)
    grid = pos[:, 1:].reshape(1, 37, 37, 4).permute(0, 3, 1, 2)
    by_scale = F.interpolate(grid, scale_factor=(18.1 / 37, 46.1 / 37), mode="bicubic", align_corners=False)
    by_size = F.interpolate(grid, size=(18, 46), mode="bicubic", align_corners=False)
    assert torch.allclose(out[0, 1:], by_scale.permute(0, 2, 3, 1).reshape(-1, 4), atol=1e-6)
    assert (by_size - by_scale).abs().max() > 1e-3


def _layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _block_by_hand(blk: Block, x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    hd = c // heads
    h = _layer_norm(x, blk.norm1.weight, blk.norm1.bias)
    qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias  # features ordered (q|k|v, head, hd)
    q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, n, heads, hd).transpose(1, 2) for i in range(3))
    att = torch.softmax((q * hd ** -0.5) @ k.transpose(-1, -2), dim=-1)
    a = (att @ v).transpose(1, 2).reshape(b, n, c) @ blk.attn.proj.weight.T + blk.attn.proj.bias
    x = x + a * blk.ls1.gamma
    h = _layer_norm(x, blk.norm2.weight, blk.norm2.bias)
    h = h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    h = h @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    return x + h * blk.ls2.gamma


def test_block_equals_hand_written_computation():
    torch.manual_seed(0)
    blk = Block(48, 4, 96, layerscale_init=1.0)
    for p in blk.parameters():  # non-trivial norms / layer scales
        p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    x = torch.randn(2, 11, 48)
    np.testing.assert_allclose(blk(x).numpy(), _block_by_hand(blk, x, 4).numpy(), rtol=1e-4, atol=1e-4)


def _tiny_vit(**kw) -> DinoVisionTransformer:
    torch.manual_seed(1)
    args = dict(embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0, pos_embed_grid=37)
    args.update(kw)
    return DinoVisionTransformer(**args).eval()


def test_intermediate_layers_are_normed_block_outputs():
    vit = _tiny_vit()
    x = torch.randn(1, 3, 28, 42)
    out = vit.get_intermediate_layers(x, [1, 3])
    tokens = vit.prepare_tokens(x)
    expect = {}
    for i, blk in enumerate(vit.blocks):
        tokens = blk(tokens)
        expect[i] = F.layer_norm(tokens, (32,), vit.norm.weight, vit.norm.bias, 1e-6)
    assert len(out) == 2
    for (patch, cls), i in zip(out, [1, 3]):
        assert patch.shape == (1, 2 * 3, 32) and cls.shape == (1, 32)
        torch.testing.assert_close(patch, expect[i][:, 1:])
        torch.testing.assert_close(cls, expect[i][:, 0])
    # an int means "the last n blocks" (Depth Anything v1)
    last = vit.get_intermediate_layers(x, 2)
    torch.testing.assert_close(last[1][0], out[1][0])


def test_tokens_follow_patch_grid_row_major():
    vit = _tiny_vit(depth=1)
    x = torch.zeros(1, 3, 28, 42)
    x[..., 14:28, 28:42] = 5.0  # bottom-right patch of a 2x3 grid
    emb = vit.patch_embed(x)
    assert emb.shape == (1, 6, 32)
    changed = (emb - vit.patch_embed(torch.zeros_like(x))).abs().sum(-1)[0]
    assert torch.nonzero(changed).flatten().tolist() == [5]


def test_bad_inputs_raise():
    vit = _tiny_vit()
    with pytest.raises(ValueError, match="multiple"):
        vit.get_intermediate_layers(torch.zeros(1, 3, 30, 42), [0])
    with pytest.raises(ValueError, match="range"):
        vit.get_intermediate_layers(torch.zeros(1, 3, 28, 42), [4])
    with pytest.raises(ValueError, match="divisible"):
        DinoVisionTransformer(embed_dim=30, num_heads=4)
