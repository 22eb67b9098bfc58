"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/01-Corpus_and_Filters.ipynb
    04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/02-MinHash_Dedup.ipynb
    04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/03-IFD_and_Diversity.ipynb

Edit the notebook's `#@save data_selection` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/01-Corpus_and_Filters.ipynb ----
import re

# C4 / Gopher-style phrases that mark navigation, consent and template text rather than content.
BOILERPLATE_PHRASES = ("cookie", "privacy policy", "terms of use", "javascript", "lorem ipsum",
                       "all rights reserved", "subscribe to our newsletter", "click here", "read more",
                       "skip to main content")


def alpha_word_fraction(text: str) -> float:
    """Gopher: the share of words that contain at least one letter (menus and tables have many that don't)."""
    words = text.split()
    return sum(any(ch.isalpha() for ch in w) for w in words) / max(1, len(words))


def duplicate_line_fraction(text: str) -> float:
    """Gopher's repetition rule: the share of (non-empty) lines that repeat an earlier line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


def latin_letter_fraction(text: str) -> float:
    """Language ID by script: the share of letters that are ASCII Latin (English prose is ~1.0, zh-TW ~0)."""
    letters = [ch for ch in text if ch.isalpha()]
    return sum(ch.isascii() for ch in letters) / max(1, len(letters))


def heuristic_flags(text: str, min_words: int = 15, max_words: int = 600, min_alpha_words: float = 0.8,
                    max_dup_lines: float = 0.1, min_latin: float = 0.8) -> dict[str, bool]:
    """Which rule flags a document (True = drop it). Thresholds scaled from Gopher (Rae et al., 2021) and
    C4 (Raffel et al., 2020) to paragraph-sized documents; each rule targets one kind of junk."""
    words = len(text.split())
    lowered = text.lower()
    return {
        "non_latin_script": latin_letter_fraction(text) < min_latin,
        "too_short": words < min_words,
        "too_long": words > max_words,
        "few_alpha_words": alpha_word_fraction(text) < min_alpha_words,
        "repeated_lines": duplicate_line_fraction(text) > max_dup_lines,
        "boilerplate_phrase": any(phrase in lowered for phrase in BOILERPLATE_PHRASES),
    }


def precision_recall(flagged: list[bool], truth: list[bool]) -> dict[str, float]:
    """Precision = flagged and true / flagged; recall = flagged and true / true (1.0 when nothing to find)."""
    tp = sum(f and t for f, t in zip(flagged, truth))
    n_flagged, n_true = sum(flagged), sum(truth)
    return {"precision": tp / n_flagged if n_flagged else 1.0, "recall": tp / n_true if n_true else 1.0,
            "flagged": n_flagged, "true": n_true}

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/01-Corpus_and_Filters.ipynb ----
import re  # noqa: F811 (a #@save cell carries its own imports)

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PHONE = re.compile(r"(?:\+\d{1,3}[\s-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s-])\d{3}-\d{4}\b")
TW_ID = re.compile(r"\b[A-Z][12]\d{8}\b")
CARD = re.compile(r"\b\d{4}(?:[ -]?\d{4}){3}\b")
TW_ID_CODES = dict(zip("ABCDEFGHJKLMNPQRSTUVXYWZIO", range(10, 36)))  # the letter order of the ID's checksum


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of payment cards: double every second digit from the right, sum digits, mod 10."""
    digits = [int(ch) for ch in number if ch.isdigit()]
    total = sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(reversed(digits)))
    return total % 10 == 0


