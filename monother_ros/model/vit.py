"""DINOv2 vision transformer (ViT/14) as used by Depth Anything v1 and v2.

Reference: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision"
(arXiv 2304.07193); the Depth Anything releases build it with LayerScale (init 1.0), no register
tokens, no block chunking, LayerNorm eps 1e-6, fused-qkv attention with biases, a GELU MLP, and a
position embedding learnt on a 37x37 grid that is resampled bicubically for other input sizes.

Parameter names follow the official module tree exactly (``cls_token``, ``pos_embed``,
``mask_token``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,
mlp.fc2,ls2.gamma}``, ``norm``) so that an official ``pretrained.*`` state dict loads with the
identity key mapping.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PatchEmbed", "Attention", "LayerScale", "Mlp", "Block", "DinoVisionTransformer",
           "interpolate_pos_embed", "interpolate_pos_embed_matmul", "bicubic_resize_matrix"]

_logger = logging.getLogger(__name__)

LAYERNORM_EPS = 1e-6  # DINOv2 norm_layer = partial(nn.LayerNorm, eps=1e-6)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, C_in, H, W) -> (B, H/p * W/p, C) tokens, row-major."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, C, H/p, W/p)
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (bias on qkv and proj)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5  # a Python float, as the reference's head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        # qkv features are laid out as (3, heads, head_dim), as in the official checkpoints.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if x.is_cuda:
            # Fused kernel on GPU (memory-efficient backward for training), as the official code
            # uses xformers' fused attention there; equal to the formula below to float rounding.
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # The official DINOv2 op order (scale q, q k^T, softmax, @ v): on CPU (and in exported
            # graphs, traced on CPU) this is bit-identical to the reference, while the fused SDPA
            # kernel drifts by ~1e-4 relative on small outputs of a full ViT-S (measured).
            attn = (q * self.scale) @ k.transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma`` (CaiT LayerScale)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, layerscale_init: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.mlp = Mlp(dim, mlp_hidden)
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _grid_side(pos_embed: Tensor) -> int:
    """Side G of the square position grid in a (1, 1 + G*G, C) embedding (class token first)."""
    n = pos_embed.shape[1] - 1
    g = int(math.isqrt(n))
    if g * g != n:
        raise ValueError(f"pos_embed holds {n} patch positions, not a square grid")
    return g


def interpolate_pos_embed(
    pos_embed: Tensor, grid_h: int, grid_w: int, offset: float = 0.1
) -> Tensor:
    """Resample a square learnt position embedding to a ``grid_h x grid_w`` token grid, as DINOv2.

    DINOv2 reshapes the patch part to (1, C, G, G) and calls bicubic ``F.interpolate`` with
    ``scale_factor = ((grid_h + offset) / G, (grid_w + offset) / G)`` (rows first), no antialias,
    ``align_corners=False``. Passing the scale factor (not the output size) matters: PyTorch then
    maps coordinates with ``1 / scale`` instead of ``G / grid``, which changes the values at any
    grid other than G x G (the output size is ``floor(G * scale) = grid``). The class-token
    embedding is kept as is. The computation runs in float32 and returns ``pos_embed``'s dtype.

    Args:
        pos_embed: (1, 1 + G*G, C) learnt embedding (class token first).
        grid_h: token rows of the input (H / patch).
        grid_w: token columns (W / patch).
        offset: DINOv2's ``interpolate_offset`` (0.1 in every Depth Anything model).

    Returns:
        (1, 1 + grid_h * grid_w, C) embedding.

    Raises:
        ValueError: ``pos_embed`` does not hold a square grid.
    """
    g = _grid_side(pos_embed)
    if grid_h == g and grid_w == g:
        return pos_embed
    dtype = pos_embed.dtype
    pos = pos_embed.float()
    dim = pos.shape[-1]
    patch = pos[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(
        patch,
        scale_factor=((grid_h + offset) / g, (grid_w + offset) / g),
        mode="bicubic",
        align_corners=False,
        antialias=False,
    )
    if patch.shape[-2:] != (grid_h, grid_w):  # would mean a float-rounding surprise, never silent
        raise ValueError(f"pos-embed resize gave {tuple(patch.shape[-2:])}, wanted {(grid_h, grid_w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((pos[:, :1], patch), dim=1).to(dtype)


def bicubic_resize_matrix(in_size: int, out_size: int, scale: float, *, dtype: torch.dtype = torch.float32,
                          device: torch.device | str | None = None) -> Tensor:
    """(out_size, in_size) matrix M with ``M @ v`` = PyTorch's 1-D bicubic resampling of ``v``.

    The weights of ``F.interpolate(mode="bicubic", align_corners=False, scale_factor=scale)`` along one
    axis: source coordinate ``(i + 0.5) / scale - 0.5``, Keys' cubic with A = -0.75, the four taps'
    indices clamped to the border. Bicubic is separable, so the 2-D resize is ``M_h @ X @ M_w^T`` (the
    same weighted sum in another order: equal to ``F.interpolate`` to float rounding).
    """
    a = -0.75
    i = torch.arange(out_size, dtype=torch.float32)
    real = (i + 0.5) * torch.tensor(1.0 / scale, dtype=torch.float32) - 0.5
    base = torch.floor(real)
    t = real - base
    x = torch.stack((t + 1.0, t, 1.0 - t, 2.0 - t), dim=1)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0           # |x| <= 1
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a      # 1 < |x| < 2
    weights = torch.cat((far[:, :1], near[:, 1:3], far[:, 3:]), dim=1)
    taps = (base.long()[:, None] + torch.arange(-1, 3)[None, :]).clamp(0, in_size - 1)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float32)
    matrix.scatter_add_(1, taps, weights)
    return matrix.to(dtype=dtype, device=device)


def interpolate_pos_embed_matmul(
    pos_embed: Tensor, grid_h: int, grid_w: int, offset: float = 0.1
) -> Tensor:
    """:func:`interpolate_pos_embed` as two matrix products (equal to float rounding; fast on a GPU,
    forward and backward, where the bicubic kernel runs one thread per output position)."""
    g = _grid_side(pos_embed)
    if grid_h == g and grid_w == g:
        return pos_embed
    dtype = pos_embed.dtype
    pos = pos_embed.float()
    dim = pos.shape[-1]
    m_h = bicubic_resize_matrix(g, grid_h, (grid_h + offset) / g, device=pos.device)
    m_w = bicubic_resize_matrix(g, grid_w, (grid_w + offset) / g, device=pos.device)
    grid = pos[0, 1:].reshape(g, g, dim)                       # (G rows, G cols, C)
    rows = torch.einsum("hi,ijc->hjc", m_h, grid)              # (grid_h, G, C)
    patch = torch.einsum("wj,hjc->hwc", m_w, rows).reshape(1, grid_h * grid_w, dim)
    return torch.cat((pos[:, :1], patch), dim=1).to(dtype)


def _tracing() -> bool:
    """True while torch.jit / torch.export / dynamo trace (graphs must hold the computation, not a cache)."""
    compiler = getattr(torch, "compiler", None)
    for name in ("is_exporting", "is_compiling"):
        check = getattr(compiler, name, None)
        if check is not None and check():
            return True
    return bool(torch.jit.is_tracing())


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT encoder returning normalised intermediate tokens for a DPT decoder.

    Args:
        patch_size: patch side in pixels (14).
        in_chans: input channels (3; thermal is replicated to 3 channels).
        embed_dim: token width C.
        depth: number of blocks.
        num_heads: attention heads (embed_dim must divide evenly).
        mlp_ratio: MLP hidden width / embed_dim.
        layerscale_init: initial LayerScale gamma.
        pos_embed_grid: side G of the learnt position grid (37 for 518-pixel pretraining).
        interpolate_offset: DINOv2 pos-embed resize offset (0.1).
    """

    def __init__(
        self,
        *,
        patch_size: int = 14,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        layerscale_init: float = 1.0,
        pos_embed_grid: int = 37,
        interpolate_offset: float = 0.1,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.n_blocks = depth
        self.interpolate_offset = interpolate_offset
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_embed_grid * pos_embed_grid, embed_dim))
        hidden = int(embed_dim * mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, hidden, layerscale_init) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LAYERNORM_EPS)
        # Used only by DINOv2's masked pretraining; kept so official state dicts load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2 initialisation (used when training from scratch; imports overwrite it)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """Patch tokens with class token prepended and position embedding added.

        Args:
            x: (B, in_chans, H, W) normalised image, H and W multiples of ``patch_size``.

        Returns:
            (B, 1 + H/p * W/p, C) tokens.
        """
        _, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {p}")
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + self._pos_embed_for(h // p, w // p)

    def _pos_embed_for(self, grid_h: int, grid_w: int) -> Tensor:
        """The resampled position embedding, reused while the weights and the grid stay the same.

        PyTorch's bicubic kernel walks all C channels in one thread per output position: 6 ms per call
        for ViT-L at 18x46 tokens on an H200, half of an fp16 frame. Where no gradient flows to
        ``pos_embed`` (inference, a frozen teacher) the result is cached, keyed on the parameter's
        version counter (bumped by every in-place write, e.g. ``load_state_dict``), so it is the very
        tensor the resize would return. Traced or exported graphs always get the resize itself.
        """
        needs_grad = torch.is_grad_enabled() and self.pos_embed.requires_grad
        if needs_grad and self.pos_embed.is_cuda and not _tracing():
            # Training: the same resize as two small matrix products (that kernel's backward is as slow).
            return interpolate_pos_embed_matmul(self.pos_embed, grid_h, grid_w, self.interpolate_offset)
        # Parameters made under inference mode have no version counter: nothing to key a cache on.
        if needs_grad or self.pos_embed.is_inference() or _tracing():
            return interpolate_pos_embed(self.pos_embed, grid_h, grid_w, self.interpolate_offset)
        pos = self.pos_embed
        key = (grid_h, grid_w, pos.data_ptr(), pos._version, pos.dtype, pos.device,
               torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_pos_embed_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                value = interpolate_pos_embed(pos, grid_h, grid_w, self.interpolate_offset)
            cached = (key, value)
            self.__dict__["_pos_embed_cache"] = cached  # not a buffer: never saved or exported
        return cached[1]

    def refresh_pos_embed_cache(self) -> None:
        """Recompute the cached position embedding from the current weights INTO the cached tensor.

        For callers that changed ``pos_embed`` in place while a captured CUDA graph reads the cached
        tensor's memory (a weight swap between replays): the graph then sees the new embedding.
        """
        cached = self.__dict__.get("_pos_embed_cache")
        if cached is None:
            return
        key, value = cached
        grid_h, grid_w, inference = key[0], key[1], key[-1]
        pos = self.pos_embed
        with torch.inference_mode() if inference else torch.no_grad():  # the mode the cached tensor was made in
            value.copy_(interpolate_pos_embed(pos, grid_h, grid_w, self.interpolate_offset))
        new_key = (grid_h, grid_w, pos.data_ptr(), pos._version, pos.dtype, pos.device, inference)
        self.__dict__["_pos_embed_cache"] = (new_key, value)

    def get_intermediate_layers(
        self, x: Tensor, n: int | Sequence[int], *, norm: bool = True
    ) -> tuple[tuple[Tensor, Tensor], ...]:
        """Tokens after the chosen blocks, as ``DinoVisionTransformer.get_intermediate_layers``.

        Blocks after the last requested one are not run (their output would be unused).

        Args:
            x: (B, in_chans, H, W) normalised image, H and W multiples of ``patch_size``.
            n: block indices, or an int k for the last k blocks (Depth Anything v1 uses 4).
            norm: apply the final LayerNorm to each output (Depth Anything does).

        Returns:
            One ``(patch_tokens (B, H/p * W/p, C), class_token (B, C))`` pair per requested block,
            in block order (the DINOv2 ``return_class_token=True`` form).

        Raises:
            ValueError: block indices out of range or input not a multiple of the patch size.
        """
        take = list(range(self.n_blocks - n, self.n_blocks)) if isinstance(n, int) else list(n)
        if not take or any(i < 0 or i >= self.n_blocks for i in take):
            raise ValueError(f"block indices {take} out of range for {self.n_blocks} blocks")
        wanted = set(take)
        tokens = self.prepare_tokens(x)
        outputs: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks[: max(take) + 1]):
            tokens = blk(tokens)
            if i in wanted:
                outputs[i] = self.norm(tokens) if norm else tokens
        return tuple((outputs[i][:, 1:], outputs[i][:, 0]) for i in sorted(wanted))
