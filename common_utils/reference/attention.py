"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/01-Setup_and_Comparison.ipynb
    01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/02-FlashAttention_Demo.ipynb
    01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/04-Performance_Analysis.ipynb

Edit the notebook's `#@save attention` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/01-Setup_and_Comparison.ipynb ----
import math

import torch


def naive_attention(q, k, v, causal: bool = False):
    """softmax(q k^T / sqrt(d)) v with the full score matrix; q, k, v are (..., N, d).

    With `causal`, query i sees keys 0..i. When q is shorter than k (decoding: q holds the last
    tokens), the mask is aligned bottom-right, so the last query still sees every key."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # S = Q K^T / sqrt(d): (..., N_q, N_k)
    if causal:
        n_q, n_k = q.size(-2), k.size(-2)
        allowed = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(diagonal=n_k - n_q)
        scores = scores.masked_fill(~allowed, float("-inf"))  # future keys get probability 0
    probs = torch.softmax(scores, dim=-1)  # P = softmax(S), row by row
    return probs @ v  # O = P V

# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/02-FlashAttention_Demo.ipynb ----
def tiled_attention(q, k, v, block_q: int = 64, block_k: int = 64, causal: bool = False):
    """Exact attention computed block by block with an online softmax: FlashAttention's forward
    (Dao et al., 2022, Algorithm 1) in plain PyTorch. q, k, v are (..., N, d).

    For each block of queries keep, per row, the running max `m`, the running softmax denominator
    `denom` and the unnormalised output `acc`. A new key block may raise the max; what was summed
    under the old max is then rescaled by exp(m_old - m_new). Only one block_q x block_k tile of
    scores exists at a time (per batch and head), never the N x N matrix: extra memory is O(N)."""
    import math

    import torch

    if block_q <= 0 or block_k <= 0:
        raise ValueError(f"block sizes must be positive, got block_q={block_q}, block_k={block_k}")
    n_q, n_k = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1))
    shift = n_k - n_q  # causal alignment when q is the tail of the sequence (decoding)
    out = torch.empty_like(q)
    for qs in range(0, n_q, block_q):  # outer loop: one block of query rows
        q_blk = q[..., qs:qs + block_q, :] * scale
        rows = q_blk.size(-2)
        m = torch.full(q_blk.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)  # running row max
        denom = torch.zeros_like(m)  # running sum of exp(score - m)
        acc = torch.zeros(*q_blk.shape[:-1], v.size(-1), dtype=torch.float32, device=q.device)  # running sum of exp(score - m) v
        last_key = min(n_k, qs + rows + shift) if causal else n_k  # causal: key blocks past the diagonal are skipped
        for ks in range(0, last_key, block_k):  # inner loop: one block of keys and values
            scores = (q_blk @ k[..., ks:ks + block_k, :].transpose(-2, -1)).float()  # the only score tile
            if causal:
                q_pos = torch.arange(qs, qs + rows, device=q.device)[:, None] + shift
                k_pos = torch.arange(ks, ks + scores.size(-1), device=q.device)[None, :]
                scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
            m_new = torch.maximum(m, scores.amax(dim=-1))
            correction = torch.exp(m - m_new)  # rescales what was summed under the old max
            p = torch.exp(scores - m_new[..., None])  # this tile's unnormalised probabilities
            denom = denom * correction + p.sum(dim=-1)
            acc = acc * correction[..., None] + p @ v[..., ks:ks + block_k, :].float()
            m = m_new
        out[..., qs:qs + block_q, :] = (acc / denom[..., None]).to(q.dtype)  # normalise once, at the end
    return out

# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/04-Performance_Analysis.ipynb ----
from dataclasses import dataclass  # noqa: E402 (the exported module puts earlier cells above this import)


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
    about 4 N d + 4 N^2 elements. Tiled attention reads K and V once per query block of
    ~M / (4 d) rows, i.e. Theta(N^2 d^2 / M) elements (FlashAttention, Dao et al., 2022, Theorem 2),
    plus reading Q and writing O. `sram_bytes` defaults to an A100 SM's 192 KB of shared memory."""
    import math

    n, d = seq_len, head_dim
    per_head_flops = 4 * n * n * d
    standard = 4 * n * d + 4 * n * n  # elements moved by standard attention
    m_elements = sram_bytes / bytes_per_element  # M: what fits in SRAM
    block_rows = max(1, int(m_elements // (4 * d)))  # query rows per block
    passes = math.ceil(n / block_rows)  # each query block reads all of K and V once
    tiled = 2 * n * d + passes * 2 * n * d  # read Q + write O, plus K and V per pass
    scale = heads * batch
    return AttentionCost(flops=per_head_flops * scale, bytes_standard=standard * scale * bytes_per_element,
                         bytes_tiled=tiled * scale * bytes_per_element)