def tw_id_valid(value: str) -> bool:
    """Taiwan's national ID checksum: the letter becomes two digits, weights 1,9,8,...,1,1, sum mod 10 == 0."""
    code = TW_ID_CODES[value[0]]
    digits = [code // 10, code % 10, *map(int, value[1:])]
    return sum(d * w for d, w in zip(digits, (1, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1))) % 10 == 0


PII_RULES = [("email", EMAIL, None), ("card", CARD, luhn_valid), ("tw_id", TW_ID, tw_id_valid), ("phone", PHONE, None)]


def mask_pii(text: str, use_checksum: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """Replace PII with [EMAIL], [CARD], [TW_ID], [PHONE]; returns the masked text and what was masked.
    Regexes find candidates; the checksum (where the format has one) rejects look-alikes such as part
    numbers and order references, which a regex alone would mask."""
    found: list[tuple[str, str]] = []

    def replace(kind, check):
        def sub(match):
            if use_checksum and check is not None and not check(match.group(0)):
                return match.group(0)
            found.append((kind, match.group(0)))
            return f"[{kind.upper()}]"
        return sub

    for kind, pattern, check in PII_RULES:
        text = pattern.sub(replace(kind, check), text)
    return text, found

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/01-Corpus_and_Filters.ipynb ----
import json
import random
import time
from pathlib import Path


def arm_rows(pool: list[dict], arm: str, fraction: float, seed: int, selected_ids=()) -> list[dict]:
    """The training rows of one arm of the selection experiment: 'all' the pool, 'random' a seeded random
    fraction of it, 'selected' the rows chosen by IFD + diversity (03), 'base' none (the untrained model)."""
    if arm == "all":
        return list(pool)
    if arm == "random":
        return random.Random(seed).sample(pool, round(fraction * len(pool)))
    if arm == "selected":
        by_id = {row["id"]: row for row in pool}
        return [by_id[i] for i in selected_ids]
    if arm == "base":
        return []
    raise ValueError(f"unknown arm {arm!r}: use 'all', 'random', 'selected' or 'base'")


def train_and_score(rows: list[dict], sizes) -> dict:
    """LoRA (all linear layers, r = sizes.lora_r) trained for sizes.train_steps AdamW steps of sizes.batch_size
    rows drawn from `rows` (seeded reshuffled epochs), loss on the answer and its end-of-turn token only; then
    greedy replies to the first sizes.eval_samples person_extraction test rows, each scored with
    score_extraction. No rows (or 0 steps): the base model is scored. Same recipe and seed for every arm."""
    import torch
    from peft import LoraConfig, get_peft_model

    from common_utils.core.generation import generate_batch
    from common_utils.core.models import load_causal_lm
    from common_utils.core.runtime import seed_everything
    from common_utils.data import load_course_dataset
    from common_utils.reference.distill import task_batch
    from common_utils.tasks.extraction import extraction_messages, score_extraction

    seed_everything(sizes.seed)
    model, tokenizer = load_causal_lm(sizes.model)
    losses, seen, start = [], [], time.perf_counter()
    if rows and sizes.train_steps:
        model = get_peft_model(model, LoraConfig(r=sizes.lora_r, lora_alpha=2 * sizes.lora_r, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        batch = task_batch(tokenizer, [extraction_messages(r, with_answer=True) for r in rows],
                           [extraction_messages(r) for r in rows])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=sizes.learning_rate)
        rng, order = random.Random(sizes.seed), []
        while len(order) < sizes.train_steps * sizes.batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        model.train()
        for step in range(sizes.train_steps):
            picked = order[step * sizes.batch_size:(step + 1) * sizes.batch_size]
            width = int(batch["attention_mask"][picked].sum(1).max())  # drop the all-padding tail
            part = {k: v[picked, :width].to(model.device) for k, v in batch.items()}
            loss = model(**part).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            seen += [rows[i]["id"] for i in picked]
        model.eval()
    train_seconds = time.perf_counter() - start
    test = list(load_course_dataset("person_extraction", "test", limit=sizes.eval_samples))
    replies = generate_batch(model, tokenizer, [extraction_messages(r) for r in test], sizes.max_new_tokens,
                             show_progress=False)
    exact = [score_extraction([reply], [row["output"]])["exact_match"] for reply, row in zip(replies, test)]
    return {"rows": len(rows), "train_steps": sizes.train_steps if rows else 0, "batch_size": sizes.batch_size,
            "losses": losses, "seen_ids": seen, "train_seconds": train_seconds, "replies": replies,
            "exact": exact, "exact_match": sum(exact) / len(exact), "json_valid": score_extraction(
                replies, [row["output"] for row in test])["json_valid"]}


def ensure_arm(path, rows: list[dict], sizes, made_by: str) -> dict:
    """The arm's result JSON if a stage already trained it on these rows with this budget; else train and
    score it with train_and_score (the same recipe every stage uses) and save it atomically."""
    from common_utils.core.artifacts import atomic_file, ensure

    ids = [row["id"] for row in rows]

    def build() -> None:
        result = {**train_and_score(rows, sizes), "row_ids": ids}
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps(result))

    ensure(path, build, made_by=made_by)
    result = json.loads(Path(path).read_text())
    budget = sizes.train_steps if rows else 0
    if result["row_ids"] != ids or result["train_steps"] != budget or len(result["exact"]) != sizes.eval_samples:
        raise ValueError(f"{path} was made from other rows or sizes: delete it and rerun this cell")
    return result

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/02-MinHash_Dedup.ipynb ----
import hashlib

import numpy as np

MERSENNE_31 = (1 << 31) - 1


def word_shingles(text: str, n: int = 5) -> set[str]:
    """The document's word n-grams (lower-cased, whitespace-split), joined by spaces."""
    words = text.lower().split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def shingle_hashes(items: set[str]) -> np.ndarray:
    """Each shingle as a 32-bit integer: the first 4 bytes of its SHA-1, little-endian (datasketch's sha1_hash32)."""
    return np.array([int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little") for s in items],
                    dtype=np.uint64)


def minhash_permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Parameters of num_perm hash functions h(x) = (a*x + b) mod p, p = 2^31 - 1, 1 <= a < p, 0 <= b < p.
    With x < p too, a*x + b < 2^62 never overflows uint64, and a*x wraps around p many times: that
    wrapping is what makes each function a different pseudo-random order of the shingles."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, MERSENNE_31, num_perm, dtype=np.uint64),
            rng.integers(0, MERSENNE_31, num_perm, dtype=np.uint64))


def minhash_signature(items: set[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature: for every hash function, the minimum over the document's shingles."""
    p = np.uint64(MERSENNE_31)
    hashes = shingle_hashes(items)[:, None] % p
    return ((hashes * a + b) % p).min(axis=0)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of positions where two signatures agree: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(sig_a == sig_b))

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/02-MinHash_Dedup.ipynb ----
import numpy as np  # noqa: F811 (a #@save cell carries its own imports)


def candidate_probability(s, bands: int, rows: int):
    """P(a pair with Jaccard s shares at least one band) = 1 - (1 - s^r)^b: the LSH S-curve."""
    return 1 - (1 - np.asarray(s, dtype=float) ** rows) ** bands


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted areas of false positives (the
    S-curve below the threshold) and false negatives (1 - S-curve above it), as datasketch chooses them."""
    below, above = np.linspace(0, threshold, 201), np.linspace(threshold, 1, 201)
    best, best_cost = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(below, bands, rows), below)
            fn = np.trapezoid(1 - candidate_probability(above, bands, rows), above)
            cost = fp_weight * fp + fn_weight * fn
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


def lsh_candidates(signatures: dict, bands: int, rows: int) -> set[tuple]:
    """Pairs of keys whose signatures agree on all rows of at least one band (sorted key pairs)."""
    buckets: dict[tuple, list] = {}
    for key, signature in signatures.items():
        for band in range(bands):
            buckets.setdefault((band, signature[band * rows:(band + 1) * rows].tobytes()), []).append(key)
    return {tuple(sorted((keys[i], keys[j]))) for keys in buckets.values()
            for i in range(len(keys)) for j in range(i + 1, len(keys))}


def near_duplicate_pairs(signatures: dict, threshold: float, num_perm: int) -> set[tuple]:
    """LSH candidates at the threshold's (bands, rows), kept when their estimated Jaccard >= threshold."""
    bands, rows = lsh_params(threshold, num_perm)
    return {pair for pair in lsh_candidates(signatures, bands, rows)
            if estimated_jaccard(signatures[pair[0]], signatures[pair[1]]) >= threshold}

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/03-IFD_and_Diversity.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)
import torch.nn.functional as F


def ifd_batches(tokenizer, rows: list[dict]) -> tuple[dict, dict]:
    """Two right-padded batches over the same answer tokens (answer + end-of-turn), labels -100 elsewhere:
    `conditioned` = the full chat prompt (instruction and input) then the answer; `direct` = only the
    assistant header then the answer (the instruction removed)."""
    from common_utils.reference.distill import task_batch
    from common_utils.tasks.extraction import extraction_messages

    conditioned = task_batch(tokenizer, [extraction_messages(r, with_answer=True) for r in rows],
                             [extraction_messages(r) for r in rows])
    ids, labels = [], []
    for row, ids_row, labels_row in zip(rows, conditioned["input_ids"], conditioned["labels"]):
        prompt = tokenizer.apply_chat_template(extraction_messages(row), tokenize=True, return_dict=False)
        with_header = tokenizer.apply_chat_template(extraction_messages(row), tokenize=True,
                                                    add_generation_prompt=True, return_dict=False)
        header = with_header[len(prompt):]  # e.g. "<|im_start|>assistant\n"
        answer = ids_row[labels_row != -100].tolist()
        ids.append(header + answer)
        labels.append([-100] * len(header) + answer)
    width, pad = max(map(len, ids)), tokenizer.pad_token_id
    direct = {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in ids]),
              "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
              "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels])}
    return conditioned, direct


def answer_nll(model, batch: dict, batch_size: int = 16) -> torch.Tensor:
    """Mean next-token negative log-likelihood over each row's labelled tokens (teacher forcing), shape (rows,)."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(batch["input_ids"]), batch_size):
            part = {k: v[start:start + batch_size] for k, v in batch.items()}
            width = int(part["attention_mask"].sum(1).max())
            ids, mask, labels = (part[k][:, :width].to(device) for k in ("input_ids", "attention_mask", "labels"))
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            keep = target != -100
            # cross-entropy over a contiguous (tokens, vocab) view: log-softmax over a strided class dimension
            # (logits.transpose(1, 2)) summed 49,152 terms less accurately here (~1e-4 nats, measured in README)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1).clamp(min=0),
                                  reduction="none").view_as(target) * keep
            out.append((nll.sum(1) / keep.sum(1)).cpu())
    return torch.cat(out)


def ifd_scores(model, tokenizer, rows: list[dict], batch_size: int = 16) -> dict[str, torch.Tensor]:
    """IFD = PPL(answer | instruction) / PPL(answer) for every row (Li et al., 2023), with both perplexities."""
    conditioned, direct = ifd_batches(tokenizer, rows)
    ppl_conditioned = answer_nll(model, conditioned, batch_size).exp()
    ppl_direct = answer_nll(model, direct, batch_size).exp()
    return {"ppl_conditioned": ppl_conditioned, "ppl_direct": ppl_direct, "ifd": ppl_conditioned / ppl_direct}

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/03-IFD_and_Diversity.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)


def mean_pooled_embeddings(encoder, tokenizer, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: the last hidden states averaged over the real
    (non-padding) tokens, then L2-normalised; shape (len(texts), hidden)."""
    device = next(encoder.parameters()).device
    encoder.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=128,
                              return_tensors="pt").to(device)
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu())
    return torch.cat(out)


