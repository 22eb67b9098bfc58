"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/02-KV_Cache_from_Scratch.ipynb

Edit the notebook's `#@save kv_cache` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/02-KV_Cache_from_Scratch.ipynb ----
import torch


def greedy(seq, logits):
    """Greedy selection: each row's most likely next token. `seq` (the tokens so far) is unused here;
    samplers with a repetition penalty need it, so every selector takes both."""
    return logits.argmax(dim=-1)


def eos_mask(token, eos_token_id):
    """True where `token` (batch,) is an end-of-sequence id; `eos_token_id` is an int, a list or None."""
    if eos_token_id is None:
        return torch.zeros_like(token, dtype=torch.bool)
    return torch.isin(token, torch.as_tensor(eos_token_id, device=token.device).reshape(-1))


@torch.inference_mode()
def decode_no_cache(model, input_ids, max_new_tokens, select=greedy, eos_token_id=None, pad_token_id=0):
    """Generate by re-running the whole sequence at every step: step t processes prompt + t tokens.
    Returns the new tokens (batch, <= max_new_tokens); rows that finished get `pad_token_id`.
    Rows must have no padding (see `decode` with an attention mask for padded batches)."""
    seq = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new_tokens = []
    for _ in range(max_new_tokens):
        logits = model(seq, use_cache=False, logits_to_keep=1).logits[:, -1].float()  # all of seq, again
        token = torch.where(finished, pad_token_id, select(seq, logits))
        new_tokens.append(token)
        seq = torch.cat([seq, token[:, None]], dim=-1)
        finished |= eos_mask(token, eos_token_id)
        if finished.all():
            break
    return torch.stack(new_tokens, dim=1)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/02-KV_Cache_from_Scratch.ipynb ----
import torch


class KVCache:
    """The KV cache, one entry per layer: the keys and values of every token seen so far, each
    (batch, kv_heads, tokens, head_dim), grown by `update` at every forward pass."""

    def __init__(self, num_layers: int):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    def update(self, layer_idx, k, v):
        """Append this pass's k, v (batch, kv_heads, new tokens, head_dim) to the layer's cache and
        return the whole history, which the new queries attend to."""
        if self.keys[layer_idx] is None:
            self.keys[layer_idx], self.values[layer_idx] = k, v
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def __len__(self):
        """Tokens cached so far (padding included)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[-2]

    def pairs(self):
        """(keys, values) of every layer, e.g. for `kv_cache_bytes`."""
        return list(zip(self.keys, self.values))

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/02-KV_Cache_from_Scratch.ipynb ----
import torch
import torch.nn.functional as F


def rotate_half(x):
    """RoPE helper: (x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def positions_and_mask(attention_mask, past, n, device):
    """Position ids (batch or 1, n) of the n new tokens and a boolean attention mask (True = may attend),
    or None when SDPA's causal flag (prefill) or no mask at all (one new token) is exact.

    `attention_mask` (batch, past + n) marks real tokens 1 and padding 0. With left padding a row's
    positions count only its real tokens (cumsum - 1), and a query sees a key only if the key is real
    and not in its future. A token may always see itself, so a padding query never has an empty row
    (a softmax over nothing is NaN, and NaN would leak into the real tokens through the values)."""
    if attention_mask is None:
        positions = torch.arange(past, past + n, device=device)[None]
        if past == 0 or n == 1:
            return positions, None
        attention_mask = torch.ones(1, past + n, dtype=torch.long, device=device)  # chunked prefill
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -n:]
    q_pos = torch.arange(past, past + n, device=device)[:, None]
    k_pos = torch.arange(past + n, device=device)[None, :]
    allowed = (k_pos <= q_pos) & attention_mask.bool()[:, None, :]  # (batch, n, past + n)
    return positions, (allowed | (k_pos == q_pos))[:, None]  # (batch, 1, n, past + n): same for every head


