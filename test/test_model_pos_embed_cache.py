"""The position-embedding cache of the ViT: the very tensor the bicubic resize returns, invalidated by
in-place weight writes, refreshed in place for captured graphs, never used where gradients flow."""
from __future__ import annotations

import torch

from monother_ros.model.vit import DinoVisionTransformer, interpolate_pos_embed


def _vit() -> DinoVisionTransformer:
    torch.manual_seed(0)
    return DinoVisionTransformer(embed_dim=32, depth=2, num_heads=2, pos_embed_grid=5).eval()


def test_cached_embedding_equals_the_resize_bit_for_bit_and_follows_weight_writes():
    vit = _vit()
    x = torch.randn(1, 3, 4 * 14, 7 * 14)
    with torch.inference_mode():
        first = vit.prepare_tokens(x)
        again = vit.prepare_tokens(x)
    expected = interpolate_pos_embed(vit.pos_embed.detach(), 4, 7, vit.interpolate_offset)
    assert torch.equal(first, again)
    tokens = vit.patch_embed(x)
    tokens = torch.cat((vit.cls_token.expand(1, -1, -1), tokens), dim=1)
    assert torch.equal(first, (tokens + expected).detach())
    with torch.no_grad():  # an in-place write (what load_state_dict does) must not serve the stale cache
        vit.pos_embed.add_(1.0)
    with torch.inference_mode():
        after = vit.prepare_tokens(x)
    assert torch.allclose(after - first, torch.ones_like(after)[:, :, :] * (after - first)[0, 1, 0], atol=1e-5)
    assert float((after - first)[0, 1:].mean()) > 0.9  # bicubic weights sum to 1: +1 everywhere


def test_refresh_writes_the_new_embedding_into_the_cached_tensor():
    vit = _vit()
    x = torch.randn(1, 3, 3 * 14, 6 * 14)
    with torch.inference_mode():
        vit.prepare_tokens(x)
    cached = vit.__dict__["_pos_embed_cache"][1]
    pointer = cached.data_ptr()
    with torch.no_grad():
        vit.pos_embed.mul_(2.0)
    vit.refresh_pos_embed_cache()
    refreshed = vit.__dict__["_pos_embed_cache"][1]
    assert refreshed.data_ptr() == pointer  # same memory: a captured graph reads the new values
    expected = interpolate_pos_embed(vit.pos_embed.detach(), 3, 6, vit.interpolate_offset)
    assert torch.equal(refreshed, expected)


def test_no_cache_where_gradients_flow_to_the_embedding():
    vit = _vit().train()
    x = torch.randn(2, 3, 4 * 14, 7 * 14)
    vit.prepare_tokens(x).sum().backward()
    assert vit.pos_embed.grad is not None and float(vit.pos_embed.grad.abs().sum()) > 0
    assert "_pos_embed_cache" not in vit.__dict__
    frozen = _vit()
    frozen.pos_embed.requires_grad_(False)
    out = frozen.prepare_tokens(x)  # grad mode on, frozen embedding: cached (a frozen teacher)
    assert "_pos_embed_cache" in frozen.__dict__
    assert torch.equal(out, frozen.prepare_tokens(x))


def test_matrix_form_of_the_bicubic_resize_equals_interpolate():
    """The training path's matrix products give DINOv2's resize (scale factor, A = -0.75, clamped taps)."""
    from monother_ros.model.vit import interpolate_pos_embed_matmul

    torch.manual_seed(3)
    for grid, (gh, gw) in ((37, (18, 46)), (37, (8, 10)), (37, (52, 60)), (5, (4, 7)), (10, (3, 3))):
        pos = torch.randn(1, 1 + grid * grid, 16, dtype=torch.float64).float()
        ref = interpolate_pos_embed(pos, gh, gw, 0.1)
        fast = interpolate_pos_embed_matmul(pos, gh, gw, 0.1)
        assert fast.shape == ref.shape
        assert float((fast - ref).abs().max()) < 1e-5 * float(ref.abs().max()), (grid, gh, gw)  # float rounding
    pos = torch.randn(1, 1 + 37 * 37, 8, requires_grad=True)
    g_ref, = torch.autograd.grad(interpolate_pos_embed(pos, 18, 46).square().sum(), pos)
    g_fast, = torch.autograd.grad(interpolate_pos_embed_matmul(pos, 18, 46).square().sum(), pos)
    assert float((g_fast - g_ref).abs().max()) < 1e-4
