"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/01-Benchmark_and_Scoring.ipynb
    04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/02-LM_Eval_Harness.ipynb
    04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/04-Contamination_and_Judge.ipynb

Edit the notebook's `#@save eval_harness` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/01-Benchmark_and_Scoring.ipynb ----
import torch


def split_continuation(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split the way lm_eval's HFLM does: trailing spaces of the context
    move to the continuation, the whole string is encoded once, and the continuation is every token after
    the context's own encoding length (BPE may merge across the boundary, so encoding the parts apart differs)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def continuation_loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 32) -> list[float]:
    """Sum of log p(continuation token | everything before it) for each (context, continuation) pair.

    Batched with right padding: position i's logits predict token i + 1, and padding sits after every
    real token, so it never enters a sum."""
    encoded = [split_continuation(tokenizer, context, continuation) for context, continuation in pairs]
    device = next(model.parameters()).device
    model.eval()
    sums: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        rows = [context + continuation for context, continuation in batch]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for i, (context, continuation) in enumerate(batch):
            first = len(context)  # index of the first continuation token
            logprobs = logits[i, first - 1:first - 1 + len(continuation)].float().log_softmax(-1)
            sums.append(logprobs.gather(-1, torch.tensor(continuation, device=device)[:, None]).sum().item())
    return sums

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/01-Benchmark_and_Scoring.ipynb ----
def mc_pairs(rows: list[dict], prompt_fn, shots: list[dict] = ()) -> list[tuple[str, str]]:
    """Four (prompt, " " + option) pairs per row, option order A-D: lm_eval's multiple_choice requests
    (target delimiter " ")."""
    return [(prompt_fn(row, shots), " " + row[letter]) for row in rows for letter in "ABCD"]


def score_multiple_choice(loglikelihoods: list[float], rows: list[dict]) -> dict:
    """Per-item predictions and accuracy from four log-likelihoods per row: raw argmax (acc), divided by
    the option's characters (acc_norm) and by its UTF-8 bytes (acc_bytes), as lm_eval defines them."""
    lls = torch.tensor(loglikelihoods, dtype=torch.float64).view(len(rows), 4)
    options = [[row[letter] for letter in "ABCD"] for row in rows]
    chars = torch.tensor([[len(o) for o in opts] for opts in options], dtype=torch.float64)
    utf8 = torch.tensor([[len(o.encode("utf-8")) for o in opts] for opts in options], dtype=torch.float64)
    gold = torch.tensor(["ABCD".index(row["answer"]) for row in rows])
    result = {"loglikelihoods": lls.tolist(), "gold": gold.tolist()}
    for name, scores in [("acc", lls), ("acc_norm", lls / chars), ("acc_bytes", lls / utf8)]:
        pred = scores.argmax(-1)
        result[f"{name}_pred"] = pred.tolist()
        result[f"{name}_correct"] = (pred == gold).int().tolist()
        result[name] = (pred == gold).double().mean().item()
    return result


def evaluate_multiple_choice(model, tokenizer, rows: list[dict], prompt_fn, shots: list[dict] = (),
                             batch_size: int = 32) -> dict:
    """Our whole harness for one model: requests, log-likelihoods, scores."""
    pairs = mc_pairs(rows, prompt_fn, shots)
    return score_multiple_choice(continuation_loglikelihoods(model, tokenizer, pairs, batch_size), rows)

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/01-Benchmark_and_Scoring.ipynb ----
import json
from pathlib import Path


def own_scores(model, tokenizer, rows: list[dict], dev: list[dict], num_fewshot: int, prompt_fn,
               batch_size: int = 32) -> dict:
    """Our scorer zero-shot and with the first `num_fewshot` dev exemplars (lm_eval's first_n sampler)."""
    return {"zero_shot": evaluate_multiple_choice(model, tokenizer, rows, prompt_fn, [], batch_size),
            "few_shot": evaluate_multiple_choice(model, tokenizer, rows, prompt_fn, dev[:num_fewshot], batch_size)}


def write_json(path, value) -> Path:
    """Write `value` as JSON atomically (a later stage reuses it through `ensure`)."""
    from common_utils.core.artifacts import atomic_file

    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    return Path(path)

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/02-LM_Eval_Harness.ipynb ----
import math  # noqa: F811 (a #@save cell carries its own imports)

import numpy as np


def bootstrap_ci(correct, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Accuracy with a percentile bootstrap interval (Efron 1979): resample the items with replacement."""
    values = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return {"mean": float(values.mean()), "low": float(np.quantile(means, tail)),
            "high": float(np.quantile(means, 1 - tail)), "n": len(values)}


def paired_bootstrap_diff(correct_a, correct_b, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Accuracy difference a - b on the same items with a paired percentile bootstrap interval (the
    items are resampled together, so what both models get right or wrong cancels)."""
    result = bootstrap_ci(np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float),
                          n_resamples, confidence, seed)
    return {**result, "half_width": (result["high"] - result["low"]) / 2}


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test: b = items only a gets right, c = items only b gets right; under 'equally good'
    b ~ Binomial(b + c, 1/2). Two-sided p = 2 * P(X <= min(b, c)), capped at 1."""
    a, b_ = np.asarray(correct_a, dtype=int), np.asarray(correct_b, dtype=int)
    only_a, only_b = int(((a == 1) & (b_ == 0)).sum()), int(((a == 0) & (b_ == 1)).sum())
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": min(1.0, 2 * tail)}


def items_needed(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items per model for a two-sided two-proportion z-test to detect p_a vs p_b (independent samples;
    a paired design on the same items needs fewer when the models agree on most items)."""
    from statistics import NormalDist

    z_alpha, z_beta = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    p_bar = (p_a + p_b) / 2
    numerator = z_alpha * math.sqrt(2 * p_bar * (1 - p_bar)) + z_beta * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    return math.ceil((numerator / (p_a - p_b)) ** 2)

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/04-Contamination_and_Judge.ipynb ----
import re

_NGRAM_TOKEN = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]")


