"""Alpaca-format instruction data (instruction / input / output) and the Alpaca prompt template.

Stanford Alpaca (Taori et al., 2023) fine-tunes on records with three fields and renders them with a
fixed prompt; the loss is taken on the response only. The course's own extraction data already has
the three fields, so `to_alpaca` validates and trims a record instead of renaming it, and the offline
labs train on it. With `source="hub"` (Lab-1.3's `data_source` in its full sizes) `load_alpaca` reads
`tatsu-lab/alpaca` from the hub and falls back, with a message, to the course data when the hub cannot
be reached.
"""

from __future__ import annotations

from typing import Any

from common_utils.data import IGNORE_INDEX

ALPACA_FIELDS = ("instruction", "input", "output")
ALPACA_HUB_ID = "tatsu-lab/alpaca"

# The two prompts of the Stanford Alpaca repository (train.py, PROMPT_DICT), verbatim.
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def to_alpaca(record: dict[str, Any]) -> dict[str, str]:
    """One record as an Alpaca example: exactly instruction, input ('' when absent) and output.

    Extra keys (e.g. the course's `id`) are dropped; a missing or empty instruction/output raises,
    because a silently empty field would train the model to answer with nothing."""
    missing = [key for key in ("instruction", "output") if not str(record.get(key) or "").strip()]
    if missing:
        raise ValueError(f"not an Alpaca record: missing or empty {missing} in keys {sorted(record)}; "
                         "every example needs an instruction and an output (input may be empty)")
    return {"instruction": str(record["instruction"]), "input": str(record.get("input") or ""),
            "output": str(record["output"])}


def alpaca_prompt(example: dict[str, str]) -> str:
    """The prompt the model sees: the template with or without the Input section, ending at 'Response:'."""
    example = to_alpaca({**example, "output": example.get("output") or "-"})
    template = PROMPT_WITH_INPUT if example["input"].strip() else PROMPT_NO_INPUT
    return template.format(**example)


def load_alpaca(split: str = "train", limit: int | None = None, source: str = "course") -> list[dict[str, str]]:
    """Alpaca examples: `source="course"` reads the offline person_extraction split; `source="hub"`
    reads tatsu-lab/alpaca (one 52k train split: `valid` and `test` are cut from its tail) and falls
    back to the course data, saying why, when the hub is unreachable (offline CI, no network)."""
    if source == "hub":
        try:
            from datasets import load_dataset

            rows = load_dataset(ALPACA_HUB_ID, split="train")
            n = len(rows)
            ranges = {"train": range(0, n - 1000), "valid": range(n - 1000, n - 500), "test": range(n - 500, n)}
            if split not in ranges:
                raise ValueError(f"split must be one of {sorted(ranges)}, got {split!r}")
            picked = ranges[split][:limit] if limit is not None else ranges[split]
            return [to_alpaca(rows[i]) for i in picked]
        except (OSError, ConnectionError) as err:  # offline: HF_HUB_OFFLINE or no network
            print(f"{ALPACA_HUB_ID} is not available ({type(err).__name__}: {str(err)[:120]}); "
                  "using the course's person_extraction data in Alpaca format instead")
    elif source != "course":
        raise ValueError(f"source must be 'course' or 'hub', got {source!r}")
    from common_utils.data import load_course_dataset

    return [to_alpaca(row) for row in load_course_dataset("person_extraction", split, limit)]


def alpaca_sft_tensors(tokenizer, examples: list[dict[str, str]], seq_len: int, drop_long: bool = False):
    """input_ids, attention_mask and labels, each [n, seq_len], for supervised fine-tuning.

    The prompt tokens and the padding get label -100 (no loss), so the model learns the response (and
    the EOS that ends it) only, as Alpaca did. Examples longer than seq_len are truncated from the
    right; one whose prompt alone fills seq_len would carry no loss, so it raises, or with
    `drop_long` (for the hub's 52k Alpaca records, some of them long) is left out."""
    import torch

    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: load it with common_utils.load_tokenizer, which sets "
                         "one distinct from EOS")
    ids, masks, labels = [], [], []
    for example in examples:
        prompt = tokenizer(alpaca_prompt(example), add_special_tokens=False)["input_ids"]
        answer = tokenizer(to_alpaca(example)["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt) >= seq_len and drop_long:
            continue
        if len(prompt) >= seq_len:
            raise ValueError(f"a prompt has {len(prompt)} tokens, seq_len is {seq_len}: raise seq_len so the "
                             "response fits, or shorten the instruction")
        tokens = (prompt + answer)[:seq_len]
        label = ([IGNORE_INDEX] * len(prompt) + answer)[:seq_len]
        pad = seq_len - len(tokens)
        ids.append(tokens + [tokenizer.pad_token_id] * pad)
        masks.append([1] * len(tokens) + [0] * pad)
        labels.append(label + [IGNORE_INDEX] * pad)
    if not ids:
        raise ValueError(f"no example fits seq_len={seq_len}: raise seq_len")
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(masks), "labels": torch.tensor(labels)}


def alpaca_eval_loss(model, tokenizer, examples: list[dict[str, str]], seq_len: int, batch_size: int = 8,
                     drop_long: bool = False) -> float:
    """Mean loss per response token over `examples` (prompt and padding masked, as in training),
    weighted by each batch's token count so batch size does not change the number."""
    import torch

    data = alpaca_sft_tensors(tokenizer, examples, seq_len, drop_long=drop_long)
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(data["input_ids"]), batch_size):
            batch = {k: v[i:i + batch_size].to(model.device) for k, v in data.items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # labels are shifted inside the model
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


def alpaca_generate(model, tokenizer, examples: list[dict[str, str]], max_new_tokens: int = 32) -> list[str]:
    """Greedy responses to Alpaca prompts (raw text, no chat template), decoded in one left-padded batch."""
    import torch

    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer([alpaca_prompt(e) for e in examples], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
        model.eval()
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
    finally:
        tokenizer.padding_side = previous_side
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
