"""Evaluation metrics that do not belong to one task (chapter 04 fills this room: harness, statistics).

Today: perplexity over plain texts and over fixed-length token blocks, the measure compression and
distillation labs report.
"""

from __future__ import annotations

import math


def perplexity(model, tokenizer, texts: list[str], max_length: int = 256, batch_size: int = 8) -> float:
    """exp(mean negative log-likelihood per predicted token) over `texts`, padding excluded."""
    import torch

    model.eval()
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length).to(model.device)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        with torch.inference_mode():
            logits = model(**batch).logits[:, :-1].float()
        targets = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total_nll += nll.item()
        total_tokens += int((targets != -100).sum())
    return math.exp(total_nll / total_tokens)


def block_token_nll(model, blocks, batch_size: int = 4):
    """Next-token negative log-likelihood at every predicted position of fixed-length token blocks
    (rows of a LongTensor, no padding), shape (n_blocks, block_tokens - 1), on the CPU.

    Two models scored on the same blocks are paired token by token: the per-token differences feed
    paired tests (Lab-3.3's bootstrap), their mean gives `block_perplexity`."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size].to(device)
            logits = model(batch).logits[:, :-1].float()
            rows.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").cpu())
    return torch.cat(rows)


def block_perplexity(model, blocks, batch_size: int = 4) -> float:
    """exp(mean next-token NLL) over fixed-length token blocks: every position but the first of each
    block is predicted, so models compared on the same blocks are scored on exactly the same tokens
    (chapter 03 compares compressed models this way)."""
    return math.exp(block_token_nll(model, blocks, batch_size).double().mean().item())
