"""Multi-head, multi-query and grouped-query attention (MHA / MQA / GQA) in one small module.

One class covers all three: `n_kv_heads == n_heads` is MHA, `n_kv_heads == 1` is MQA (Shazeer, 2019),
anything in between is GQA (Ainslie et al., 2023). `pool_kv_heads` converts a checkpoint to fewer
K/V heads by mean-pooling each group's projections, the conversion the GQA paper uses before
uptraining. `TinyCausalLM` is a two-layer character model small enough to train on a CPU in seconds,
so the labs can measure the quality cost of fewer K/V heads. Importing this module imports torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, bytes_per_element: int) -> int:
    """K and V for every layer: 2 * layers * kv_heads * head_dim * bytes per element."""
    return 2 * layers * kv_heads * head_dim * bytes_per_element


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with `n_kv_heads` K/V heads shared by groups of query heads."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"need d_model % n_heads == 0 and n_heads % n_kv_heads == 0, got "
                             f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: (batch, new tokens, d_model). Returns (output, (k, v)) where k, v are the cache to
        pass back next time: (batch, n_kv_heads, all tokens so far, head_dim)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        group = self.n_heads // self.n_kv_heads
        k_full, v_full = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        # With a cache, the t new queries sit at the end: a bottom-right aligned causal mask.
        mask = torch.ones(t, k.size(2), dtype=torch.bool, device=x.device).tril(diagonal=k.size(2) - t)
        out = F.scaled_dot_product_attention(q, k_full, v_full, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


def pool_kv_heads(attention: GroupedQueryAttention, n_kv_heads: int) -> GroupedQueryAttention:
    """A copy of `attention` with `n_kv_heads` K/V heads, each the mean of a group of the old heads'
    K and V projections (Ainslie et al., 2023, section 2.1). Query and output weights are copied."""
    if attention.n_kv_heads % n_kv_heads:
        raise ValueError(f"{attention.n_kv_heads} K/V heads cannot be pooled into {n_kv_heads} equal groups")
    d_model = attention.q_proj.in_features
    pooled = GroupedQueryAttention(d_model, attention.n_heads, n_kv_heads).to(attention.q_proj.weight)
    pooled.q_proj.load_state_dict(attention.q_proj.state_dict())
    pooled.o_proj.load_state_dict(attention.o_proj.state_dict())
    for name in ["k_proj", "v_proj"]:
        weight = getattr(attention, name).weight.data  # (old_kv * head_dim, d_model)
        grouped = weight.view(n_kv_heads, attention.n_kv_heads // n_kv_heads, attention.head_dim, d_model)
        getattr(pooled, name).weight.data.copy_(grouped.mean(dim=1).reshape(-1, d_model))
    return pooled


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = GroupedQueryAttention(d_model, n_heads, n_kv_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x, past=None):
        attended, cache = self.attn(self.norm1(x), past)
        x = x + attended
        return x + self.mlp(self.norm2(x)), cache


class TinyCausalLM(nn.Module):
    """A small decoder-only LM (learned positions, pre-norm blocks) with configurable K/V heads."""

    def __init__(self, vocab_size: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 8,
                 n_kv_heads: int = 8, max_len: int = 512) -> None:
        super().__init__()
        self.config = {"vocab_size": vocab_size, "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
                       "n_kv_heads": n_kv_heads, "max_len": max_len}
        self.embed, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, n_kv_heads) for _ in range(n_layers))
        self.norm, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor, past: list | None = None):
        """Logits for `ids` (batch, t) and the per-layer K/V cache."""
        start = 0 if past is None else past[0][0].size(2)
        x = self.embed(ids) + self.pos(torch.arange(start, start + ids.size(1), device=ids.device))
        caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, None if past is None else past[i])
            caches.append(cache)
        return self.head(self.norm(x)), caches

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, list]:
        """Greedy decoding with the K/V cache; returns (all ids, final cache)."""
        logits, past = self(ids)
        out = [ids]
        for _ in range(new_tokens):
            next_id = logits[:, -1:].argmax(dim=-1)
            out.append(next_id)
            logits, past = self(next_id, past)
        return torch.cat(out, dim=1), past

    def with_kv_heads(self, n_kv_heads: int) -> TinyCausalLM:
        """A copy whose attention layers are mean-pooled to `n_kv_heads` K/V heads (GQA conversion)."""
        converted = TinyCausalLM(**{**self.config, "n_kv_heads": n_kv_heads}).to(self.head.weight)
        state = {k: v for k, v in self.state_dict().items() if ".attn.k_proj" not in k and ".attn.v_proj" not in k}
        converted.load_state_dict(state, strict=False)
        for old, new in zip(self.blocks, converted.blocks):
            new.attn = pool_kv_heads(old.attn, n_kv_heads)
        return converted


def char_corpus(texts: list[str]) -> tuple[torch.Tensor, dict[str, int]]:
    """Character-level ids of the joined texts and the vocabulary, for the tiny LM."""
    text = "\n".join(texts)
    vocab = {ch: i for i, ch in enumerate(sorted(set(text)))}
    return torch.tensor([vocab[ch] for ch in text], dtype=torch.long), vocab


def random_windows(ids: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` random windows of `length` + 1 tokens (inputs and next-token targets)."""
    starts = torch.randint(0, ids.numel() - length - 1, (batch,), generator=generator)
    return torch.stack([ids[s:s + length + 1] for s in starts.tolist()])


def train_tiny_lm(model: TinyCausalLM, ids: torch.Tensor, steps: int, batch: int = 16, length: int = 128,
                  lr: float = 3e-3, seed: int = 0) -> list[tuple[int, float]]:
    """A plain AdamW loop (the lab teaches attention, not the trainer); returns (step, loss) pairs."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for step in range(steps):
        loss = model.loss(random_windows(ids, batch, length, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append((step + 1, loss.item()))
    return history


@torch.no_grad()
def eval_loss(model: TinyCausalLM, ids: torch.Tensor, length: int = 128, windows: int = 32) -> float:
    """Mean next-token loss over fixed, evenly spaced windows of held-out ids."""
    model.eval()
    starts = torch.linspace(0, ids.numel() - length - 2, windows).long().tolist()
    batch = torch.stack([ids[s:s + length + 1] for s in starts])
    return float(model.loss(batch))


def perplexity_from_loss(loss: float) -> float:
    return math.exp(loss)


def kv_cache_bytes(cache) -> int:
    """Bytes held by a K/V cache: `TinyCausalLM`'s list of (k, v) pairs, or a transformers `Cache`
    (its `.layers[i].keys` / `.values`)."""
    layers = getattr(cache, "layers", None)
    pairs = [(layer.keys, layer.values) for layer in layers] if layers is not None else cache
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pairs)


def load_or_train_tiny_lm(path, ids: torch.Tensor, steps: int, **config) -> tuple[TinyCausalLM, list]:
    """The lab's MHA baseline: load it from `path` when 01-Setup saved it, otherwise say so and train
    it with the same settings (so every stage runs on its own). Returns (model, loss history)."""
    from pathlib import Path

    from common_utils.core.artifacts import atomic_file

    path = Path(path)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model = TinyCausalLM(**saved["config"])
        model.load_state_dict(saved["state"])
        return model, saved["history"]
    print(f"{path} not found: training the baseline again with the same settings as 01-Setup ({steps} steps).")
    torch.manual_seed(0)
    model = TinyCausalLM(**config)
    history = train_tiny_lm(model, ids, steps)
    with atomic_file(path) as tmp:
        torch.save({"config": model.config, "state": model.state_dict(), "history": history}, tmp)
    return model, history
