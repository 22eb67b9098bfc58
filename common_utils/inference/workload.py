"""Lab-2.3's workload in one call: the course model, the seeded request trace, its prompts as token ids and
the answers `generate` gives them, so stages 02-04 (and a serving lab that checks a real engine's tokens
against the same answers) start from identical inputs without copying setup code between notebooks.

What the lab teaches (encoding a trace, the greedy reference, the paged engine) lives in
common_utils.reference.paged_engine, exported from the lab's notebooks; this module only wires it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from common_utils.inference.trace import TraceRequest, course_conversations, make_trace

REFERENCE_MADE_BY = "01-Setup_and_Contiguous_Baseline"


class Workload(NamedTuple):
    """Everything a stage needs to replay the lab's trace and check the tokens it produces."""

    model: Any
    tokenizer: Any
    trace: list[TraceRequest]
    prompts: dict[int, list[int]]  # request id -> prompt token ids (chat template applied)
    reference: dict[int, list[int]]  # request id -> generate(do_sample=False)'s new tokens


def lab_trace(sizes) -> list[TraceRequest]:
    """The lab's trace from its sizes (`requests`, `arrival_rate`, `new_tokens`, `seed`): deterministic, so
    every stage and every serving lab rebuilds the very same requests."""
    return make_trace(course_conversations(sizes.requests, seed=sizes.seed), sizes.arrival_rate,
                      tuple(sizes.new_tokens), seed=sizes.seed)


def lab_workload(sizes, outputs: str | Path, made_by: str = REFERENCE_MADE_BY) -> Workload:
    """Load the course model in fp32 (the checkpoints compare tokens exactly; bf16 kernels that change with
    the batch shape could flip a near tie), build the trace, encode its prompts, and read the reference
    answers from `outputs`, computing them with the same recipe as 01 when they are missing."""
    from common_utils.core.models import load_causal_lm
    from common_utils.reference.paged_engine import encode_trace, reference_outputs

    import torch

    model, tokenizer = load_causal_lm(sizes.model, dtype=torch.float32)
    model.eval()
    trace = lab_trace(sizes)
    prompts = encode_trace(tokenizer, trace)
    reference = reference_outputs(outputs, model, prompts, {r.request_id: r.max_new_tokens for r in trace},
                                  made_by=made_by)
    return Workload(model, tokenizer, trace, prompts, reference)
