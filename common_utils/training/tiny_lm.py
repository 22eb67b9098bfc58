"""A tiny character-level causal LM, the test bed of Lab-1.6 (MQA / GQA).

Two pre-norm blocks with learned positions, small enough to train on a CPU in seconds, so the lab can
measure what fewer K/V heads cost in quality. This module is plumbing: what the lab teaches, the
`GroupedQueryAttention` layer, the K/V-head pooling and the KV-cache arithmetic, is written in the
lab's notebooks and exported (`#@save gqa`) to `common_utils.reference.gqa`, which the blocks use.

* `train_and_save_tiny_lm`: 01-Setup's recipe for the MHA baseline (seed 0, AdamW, saved atomically).
* `load_or_train_tiny_lm`: what 02-04 call; `ensure` reuses 01's file or reruns the same recipe.
"""

from __future__ import annotations

from pathlib import Path

from common_utils.core.artifacts import atomic_file, ensure
from common_utils.reference.gqa import GroupedQueryAttention

import torch
import torch.nn.functional as F
from torch import nn

BASELINE_RECIPE = "Lab-1.6 01-Setup: train_and_save_tiny_lm, seed 0"


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

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
        """Logits for `ids` (batch, t) and the per-layer K/V cache (a list of (k, v) pairs)."""
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


def train_and_save_tiny_lm(path: str | Path, ids: torch.Tensor, steps: int,
                           **config) -> tuple[TinyCausalLM, list[tuple[int, float]]]:
    """01-Setup's recipe for the lab's baseline: seed 0, `train_tiny_lm` for `steps` steps, then save
    config, weights and loss history to `path` atomically. Returns (model, loss history)."""
    torch.manual_seed(0)
    model = TinyCausalLM(**config)
    history = train_tiny_lm(model, ids, steps)
    with atomic_file(path) as tmp:
        torch.save({"config": model.config, "state": model.state_dict(), "history": history}, tmp)
    return model, history


def load_tiny_lm(path: str | Path) -> tuple[TinyCausalLM, list[tuple[int, float]]]:
    """A model saved by `train_and_save_tiny_lm`, with its loss history."""
    saved = torch.load(path, weights_only=True)
    model = TinyCausalLM(**saved["config"])
    model.load_state_dict(saved["state"])
    return model, saved["history"]


def load_or_train_tiny_lm(path: str | Path, ids: torch.Tensor, steps: int,
                          **config) -> tuple[TinyCausalLM, list[tuple[int, float]]]:
    """The baseline 01-Setup saved at `path`; when it is missing, `ensure` says so and reruns the same
    recipe (`train_and_save_tiny_lm` with these settings), so every stage runs on its own."""
    ensure(path, lambda: train_and_save_tiny_lm(path, ids, steps, **config), made_by=BASELINE_RECIPE)
    return load_tiny_lm(path)


def extraction_lines(split: str) -> list[str]:
    """The course extraction rows as 'sentence => JSON' lines: the tiny char LM's training text."""
    from common_utils.data import load_course_dataset

    return [row["input"] + " => " + row["output"] for row in load_course_dataset("person_extraction", split)]


def course_char_data() -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """(train ids, valid ids, vocabulary) of the Lab-1.6 character corpus; valid characters missing
    from the training vocabulary map to id 0, as 01-Setup writes it out."""
    train_ids, vocab = char_corpus(extraction_lines("train"))
    valid_ids = torch.tensor([vocab.get(ch, 0) for ch in "\n".join(extraction_lines("valid"))])
    return train_ids, valid_ids, vocab


def load_lab_baseline(path: str | Path, sizes, train_ids: torch.Tensor, vocab: dict[str, int]) -> TinyCausalLM:
    """Lab-1.6's MHA baseline with the lab's sizes (n_kv_heads = n_heads), rebuilt by `ensure` when missing."""
    model, _ = load_or_train_tiny_lm(path, train_ids, sizes.train_steps, vocab_size=len(vocab),
                                     d_model=sizes.d_model, n_heads=sizes.n_heads, n_kv_heads=sizes.n_heads)
    return model