def attention_with_cache(attn, x, cos, sin, cache, mask=None):
    """One attention block of a Llama-style layer with our cache. `attn` is the model's own module
    (its q/k/v/o projections, head_dim, scaling, layer_idx); x is (batch, n new tokens, hidden)."""
    b, n, _ = x.shape
    shape = (b, n, -1, attn.head_dim)  # -1: query heads for q, KV heads for k and v (GQA)
    q = attn.q_proj(x).view(shape).transpose(1, 2)  # (b, heads, n, head_dim)
    k = attn.k_proj(x).view(shape).transpose(1, 2)  # (b, kv_heads, n, head_dim)
    v = attn.v_proj(x).view(shape).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin  # RoPE: keys are cached rotated
    k, v = cache.update(attn.layer_idx, k, v)  # (b, kv_heads, all tokens so far, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and n > 1,
                                         scale=attn.scaling, enable_gqa=True)  # a KV head serves heads/kv_heads queries
    return attn.o_proj(out.transpose(1, 2).reshape(b, n, -1))


@torch.inference_mode()
def forward_with_cache(model, input_ids, cache, attention_mask=None):
    """Run the model's own layers on the new tokens with our KV cache and return the next-token logits
    (batch, vocab) in fp32. `attention_mask` (batch, past + new) marks real tokens 1 and padding 0."""
    inner = model.model  # embeddings, decoder layers, final norm, rotary embedding
    positions, mask = positions_and_mask(attention_mask, len(cache), input_ids.shape[1], input_ids.device)
    h = inner.embed_tokens(input_ids)
    cos, sin = inner.rotary_emb(h, positions)
    for layer in inner.layers:
        h = h + attention_with_cache(layer.self_attn, layer.input_layernorm(h), cos, sin, cache, mask)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.lm_head(inner.norm(h[:, -1:]))[:, -1].float()  # only the last position predicts the next token

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/02-KV_Cache_from_Scratch.ipynb ----
import torch


@torch.inference_mode()
def decode(model, input_ids, max_new_tokens, select=greedy, eos_token_id=None, pad_token_id=0, attention_mask=None):
    """Generate with our KV cache: one prefill over the prompt, then one token per step.
    Returns (new tokens (batch, <= max_new_tokens), the cache). Rows that finished get `pad_token_id`,
    as in `generate`. For a left-padded batch pass its `attention_mask` (1 = token, 0 = padding)."""
    cache = KVCache(model.config.num_hidden_layers)
    seq = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    logits = forward_with_cache(model, input_ids, cache, attention_mask)  # prefill: the whole prompt once
    new_tokens = []
    for _ in range(max_new_tokens):
        token = torch.where(finished, pad_token_id, select(seq, logits))
        new_tokens.append(token)
        seq = torch.cat([seq, token[:, None]], dim=-1)
        finished |= eos_mask(token, eos_token_id)
        if finished.all() or len(new_tokens) == max_new_tokens:
            break
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
        logits = forward_with_cache(model, token[:, None], cache, attention_mask)  # decode: one token in
    return torch.stack(new_tokens, dim=1), cache

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.1-KV_Cache_and_Decoding/02-KV_Cache_from_Scratch.ipynb ----
import torch


@torch.inference_mode()
def decode_dynamic_cache(model, input_ids, max_new_tokens, select=greedy, eos_token_id=None, pad_token_id=0):
    """The same loop with transformers' DynamicCache, which the model fills inside each forward pass.
    Returns (new tokens, the cache). Rows must have no padding."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    seq = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    logits = model(input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
    new_tokens = []
    for _ in range(max_new_tokens):
        token = torch.where(finished, pad_token_id, select(seq, logits))
        new_tokens.append(token)
        seq = torch.cat([seq, token[:, None]], dim=-1)
        finished |= eos_mask(token, eos_token_id)
        if finished.all() or len(new_tokens) == max_new_tokens:
            break
        logits = model(token[:, None], past_key_values=cache, use_cache=True).logits[:, -1].float()
    return torch.stack(new_tokens, dim=1), cache
