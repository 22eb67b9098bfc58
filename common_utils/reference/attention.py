"""Attention written out step by step, to teach what fused kernels do, checked against
`torch.nn.functional.scaled_dot_product_attention` in tests and notebooks.

* `naive_attention`: materialises the N x N score matrix (what `attn_implementation="eager"` does).
* `tiled_attention`: FlashAttention's algorithm in plain PyTorch (Dao et al., 2022): walk K/V in
  blocks with an online softmax (running max and denominator), never holding more than a
  block_q x block_k tile of scores. Exact, not an approximation; slow in Python, but its memory is O(N).
* `attention_cost`: FLOPs and HBM bytes of standard vs tiled attention (the IO argument of the paper).
Pure torch: importing this module never imports transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def naive_attention(q, k, v, causal: bool = False):
    """softmax(q k^T / sqrt(d)) v with the full score matrix; q, k, v are (..., N, d)."""
    import torch

    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        n_q, n_k = q.size(-2), k.size(-2)
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(diagonal=n_k - n_q)
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def tiled_attention(q, k, v, block_q: int = 64, block_k: int = 64, causal: bool = False):
    """Exact attention computed block by block with an online softmax (FlashAttention's forward).

    For each block of queries, keep a running row max `m`, a running denominator `l` and an
    unnormalised output `acc`; each new key block rescales them by exp(m_old - m_new). Peak extra
    memory is one block_q x block_k tile per (batch, head), never N x N."""
    import torch

    if block_q <= 0 or block_k <= 0:
        raise ValueError(f"block sizes must be positive, got block_q={block_q}, block_k={block_k}")
    n_q, n_k, d = q.size(-2), k.size(-2), q.size(-1)
    scale = 1.0 / math.sqrt(d)
    shift = n_k - n_q  # causal alignment when q is the tail of the sequence (decoding)
    out = torch.empty_like(q)
    for qs in range(0, n_q, block_q):
        q_blk = q[..., qs:qs + block_q, :] * scale
        rows = q_blk.size(-2)
        m = torch.full(q_blk.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
        denom = torch.zeros_like(m)
        acc = torch.zeros(*q_blk.shape[:-1], v.size(-1), dtype=torch.float32, device=q.device)
        last_key = n_k if not causal else min(n_k, qs + rows + shift)
        for ks in range(0, last_key, block_k):
            scores = (q_blk @ k[..., ks:ks + block_k, :].transpose(-2, -1)).float()
            if causal:
                q_pos = torch.arange(qs, qs + rows, device=q.device)[:, None] + shift
                k_pos = torch.arange(ks, ks + scores.size(-1), device=q.device)[None, :]
                scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
            m_new = torch.maximum(m, scores.amax(dim=-1))
            correction = torch.exp(m - m_new)
            p = torch.exp(scores - m_new[..., None])
            denom = denom * correction + p.sum(dim=-1)
            acc = acc * correction[..., None] + p @ v[..., ks:ks + block_k, :].float()
            m = m_new
        out[..., qs:qs + block_q, :] = (acc / denom[..., None]).to(q.dtype)
    return out


@dataclass(frozen=True)
class AttentionCost:
    """FLOPs and main-memory (HBM) traffic of one attention forward, in the paper's model."""

    flops: float
    bytes_standard: float
    bytes_tiled: float

    @property
    def io_reduction(self) -> float:
        return self.bytes_standard / self.bytes_tiled


def attention_cost(seq_len: int, head_dim: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 2,
                   sram_bytes: int = 192 * 1024) -> AttentionCost:
    """FLOPs (two N x N x d matmuls: 4 N^2 d) and HBM bytes of standard vs tiled attention.

    Standard attention reads Q, K, V, writes S, reads S, writes P, reads P and V, writes O:
    about 4 N d + 4 N^2 elements. Tiled attention reads K and V once per query block of size
    ~M / (4 d), i.e. Theta(N^2 d^2 / M) elements (FlashAttention, Dao et al., 2022, Theorem 2),
    plus reading Q and writing O. `sram_bytes` defaults to an A100 SM's 192 KB of shared memory."""
    n, d = seq_len, head_dim
    per_head_flops = 4 * n * n * d
    standard = 4 * n * d + 4 * n * n
    m_elements = sram_bytes / bytes_per_element
    block_rows = max(1, int(m_elements // (4 * d)))
    passes = math.ceil(n / block_rows)
    tiled = 2 * n * d + passes * 2 * n * d
    scale = heads * batch
    return AttentionCost(flops=per_head_flops * scale, bytes_standard=standard * scale * bytes_per_element,
                         bytes_tiled=tiled * scale * bytes_per_element)