def ngram_tokens(text: str) -> list[str]:
    """Lower-cased words (a-z, 0-9) and single CJK characters; punctuation and case are dropped, so a copy
    with other formatting still matches."""
    return _NGRAM_TOKEN.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """Every run of n consecutive tokens (none when the text is shorter than n)."""
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def mc_item_text(row: dict) -> str:
    """A test item as it would be copied: question, then the lettered options."""
    return " ".join([row["question"], *(f"{letter}. {row[letter]}" for letter in "ABCD")])


def overlap_fractions(item_texts: list[str], corpus_texts: list[str], n: int) -> list[float]:
    """Share of each item's distinct n-grams that occur anywhere in the corpus (0 for items shorter than n)."""
    seen = set().union(*(ngrams(ngram_tokens(text), n) for text in corpus_texts))
    fractions = []
    for text in item_texts:
        grams = ngrams(ngram_tokens(text), n)
        fractions.append(len(grams & seen) / len(grams) if grams else 0.0)
    return fractions


def contamination_flags(item_texts: list[str], corpus_texts: list[str], n: int, threshold: float | None = None) -> list[bool]:
    """threshold None: GPT-3's rule, flag an item when any of its n-grams is in the corpus; otherwise PaLM's
    rule, flag it when at least `threshold` of its n-grams are."""
    fractions = overlap_fractions(item_texts, corpus_texts, n)
    return [f > 0 if threshold is None else f >= threshold for f in fractions]

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.1-Evaluation_Harness/04-Contamination_and_Judge.ipynb ----
def judge_prompt(tokenizer, question: str, first: str, second: str) -> str:
    """Chat prompt asking which of two answers is correct; the judge's verdict is the next token, A or B."""
    messages = [{"role": "system", "content": "You are a strict judge. Reply with one letter: A or B."},
                {"role": "user", "content": f"Question: {question}\nAnswer A: {first}\nAnswer B: {second}\n"
                                            "Which answer is correct?"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def pairwise_verdicts(model, tokenizer, pairs: list[tuple[str, str, str]], batch_size: int = 32) -> list[str]:
    """'A' or 'B' for each (question, first, second): whichever letter the judge finds more likely next."""
    requests = [(judge_prompt(tokenizer, q, a, b), letter) for q, a, b in pairs for letter in ("A", "B")]
    lls = continuation_loglikelihoods(model, tokenizer, requests, batch_size)
    return ["A" if lls[2 * i] >= lls[2 * i + 1] else "B" for i in range(len(pairs))]


def swap_consistency(verdicts: list[str], swapped: list[str]) -> dict:
    """Each pair judged as (x, y) and as (y, x). Consistent: the same *answer* wins both times (A then B);
    otherwise the verdict followed the position (A, A or B, B)."""
    consistent = [v != s for v, s in zip(verdicts, swapped)]
    return {"pairs": len(verdicts), "consistency": sum(consistent) / len(verdicts),
            "first_position_rate": (verdicts + swapped).count("A") / (2 * len(verdicts))}
