"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/03-Sampling_Processors.ipynb

Edit the notebook's `#@save sampling` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/03-Sampling_Processors.ipynb ----
import torch


def apply_temperature(logits, temperature):
    """Divide the logits by T: T < 1 sharpens the distribution, T > 1 flattens it."""
    return logits / temperature


def apply_top_k(logits, k):
    """Keep each row's k largest logits (and any tied with the k-th); the rest become -inf."""
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits, p):
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches p.

    Summed from the small end, as transformers does: sort ascending, and drop the tokens whose
    cumulative probability is still <= 1 - p. The same set as summing the large end up to p, but
    float addition in the same order as the library makes the result bit-identical. The most likely
    token is always kept."""
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = tail_mass <= 1 - p
    drop_sorted[..., -1] = False  # keep at least the top token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(seq, logits, penalty):
    """Make every token already in `seq` (batch, tokens) less likely: a positive logit is divided by
    the penalty, a negative one multiplied by it (CTRL, Keskar et al., 2019)."""
    seen = torch.gather(logits, -1, seq)
    return logits.scatter(-1, seq, torch.where(seen < 0, seen * penalty, seen / penalty))


def make_sampler(temperature=1.0, top_k=None, top_p=None, repetition_penalty=None):
    """A `select(seq, logits)` for `decode`: the processors in transformers' order (repetition penalty,
    temperature, top-k, top-p), then one draw per row from the softmax with torch.multinomial.
    A knob left at its neutral value (T = 1, k = None/0, p = None/1, penalty = None/1) is skipped."""

    def select(seq, logits):
        if repetition_penalty is not None and repetition_penalty != 1.0:
            logits = apply_repetition_penalty(seq, logits, repetition_penalty)
        if temperature != 1.0:
            logits = apply_temperature(logits, temperature)
        if top_k:
            logits = apply_top_k(logits, top_k)
        if top_p is not None and top_p < 1.0:
            logits = apply_top_p(logits, top_p)
        return torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(-1)

    return select
