"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/01-Setup.ipynb
    01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/02-MQA_Implementation.ipynb
    01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/04-Inference_Optimization.ipynb

Edit the notebook's `#@save gqa` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/01-Setup.ipynb ----
import torch
import torch.nn.functional as F
from torch import nn


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, bytes_per_element: int) -> int:
    """K and V for every layer: 2 * layers * kv_heads * head_dim * bytes per element."""
    return 2 * layers * kv_heads * head_dim * bytes_per_element


class GroupedQueryAttention(nn.Module):
    """Causal self-attention whose `n_heads` query heads share `n_kv_heads` K/V heads, in groups of
    n_heads // n_kv_heads consecutive query heads: MHA when n_kv_heads == n_heads, MQA (Shazeer, 2019)
    when n_kv_heads == 1, GQA (Ainslie et al., 2023) in between."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"need d_model % n_heads == 0 and n_heads % n_kv_heads == 0, got "
                             f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)  # fewer K/V heads:
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)  # smaller projections and cache
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: (batch, new tokens, d_model). Returns (output, (k, v)); k and v are the cache to pass back
        next time: (batch, n_kv_heads, all tokens so far, head_dim)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (b, n_heads, t, d)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (b, n_kv_heads, t, d)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if past is not None:  # decoding: the cached keys and values of earlier tokens come first
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        group = self.n_heads // self.n_kv_heads
        # K/V head j serves query heads j*group ... (j+1)*group - 1: repeat each K/V head `group` times.
        k_shared, v_shared = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        # With a cache the t new queries are the last t positions: a bottom-right aligned causal mask.
        mask = torch.ones(t, k.size(2), dtype=torch.bool, device=x.device).tril(diagonal=k.size(2) - t)
        out = F.scaled_dot_product_attention(q, k_shared, v_shared, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)

# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/02-MQA_Implementation.ipynb ----
def pool_kv_heads(attention, n_kv_heads: int):
    """A copy of a `GroupedQueryAttention` layer with `n_kv_heads` K/V heads, each the mean of a group of
    consecutive old K/V heads' projection weights (Ainslie et al., 2023, section 2.1). The query and
    output projections are copied unchanged. n_kv_heads == 1 gives MQA; the old count gives MHA back."""
    import copy

    from torch import nn

    old, head_dim = attention.n_kv_heads, attention.head_dim
    if old % n_kv_heads:
        raise ValueError(f"{old} K/V heads cannot be pooled into {n_kv_heads} equal groups")
    pooled = copy.deepcopy(attention)
    pooled.n_kv_heads = n_kv_heads
    for name in ["k_proj", "v_proj"]:
        weight = getattr(attention, name).weight.detach()  # (old * head_dim, d_model): one block of rows per head
        d_model = weight.size(1)
        groups = weight.view(n_kv_heads, old // n_kv_heads, head_dim, d_model)  # consecutive heads form a group
        projection = nn.Linear(d_model, n_kv_heads * head_dim, bias=False, device=weight.device, dtype=weight.dtype)
        projection.weight.data.copy_(groups.mean(dim=1).reshape(n_kv_heads * head_dim, d_model))
        setattr(pooled, name, projection)
    return pooled


def convert_kv_heads(model, n_kv_heads: int):
    """A copy of `model` whose every attention layer (`model.blocks[i].attn`) is pooled to `n_kv_heads`
    K/V heads; all other weights are copied. The MHA -> GQA / MQA checkpoint conversion of the GQA paper."""
    import copy

    converted = copy.deepcopy(model)
    for block in converted.blocks:
        block.attn = pool_kv_heads(block.attn, n_kv_heads)
    converted.config = {**model.config, "n_kv_heads": n_kv_heads}
    return converted

# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/04-Inference_Optimization.ipynb ----
def kv_cache_bytes(cache) -> int:
    """Bytes held by a K/V cache: a list of (k, v) pairs per layer (`TinyCausalLM`), or a transformers
    `Cache` (its `.layers[i].keys` / `.values`)."""
    layers = getattr(cache, "layers", None)
    pairs = [(layer.keys, layer.values) for layer in layers] if layers is not None else cache
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pairs)