def k_center_greedy(embeddings: torch.Tensor, k: int, first: int = 0) -> list[int]:
    """Farthest-point traversal: start from `first`, then repeatedly add the point whose cosine distance to
    its nearest chosen point is largest. A 2-approximation of the k-center problem (Gonzalez, 1985)."""
    distance = 1 - embeddings @ embeddings[first]
    chosen = [first]
    while len(chosen) < min(k, len(embeddings)):
        nxt = int(distance.argmax())
        chosen.append(nxt)
        distance = torch.minimum(distance, 1 - embeddings @ embeddings[nxt])
    return chosen


def covering_radius(embeddings: torch.Tensor, chosen: list[int]) -> float:
    """The largest cosine distance from any point to its nearest chosen point (what k-center minimises)."""
    return float((1 - embeddings @ embeddings[chosen].T).min(dim=1).values.max())


def select_ifd_diverse(ifd: torch.Tensor, embeddings: torch.Tensor, k: int, pool_factor: int = 2) -> list[int]:
    """DEITA-style selection in two steps: quality, then diversity. Rows with IFD >= 1 are dropped (the
    instruction does not lead to the answer, Li et al. 2023); of the rest, the pool_factor * k highest-IFD rows
    are candidates, and k-center greedy (from the highest-IFD row) picks k of them. Returns pool indices."""
    candidates = [i for i in torch.argsort(ifd, descending=True).tolist() if ifd[i] < 1][:pool_factor * k]
    picked = k_center_greedy(embeddings[candidates], k, first=0)
    return [candidates[j] for j in picked]

