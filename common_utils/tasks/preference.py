"""The preference task: prompts that ask for one reply format, judged by a rule, not a model.

Each prompt's system turn asks for one format (a JSON object, at most five words, or a reply that
begins with 'Answer:'), and `judge` checks exactly that. So "did alignment work?" is a number a
checkpoint cell can assert, not an impression of sample outputs. Owns the `preference_format`
dataset's schema (a chosen reply must pass the judge, a rejected one must fail it).
"""

from __future__ import annotations

import json
from typing import Any

from common_utils.data import Schema, load_course_dataset, register_dataset

PREFERENCE_DATASET = "preference_format"
KINDS = ("json", "brief", "prefix")
MAX_BRIEF_WORDS = 5
REQUIRED_PREFIX = "Answer:"


def _check_preference(row: dict[str, Any]) -> str | None:
    if row["kind"] not in KINDS:
        return f"'kind' must be one of {', '.join(KINDS)}"
    if not judge(row["kind"], row["chosen"]):
        return "'chosen' does not pass the judge for its kind"
    if judge(row["kind"], row["rejected"]):
        return "'rejected' passes the judge for its kind: the pair prefers nothing"
    return None


# ----------------------------------------------------------------------------------------------
# The rule-based judge
# ----------------------------------------------------------------------------------------------
def judge(kind: str, reply: str) -> bool:
    """True when `reply` follows the format its prompt asked for.

    json:   the whole reply is one JSON object with exactly the key "answer" (no prose, no code fence)
    brief:  1 to MAX_BRIEF_WORDS words
    prefix: the reply begins with 'Answer:' followed by something
    """
    text = reply.strip()
    if kind == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and set(value) == {"answer"}
    if kind == "brief":
        return 1 <= len(text.split()) <= MAX_BRIEF_WORDS
    if kind == "prefix":
        return text.startswith(REQUIRED_PREFIX) and bool(text[len(REQUIRED_PREFIX):].strip())
    raise ValueError(f"unknown preference kind {kind!r}; expected one of {', '.join(KINDS)}")


def judge_scores(kinds: list[str], replies: list[str]) -> dict[str, Any]:
    """Pass rate overall and per kind, plus the per-prompt verdicts (for win rates and error analysis)."""
    if len(kinds) != len(replies) or not replies:
        raise ValueError(f"need equal, non-empty lists; got {len(kinds)} kinds and {len(replies)} replies")
    passed = [judge(kind, reply) for kind, reply in zip(kinds, replies)]
    scores: dict[str, Any] = {"n": len(passed), "judge_score": sum(passed) / len(passed)}
    for kind in KINDS:
        verdicts = [p for k, p in zip(kinds, passed) if k == kind]
        if verdicts:
            scores[f"judge_{kind}"] = sum(verdicts) / len(verdicts)
    scores["passed"] = passed
    return scores


def win_rate(passed_a: list[bool], passed_b: list[bool]) -> dict[str, float]:
    """Pairwise comparison of two models on the same prompts, as the judge sees them.

    A wins a prompt when its reply passes and B's fails; both pass or both fail is a tie.
    win_rate = (wins + ties / 2) / n, so 0.5 means "no better than B"."""
    if len(passed_a) != len(passed_b) or not passed_a:
        raise ValueError(f"need equal, non-empty lists; got {len(passed_a)} and {len(passed_b)}")
    wins = sum(a and not b for a, b in zip(passed_a, passed_b))
    losses = sum(b and not a for a, b in zip(passed_a, passed_b))
    ties = len(passed_a) - wins - losses
    return {"wins": wins, "losses": losses, "ties": ties, "win_rate": (wins + ties / 2) / len(passed_a)}


# ----------------------------------------------------------------------------------------------
# Data in TRL's formats
# ----------------------------------------------------------------------------------------------
def preference_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The prompt of one preference row as chat messages: the format rule in the system turn."""
    return [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]


def preference_pairs(split: str = "train", limit: int | None = None):
    """TRL's conversational preference format: prompt (messages), chosen and rejected (assistant turns).
    DPOTrainer and ORPOTrainer read it as is."""
    dataset = load_course_dataset(PREFERENCE_DATASET, split, limit=limit)

    def to_pair(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": preference_messages(row),
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}

    return dataset.map(to_pair, remove_columns=dataset.column_names)


def chosen_sft_set(split: str = "train", limit: int | None = None):
    """The SFT baseline's data: the same prompts with only the chosen reply (prompt-completion format)."""
    dataset = load_course_dataset(PREFERENCE_DATASET, split, limit=limit)

    def to_completion(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": preference_messages(row), "completion": [{"role": "assistant", "content": row["chosen"]}]}

    return dataset.map(to_completion, remove_columns=dataset.column_names)


register_dataset(PREFERENCE_DATASET, Schema({"id": str, "kind": str, "system": str, "prompt": str, "chosen": str,
                                             "rejected": str}, _check_preference))
