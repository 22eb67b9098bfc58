"""Chat prompts of an exact token length, for decoding benchmarks.

A speed-up "at 128 prompt tokens" only means something if the prompt really is 128 tokens after the
chat template. Re-tokenizing trimmed text rarely lands on an exact count (merges at the cut move it by
one or two), so the prompt is assembled from token ids: the template's opening, as much of a passage
as fits, the template's closing. Lab-2.1 uses it for the KV-cache speed ratio and the prefill sweep.
"""

from __future__ import annotations

DEFAULT_PASSAGE = (
    "The printing press, developed in Europe in the fifteenth century, changed how knowledge moved. "
    "Before it, books were copied by hand, slowly and with errors; after it, identical copies of a text "
    "could reach readers in many cities within months. Scholars could cite the same page, compare the same "
    "tables and correct each other in print. Maps, star charts and anatomical drawings stopped drifting "
    "from copy to copy, so observations made in one country could be checked in another. Printers also "
    "became publishers: they chose what to print, in which language and at what price, and cheap pamphlets "
    "carried news and arguments to people who had never owned a book. Historians still debate how quickly "
    "these changes happened, but most agree that the spread of printed material made it easier to build "
    "on earlier work instead of rediscovering it."
)
DEFAULT_INSTRUCTION = "Summarize the following text in a few sentences."
_MARKER = "\u2063PASSAGE\u2063"  # invisible separators: a marker no chat template or passage contains


def template_parts(tokenizer, instruction: str, system: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the chat template before and after the user's passage (generation prompt included).

    The template is rendered once around a marker; the two sides are tokenized separately, so the
    prompt's length is `len(head) + len(passage tokens) + len(tail)` exactly. `system` replaces the
    template's default system turn (SmolLM2's costs ~20 tokens), which makes short prompts possible."""
    content = f"{instruction}\n\n{_MARKER}" if instruction else _MARKER
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head, tail = text.split(_MARKER)
    return (tokenizer(head, add_special_tokens=False)["input_ids"],
            tokenizer(tail, add_special_tokens=False)["input_ids"])


def chat_prompt_ids(tokenizer, n_tokens: int, instruction: str = DEFAULT_INSTRUCTION,
                    passage: str = DEFAULT_PASSAGE, system: str | None = None) -> list[int]:
    """A chat prompt of exactly `n_tokens` token ids: the user turn is `instruction` followed by the
    first tokens of `passage` (repeated when the prompt is longer than the passage).

    Raises ValueError when `n_tokens` cannot even hold the template and the instruction."""
    head, tail = template_parts(tokenizer, instruction, system)
    budget = n_tokens - len(head) - len(tail)
    if budget < 1:
        raise ValueError(f"n_tokens={n_tokens} is too short: the chat template and instruction alone take "
                         f"{len(head) + len(tail)} tokens; ask for at least {len(head) + len(tail) + 1}")
    body = tokenizer(passage, add_special_tokens=False)["input_ids"]
    if not body:
        raise ValueError("the passage is empty: pass some text to fill the prompt with")
    repeats = -(-budget // len(body))  # ceil division
    return head + (body * repeats)[:budget] + tail
