"""Label-word classification as generation: the capstone's support-ticket intent task (Lab-4.3).

The chat model reads one text and answers one label word; the instruction (from the project's
task_definition.yaml) goes in the system turn. This module owns the `support_tickets` dataset's schema,
the chat format used for training, evaluation and serving alike, and the parser that turns a reply into
a label (anything outside the label set becomes INVALID, which counts as an error for its true class).
"""

from __future__ import annotations

import string
from typing import Any

from common_utils.data import Schema, register_dataset

TICKETS_DATASET = "support_tickets"
TICKET_LABELS = ("billing", "shipping", "technical", "account", "refund", "other")
TICKET_LANGUAGES = ("en", "zh-TW")
# A prediction outside the label set: a row and column of the confusion matrix, never a class of its own.
INVALID = "<invalid>"


def _check_ticket(row: dict[str, Any]) -> str | None:
    if row["label"] not in TICKET_LABELS:
        return f"'label' {row['label']!r} is not one of {', '.join(TICKET_LABELS)}"
    if row["language"] not in TICKET_LANGUAGES:
        return f"'language' {row['language']!r} is not one of {', '.join(TICKET_LANGUAGES)}"
    return None


register_dataset(TICKETS_DATASET, Schema({"id": str, "text": str, "label": str, "language": str}, _check_ticket))


def label_messages(text: str, instruction: str, answer: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one text: the instruction as the system turn (it replaces the template's long
    default system prompt, so an example stays short), the text as the user turn, the label if given."""
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": text}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def label_prompt_completion(text: str, instruction: str, answer: str) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion format: the loss falls on the label word and EOS only."""
    messages = label_messages(text, instruction, answer)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def parse_label(reply: str, labels: tuple[str, ...] | list[str]) -> str:
    """The label a reply names: its first word, lower-cased, punctuation stripped; INVALID when that word
    is not a label (an empty reply, a sentence, a label the definition does not have)."""
    words = reply.strip().split()
    word = words[0].strip(string.punctuation).lower() if words else ""
    return word if word in labels else INVALID