# ---- from 04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.2-Data_Filtering/03-IFD_and_Diversity.ipynb ----
import json  # noqa: F811 (a #@save cell carries its own imports)
from pathlib import Path  # noqa: F811


def build_selection(pool: list[dict], sizes) -> dict:
    """The whole of 03 in one call (for a later stage that finds no selection.json): IFD with the course
    model, MiniLM embeddings, then select_ifd_diverse for round(select_fraction * len(pool)) rows."""
    from common_utils.core.models import load_causal_lm, load_encoder

    model, tokenizer = load_causal_lm(sizes.model)
    ifd = ifd_scores(model, tokenizer, pool, sizes.ifd_batch)["ifd"]
    encoder, encoder_tokenizer = load_encoder(sizes.encoder)
    embeddings = mean_pooled_embeddings(encoder, encoder_tokenizer, [f"{r['input']}\n{r['output']}" for r in pool])
    picked = select_ifd_diverse(ifd, embeddings, round(sizes.select_fraction * len(pool)))
    return {"selected_ids": [pool[i]["id"] for i in picked], "ifd": {r["id"]: float(v) for r, v in zip(pool, ifd)}}


def save_selection(path, selection: dict) -> None:
    """Write the selection JSON atomically (what 04 reads)."""
    from common_utils.core.artifacts import atomic_file

    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(selection))
