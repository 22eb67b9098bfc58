"""The preference tasks: prompts whose preferred reply a rule checks, not a model.

`preference_format` (Lab-1.8 ORPO): each prompt's system turn asks for one format (a JSON object, at
most five words, or a reply that begins with 'Answer:'), and `judge` checks exactly that; a chosen reply
always passes, a rejected one always fails.
`preference_brevity` (Lab-1.7 DPO): the system turn asks for a list of two or three items
(LIST_MIN..LIST_LIMIT), and `judge_brevity` checks it. The chosen list is shorter than the rejected one
but often still too long, as relative human labels are: the pair says "better", not "good".
So "did alignment work?" is a number a checkpoint cell can assert, not an impression of sample outputs.
Owns both datasets' schemas.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from common_utils.data import Schema, load_course_dataset, register_dataset

PREFERENCE_DATASET = "preference_format"
BREVITY_DATASET = "preference_brevity"
LIST_MIN, LIST_LIMIT = 2, 3  # the "two or three items" of preference_brevity's system turn
MAX_ITEM_WORDS = 3  # a list item is a name ("ice cream"), not a sentence
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


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least `wins` heads in wins + losses fair coin flips).

    The paired test for "A beats B on the same prompts": under "A is no better", each prompt where
    exactly one of them passes is equally likely to go either way; prompts where both pass or both fail
    carry no information and are left out. 1.0 when no prompt separates the two."""
    trials = wins + losses
    return sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2**trials


def win_rate(passed_a: list[bool], passed_b: list[bool]) -> dict[str, float]:
    """Pairwise comparison of two models on the same prompts, as the judge sees them.

    A wins a prompt when its reply passes and B's fails; both pass or both fail is a tie.
    win_rate = (wins + ties / 2) / n, so 0.5 means "no better than B". p_value: `sign_test_p` of the wins
    against the losses, the paired test a checkpoint asserts (a raw difference of pass rates is not one)."""
    if len(passed_a) != len(passed_b) or not passed_a:
        raise ValueError(f"need equal, non-empty lists; got {len(passed_a)} and {len(passed_b)}")
    wins = sum(a and not b for a, b in zip(passed_a, passed_b))
    losses = sum(b and not a for a, b in zip(passed_a, passed_b))
    ties = len(passed_a) - wins - losses
    return {"wins": wins, "losses": losses, "ties": ties, "win_rate": (wins + ties / 2) / len(passed_a),
            "p_value": sign_test_p(wins, losses)}


# ----------------------------------------------------------------------------------------------
# preference_brevity: "a comma-separated list of two or three items"
# ----------------------------------------------------------------------------------------------
def count_list_items(reply: str) -> int | None:
    """Items in a one-line list ("a, b and c." -> 3); None when the reply is not such a list (empty,
    several lines, or a part longer than MAX_ITEM_WORDS words, i.e. a sentence)."""
    text = reply.strip().rstrip(".")
    if not text or "\n" in text:
        return None
    parts = [part.strip() for part in re.split(r",|\band\b", text) if part.strip()]
    if not parts or any(len(part.split()) > MAX_ITEM_WORDS for part in parts):
        return None
    return len(parts)


def _short_list(items: int | None, limit: int = LIST_LIMIT) -> bool:
    """A list (not None) of LIST_MIN to `limit` items: a single item is no list; without that floor, a
    policy that answers one word would pass."""
    return items is not None and LIST_MIN <= items <= limit


def judge_brevity(reply: str, limit: int = LIST_LIMIT) -> bool:
    """True when the reply is a one-line list of LIST_MIN to `limit` items."""
    return _short_list(count_list_items(reply), limit)


def brevity_scores(replies: list[str]) -> dict[str, Any]:
    """Pass rate of judge_brevity, where the failures come from (too many items / a single item / not a
    list), the mean item count of the replies that are lists, and the per-prompt verdicts (for paired tests)."""
    if not replies:
        raise ValueError("need a non-empty list of replies")
    counts = [count_list_items(reply) for reply in replies]
    lists = [c for c in counts if c is not None]
    passed = [_short_list(c) for c in counts]
    return {"n": len(replies), "judge_score": sum(passed) / len(replies),
            "over_limit": sum(c is not None and c > LIST_LIMIT for c in counts) / len(replies),
            "single_item": sum(c == 1 for c in counts) / len(replies),
            "not_a_list": sum(c is None for c in counts) / len(replies),
            "mean_items": sum(lists) / len(lists) if lists else None, "passed": passed}


def _check_brevity(row: dict[str, Any]) -> str | None:
    chosen, rejected = count_list_items(row["chosen"]), count_list_items(row["rejected"])
    if chosen is None or rejected is None:
        return "'chosen' and 'rejected' must both be one-line comma-separated lists"
    if chosen >= rejected:
        return f"'chosen' has {chosen} items, 'rejected' {rejected}: the chosen list must be the shorter one"
    if judge_brevity(row["rejected"]):
        return "'rejected' passes judge_brevity: the pair would reward a list within the limit"
    return None


# ----------------------------------------------------------------------------------------------
# Data in TRL's formats
# ----------------------------------------------------------------------------------------------
def preference_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The prompt of one preference row as chat messages: the format rule in the system turn."""
    return [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]


def preference_pairs(split: str = "train", limit: int | None = None, dataset: str = PREFERENCE_DATASET):
    """TRL's conversational preference format: prompt (messages), chosen and rejected (assistant turns).
    DPOTrainer and ORPOTrainer read it as is. `dataset`: preference_format or preference_brevity."""
    rows = load_course_dataset(dataset, split, limit=limit)

    def to_pair(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": preference_messages(row),
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}

    return rows.map(to_pair, remove_columns=rows.column_names)


def chosen_sft_set(split: str = "train", limit: int | None = None, dataset: str = PREFERENCE_DATASET):
    """The SFT baseline's data: the same prompts with only the chosen reply (prompt-completion format)."""
    rows = load_course_dataset(dataset, split, limit=limit)

    def to_completion(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": preference_messages(row), "completion": [{"role": "assistant", "content": row["chosen"]}]}

    return rows.map(to_completion, remove_columns=rows.column_names)


register_dataset(PREFERENCE_DATASET, Schema({"id": str, "kind": str, "system": str, "prompt": str, "chosen": str,
                                             "rejected": str}, _check_preference))
register_dataset(BREVITY_DATASET, Schema({"id": str, "category": str, "system": str, "prompt": str, "chosen": str,
                                          "rejected": str}, _check_brevity))
