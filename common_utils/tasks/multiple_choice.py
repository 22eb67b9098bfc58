"""Multiple-choice benchmark in the C-Eval / TMMLU+ column format: the task of Lab-4.1 (Evaluation Harness).

Rows of `multiple_choice/{dev,test}.jsonl` have `question, A, B, C, D, answer` (the letter) plus `id`,
`subject` and `language` (zh-TW | en), the columns C-Eval, CMMLU and TMMLU+ use, so the same prompt code
runs on the real benchmarks in the full profile. `leak.jsonl` is a small "training corpus" (`text`,
`kind`, `source_id`) for the contamination exercise; it shares the folder, so one schema checks both shapes.

This module keeps what several stages and labs share: the schema, the cloze prompt (the same string the
lm_eval task YAML renders), the generation prompt with lettered options, and letter parsing/scoring.
The scorers the lab teaches (log-likelihood per choice, bootstrap) are written in its notebooks.
"""

from __future__ import annotations

import re
from typing import Any

from common_utils.data import Schema, register_dataset

MC_DATASET = "multiple_choice"
LETTERS = ("A", "B", "C", "D")
LANGUAGES = ("en", "zh-TW")
LEAK_KINDS = ("leak", "dev_copy", "clean")
# The cloze template, also written (as Jinja) into the lm_eval task YAML by common_utils.evaluation.harness.
CLOZE_TEMPLATE = "Question: {question}\nAnswer:"
TARGET_DELIMITER = " "  # lm_eval's default between the prompt and a choice (and a few-shot answer)
FEWSHOT_DELIMITER = "\n\n"  # lm_eval's default between few-shot exemplars


def _check_row(row: dict[str, Any]) -> str | None:
    if row["language"] not in LANGUAGES:
        return f"'language' must be one of {LANGUAGES}, got {row['language']!r}"
    if "text" in row:  # a document of the leak corpus
        if not isinstance(row["text"], str) or not row["text"].strip():
            return "'text' must be a non-empty string"
        if row.get("kind") not in LEAK_KINDS:
            return f"'kind' must be one of {LEAK_KINDS}, got {row.get('kind')!r}"
        if not isinstance(row.get("source_id"), str):
            return "'source_id' must be a string (the copied item's id, or 'none')"
        return None
    for name in ("question", *LETTERS, "answer"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            return f"missing or empty field {name!r} (a multiple-choice row needs question, A, B, C, D, answer)"
    if row["answer"] not in LETTERS:
        return f"'answer' must be one of {LETTERS}, got {row['answer']!r}"
    if len({row[letter] for letter in LETTERS}) != len(LETTERS):
        return "the four options must differ"
    return None


register_dataset(MC_DATASET, Schema({"id": str, "subject": str, "language": str}, _check_row))


def choices(row: dict[str, Any]) -> list[str]:
    """The option texts in letter order (what a cloze-style task scores as continuations)."""
    return [row[letter] for letter in LETTERS]


def gold_index(row: dict[str, Any]) -> int:
    """Index of the correct option (0 for A ... 3 for D)."""
    return LETTERS.index(row["answer"])


def cloze_prompt(row: dict[str, Any], shots: list[dict[str, Any]] = ()) -> str:
    """The log-likelihood prompt: `shots` solved exemplars, then the question; each choice is scored as
    the continuation TARGET_DELIMITER + choice. Built exactly the way lm_eval builds a multiple_choice
    request (exemplar = text + delimiter + answer text, exemplars joined by FEWSHOT_DELIMITER)."""
    solved = [CLOZE_TEMPLATE.format(question=s["question"]) + TARGET_DELIMITER + s[s["answer"]] for s in shots]
    return "".join(part + FEWSHOT_DELIMITER for part in solved) + CLOZE_TEMPLATE.format(question=row["question"])


def lettered_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages asking for the letter of the right option: the generation-scoring prompt."""
    options = "\n".join(f"{letter}. {row[letter]}" for letter in LETTERS)
    return [{"role": "system", "content": "Answer the multiple-choice question with the letter of the correct option only."},
            {"role": "user", "content": f"{row['question']}\n{options}"}]


_LETTER = re.compile(r"\b([ABCD])\b")


def parse_letter(reply: str) -> str | None:
    """The first standalone A-D in a reply ("B", "B.", "Answer: C", "(D)"), or None when there is none."""
    match = _LETTER.search(reply.strip().upper()) if reply else None
    return match.group(1) if match else None


def letter_accuracy(replies: list[str], rows: list[dict[str, Any]]) -> float:
    """Share of replies whose parsed letter is the answer (an unparsable reply counts as wrong)."""
    if len(replies) != len(rows) or not rows:
        raise ValueError(f"need equal, non-empty lists; got {len(replies)} replies, {len(rows)} rows")
    return sum(parse_letter(reply) == row["answer"] for reply, row in zip(replies, rows)) / len(rows)
