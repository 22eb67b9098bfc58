"""Scoring what models generate: batched greedy decoding, exact match, JSON validity, perplexity.

Checkpoint cells score generations rather than trusting the training loss: a collapsed model can
log a low loss while it repeats tokens (measured in COURSE_DESIGN §3).
"""

from __future__ import annotations

import json
import math
from typing import Any


def generate_batch(model, tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                   batch_size: int = 64, show_progress: bool = True) -> list[str]:
    """Greedy replies to chat conversations, decoded in left-padded batches with the KV cache on.

    Large batches: decoding a small model is bound by reading its weights once per token, so one
    batch of 40 prompts costs about as much as one prompt (COURSE_DESIGN §3 measurements)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    replies: list[str] = []
    try:
        starts = range(0, len(conversations), batch_size)
        for start in tqdm(starts, desc="generate", disable=not show_progress):
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                     for c in conversations[start:start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                        pad_token_id=tokenizer.pad_token_id)
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            replies.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = previous_side
    return replies


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The reply parsed as a JSON object, or None. Strict: the whole reply must be the object."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def score_extraction(predictions: list[str], references: list[str | dict[str, Any]]) -> dict[str, float]:
    """Exact match (parsed object equals the reference), JSON validity, and per-field accuracy."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need equal, non-empty lists; got {len(predictions)} predictions, {len(references)} references")
    refs = [json.loads(r) if isinstance(r, str) else r for r in references]
    parsed = [parse_json_object(p) for p in predictions]
    n = len(refs)
    scores = {
        "n": n,
        "exact_match": sum(p == r for p, r in zip(parsed, refs)) / n,
        "json_valid": sum(p is not None for p in parsed) / n,
    }
    for key in refs[0]:
        scores[f"field_{key}"] = sum(p is not None and p.get(key) == r[key] for p, r in zip(parsed, refs)) / n
    return scores


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
