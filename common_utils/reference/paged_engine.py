"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/01-Setup_and_Contiguous_Baseline.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/02-Paged_KV_Cache.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/03-Continuous_Batching.ipynb

Edit the notebook's `#@save paged_engine` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/01-Setup_and_Contiguous_Baseline.ipynb ----
import hashlib
import json
from pathlib import Path


def encode_trace(tokenizer, trace) -> dict[int, list[int]]:
    """Each request's prompt as token ids: its chat through the model's chat template, ending with the
    assistant header so that the next token is the answer's first (what a chat server does)."""
    return {r.request_id: list(tokenizer.apply_chat_template(r.messages, add_generation_prompt=True,
                                                              return_dict=True)["input_ids"])
            for r in trace}


def greedy_reference(model, prompts: dict[int, list[int]], budgets: dict[int, int]) -> dict[int, list[int]]:
    """The answer key every engine of this lab must reproduce: transformers' `generate(do_sample=False)`
    on one request at a time (batch 1: no padding), the new tokens up to and including EOS."""
    import torch

    outputs = {}
    for request_id, prompt in prompts.items():
        ids = torch.tensor([prompt], device=model.device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=budgets[request_id])
        outputs[request_id] = out[0, len(prompt):].tolist()
    return outputs


def reference_file(folder, model_key: str, prompts: dict[int, list[int]], budgets: dict[int, int]) -> Path:
    """Where the answers for exactly this model, these prompts and these budgets are kept: the name holds
    a hash of all three, so answers made for another trace (other sizes) are never reused."""
    key = json.dumps([model_key, sorted(prompts.items()), sorted(budgets.items())])
    return Path(folder) / f"reference-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def save_reference(path, outputs: dict[int, list[int]]) -> None:
    from common_utils.core.artifacts import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({str(k): v for k, v in outputs.items()}), encoding="utf-8")


def load_reference(path) -> dict[int, list[int]]:
    return {int(k): v for k, v in json.loads(Path(path).read_text(encoding="utf-8")).items()}


def reference_outputs(folder, model, prompts: dict[int, list[int]], budgets: dict[int, int],
                      made_by: str = "01-Setup_and_Contiguous_Baseline") -> dict[int, list[int]]:
    """The reference answers: read when 01 (or an earlier run) saved them, else computed with
    greedy_reference and saved, so every later stage also runs on its own (common_utils.ensure)."""
    from common_utils.core.artifacts import ensure

    path = reference_file(folder, model.course_model_key, prompts, budgets)
    ensure(path, lambda: save_reference(path, greedy_reference(model, prompts, budgets)), made_by=made_by)
    return load_reference(path)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/02-Paged_KV_Cache.ipynb ----
class BlockAllocator:
    """Fixed-size KV blocks handed out from a free list and taken back when a sequence ends: the block
    manager of vLLM (*Efficient Memory Management for Large Language Model Serving with PagedAttention*,
    Kwon et al., 2023). Any free block fits any sequence, so a sequence's memory need not be contiguous,
    and nothing is reserved ahead: a sequence takes a new block only when its last one is full."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.free_list = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out block 0 first

    def allocate(self) -> int:
        if not self.free_list:
            raise MemoryError(f"all {self.num_blocks} KV blocks are in use: admit fewer sequences or add blocks")
        return self.free_list.pop()

    def free(self, blocks: list[int]) -> None:
        self.free_list.extend(reversed(blocks))  # the first block given back is the next handed out

    @property
    def num_free(self) -> int:
        return len(self.free_list)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/02-Paged_KV_Cache.ipynb ----
import torch


class PagedKVCache:
    """All the KV memory of an engine: one pool of blocks, and one block table (page table) per sequence.

    pool: [num_blocks, layers, 2 (K and V), kv_heads, block_size, head_dim]. Token t of a sequence lives in
    block `block_tables[seq][t // block_size]` at offset `t % block_size`: a logical position maps to a
    physical slot the way a virtual address maps to a page frame in an operating system."""

    def __init__(self, config, num_blocks: int, block_size: int, dtype=torch.float32, device="cpu"):
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.block_size = block_size
        self.pool = torch.zeros(num_blocks, config.num_hidden_layers, 2, config.num_key_value_heads, block_size,
                                head_dim, dtype=dtype, device=device)
        self.allocator = BlockAllocator(num_blocks)
        self.block_tables: dict[int, list[int]] = {}  # sequence id -> its blocks, in token order
        self.lengths: dict[int, int] = {}  # sequence id -> tokens whose K/V are stored

    def append_slots(self, seq_id: int, n: int) -> list[tuple[int, int]]:
        """Make room for `n` more tokens of a sequence: (block, offset) of each new token's slot. A block
        is taken from the free list only when the sequence's last block is full."""
        table = self.block_tables.setdefault(seq_id, [])
        start = self.lengths.get(seq_id, 0)
        slots = []
        for position in range(start, start + n):
            if position % self.block_size == 0:  # the last block is full (or there is none yet)
                table.append(self.allocator.allocate())
            slots.append((table[position // self.block_size], position % self.block_size))
        self.lengths[seq_id] = start + n
        return slots

    def write(self, layer: int, blocks, offsets, key, value) -> None:
        """Store one layer's K and V of the new tokens ([tokens, kv_heads, head_dim] each) in their slots."""
        self.pool[blocks, layer, 0, :, offsets] = key
        self.pool[blocks, layer, 1, :, offsets] = value

    def block_table_tensor(self, seq_ids: list[int]):
        """Block tables of some sequences as one [n, widest] index (shorter tables padded with their own
        first block; the padding is masked out later), their lengths [n], and the longest length and whether
        all are equal as plain Python values: reading them back from a GPU would make every layer wait."""
        tables = [self.block_tables[s] for s in seq_ids]
        lengths = [self.lengths[s] for s in seq_ids]
        width = max(len(t) for t in tables)
        index = torch.tensor([t + t[:1] * (width - len(t)) for t in tables], device=self.pool.device)
        return index, torch.tensor(lengths, device=self.pool.device), max(lengths), len(set(lengths)) == 1

    def gather(self, index, lengths, longest: int, equal: bool, layer: int):
        """Read one layer's K and V through block tables: k, v [n, kv_heads, longest, head_dim] and a mask
        [n, 1, 1, longest], True where a position holds one of that sequence's tokens (None when all
        sequences are equally long: nothing to mask)."""
        kv = self.pool[index, layer]  # [n, width, 2, kv_heads, block_size, head_dim]
        kv = kv.permute(2, 0, 3, 1, 4, 5).flatten(3, 4)  # [2, n, kv_heads, width * block_size, head_dim]
        mask = None if equal else (torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None])[:, None, None]
        return kv[0, :, :, :longest], kv[1, :, :, :longest], mask

    def free(self, seq_id: int) -> None:
        """A finished sequence gives all its blocks back at once."""
        self.allocator.free(self.block_tables.pop(seq_id, []))
        self.lengths.pop(seq_id, None)

    def tokens_used(self) -> int:
        return sum(self.lengths.values())

    def tokens_reserved(self) -> int:
        return sum(len(t) for t in self.block_tables.values()) * self.block_size

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/02-Paged_KV_Cache.ipynb ----
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAGED_ATTENTION = "course_paged"


@dataclass
class PagedBatch:
    """What one forward pass needs to find every token's K/V. The batch is packed into one row: first one
    token per decoding sequence, then each new sequence's whole prompt."""

    cache: PagedKVCache
    slot_blocks: torch.Tensor  # [tokens]: the block each new token's K/V is written to
    slot_offsets: torch.Tensor  # [tokens]: and its offset inside that block
    num_decode: int  # the first num_decode tokens are the decoding sequences' last tokens
    decode_tables: tuple | None  # block_table_tensor() of the decoding sequences
    prefills: list  # per new sequence: (its block_table_tensor(), (start, end) of its prompt in the row)


def paged_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, paged_batch=None,
                    **kwargs):
    """Attention that reads K/V through block tables (PagedAttention, Kwon et al., 2023), plugged into a
    transformers model. query [1, heads, tokens, d]; key and value [1, kv_heads, tokens, d] hold only this
    step's new tokens, which are written to their slots before anything is read."""
    cache, layer = paged_batch.cache, module.layer_idx
    cache.write(layer, paged_batch.slot_blocks, paged_batch.slot_offsets, key[0].transpose(0, 1),
                value[0].transpose(0, 1))
    outputs = []
    if paged_batch.num_decode:  # every decoding sequence in one call: one query each, padded keys masked out
        k, v, mask = cache.gather(*paged_batch.decode_tables, layer)
        q = query[0, :, :paged_batch.num_decode].transpose(0, 1)[:, :, None]  # [n, heads, 1, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=True)
        outputs.append(out[:, :, 0].transpose(0, 1)[None])  # back to [1, heads, n, d]
    for table, (start, end) in paged_batch.prefills:  # each prompt attends causally to itself
        k, v, _ = cache.gather(*table, layer)
        outputs.append(F.scaled_dot_product_attention(query[:, :, start:end], k, v, scale=scaling, is_causal=True,
                                                      enable_gqa=True))
    return torch.cat(outputs, dim=2).transpose(1, 2), None  # [1, tokens, heads, d], as transformers expects


def use_paged_attention(model):
    """Register paged_attention with transformers and switch the model to it: transformers then builds no
    mask and no cache of its own; block tables and slots arrive through the `paged_batch` argument."""
    from transformers import AttentionInterface

    AttentionInterface.register(PAGED_ATTENTION, paged_attention)
    model.set_attn_implementation(PAGED_ATTENTION)
    return model

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/02-Paged_KV_Cache.ipynb ----
from dataclasses import dataclass, field

import torch


@dataclass
class Request:
    """One request inside the engine: its prompt, its budget, what it generated so far, and when things
    happened (seconds on the engine's clock, filled in by the scheduler of 03)."""

    request_id: int
    prompt_ids: list[int]
    max_new_tokens: int
    arrival_s: float = 0.0
    output_ids: list[int] = field(default_factory=list)
    admit_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None

    @property
    def output_tokens(self) -> int:
        return len(self.output_ids)

    def finished(self, eos_ids) -> bool:
        return bool(self.output_ids) and (self.output_ids[-1] in eos_ids or len(self.output_ids) >= self.max_new_tokens)


def model_step(model, cache: PagedKVCache, requests: list[Request]) -> list[int]:
    """One forward pass for a batch of sequences; returns each one's next greedy token.

    A sequence feeds the tokens whose K/V are not stored yet: its whole prompt the first time (prefill),
    then only its last generated token (decode). All are packed into one row with their own positions,
    so the linear layers, most of the compute, run once for the whole batch."""
    decoding = [r for r in requests if r.request_id in cache.lengths]
    new = [r for r in requests if r.request_id not in cache.lengths]
    ids, positions, slots, spans, last = [], [], [], [], []
    for r in decoding + new:
        stored = cache.lengths.get(r.request_id, 0)
        fresh = (r.prompt_ids + r.output_ids)[stored:]
        slots += cache.append_slots(r.request_id, len(fresh))
        spans.append((len(ids), len(ids) + len(fresh)))
        ids += fresh
        positions += range(stored, stored + len(fresh))
        last.append(len(ids) - 1)  # the position whose logits give this sequence's next token
    device = model.device
    blocks, offsets = zip(*slots)
    batch = PagedBatch(cache, torch.tensor(blocks, device=device), torch.tensor(offsets, device=device), len(decoding),
                       cache.block_table_tensor([r.request_id for r in decoding]) if decoding else None,
                       [(cache.block_table_tensor([r.request_id]), span) for r, span in zip(new, spans[len(decoding):])])
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device), position_ids=torch.tensor([positions], device=device),
                       paged_batch=batch, use_cache=False, logits_to_keep=torch.tensor(last, device=device)).logits
    next_tokens = dict(zip([r.request_id for r in decoding + new], logits[0].argmax(dim=-1).tolist()))
    return [next_tokens[r.request_id] for r in requests]


def run_batch(model, cache: PagedKVCache, requests: list[Request], eos_ids, on_step=None) -> int:
    """Generate every request to its end in one batch that only shrinks (no arrivals yet): a model step,
    append each new token, and free a finished sequence's blocks at once. Returns the number of steps."""
    running, steps = list(requests), 0
    while running:
        for r, token in zip(running, model_step(model, cache, running)):
            r.output_ids.append(token)
        steps += 1
        if on_step is not None:
            on_step(cache)
        for r in [r for r in running if r.finished(eos_ids)]:
            cache.free(r.request_id)
            running.remove(r)
    return steps

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/03-Continuous_Batching.ipynb ----
def continuous_policy(waiting: list, running: list, max_batch: int, more_coming: bool) -> list:
    """Iteration-level scheduling (*Orca: A Distributed Serving System for Transformer-Based Generative
    Models*, Yu et al., 2022): at every step, fill the free batch slots with the oldest waiting requests."""
    return waiting[:max_batch - len(running)]


def static_policy(waiting: list, running: list, max_batch: int, more_coming: bool) -> list:
    """Request-level (static) batching: wait until `max_batch` requests are waiting (or no more will come),
    then run that batch until its longest request ends before starting another."""
    if running or (len(waiting) < max_batch and more_coming):
        return []
    return waiting[:max_batch]

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.3-Continuous_Batching_and_PagedAttention/03-Continuous_Batching.ipynb ----
import time
from collections import deque
from dataclasses import dataclass

import torch


@dataclass
class StepRecord:
    """The engine after one model step: the clock, the batch size, and KV memory in token slots."""

    time_s: float
    running: int
    used: int  # slots holding a token's K/V
    paged: int  # slots in the blocks the paged cache holds
    contiguous: int  # slots a contiguous cache would hold: max_model_len per running request
    budget: int  # slots if each running request reserved exactly its prompt + max_new_tokens


def step_clock(device):
    """The clock the engine advances by. On a CPU, this process's CPU time: other jobs on a shared machine
    do not leak into it (torch runs one thread here). On a GPU, wall time (`.tolist()` waits for the GPU)."""
    return time.process_time if torch.device(device).type == "cpu" else time.perf_counter


def serve(model, cache, requests, policy, max_batch: int, max_model_len: int, eos_ids) -> list[StepRecord]:
    """Replay requests through the engine under a scheduling policy, filling in each request's times.

    The clock is virtual: it moves by the measured time of each model step and jumps over idle gaps to the
    next arrival instead of sleeping, so a run costs only its compute while latencies still include the
    queueing. Admission also checks that the pool could hold every running request at its full budget
    (no preemption here; vLLM admits more and preempts when blocks run out)."""
    clock = step_clock(model.device)
    pending = deque(sorted(requests, key=lambda r: r.arrival_s))
    waiting, running, timeline, now = [], [], [], 0.0

    def worst_blocks(r):
        return -(-(len(r.prompt_ids) + r.max_new_tokens) // cache.block_size)

    while pending or waiting or running:
        while pending and pending[0].arrival_s <= now:  # arrivals up to now join the queue
            waiting.append(pending.popleft())
        for r in policy(waiting, running, max_batch, more_coming=bool(pending)):
            if sum(map(worst_blocks, running + [r])) > cache.allocator.num_blocks:
                break  # first come, first served: nobody jumps the queue
            waiting.remove(r)
            running.append(r)
            r.admit_s = now
        if not running:
            if not pending:
                raise MemoryError("a waiting request does not fit in the KV pool even alone: add blocks")
            now = max(now, pending[0].arrival_s)  # idle: jump to the next arrival
            continue
        start = clock()
        tokens = model_step(model, cache, running)
        now += clock() - start
        for r, token in zip(running, tokens):
            r.output_ids.append(token)
            if r.first_token_s is None:
                r.first_token_s = now
        timeline.append(StepRecord(now, len(running), cache.tokens_used(), cache.tokens_reserved(),
                                   len(running) * max_model_len,
                                   sum(len(r.prompt_ids) + r.max_new_tokens for r in running)))
        for r in [r for r in running if r.finished(eos_ids)]:  # retire: the slot is free for the next step
            r.finish_s = now
            cache.free(r.request_id)
            running.remove(r)
    return timeline


def serve_trace(model, trace, prompts, policy, sizes, eos_ids):
    """One replay of a trace with a fresh KV pool and fresh requests: (requests, timeline)."""
    cache = PagedKVCache(model.config, sizes.num_blocks, sizes.block_size, dtype=model.dtype, device=model.device)
    requests = [Request(r.request_id, prompts[r.request_id], r.max_new_tokens, r.arrival_s) for r in trace]
    timeline = serve(model, cache, requests, policy, sizes.max_batch, sizes.max_model_len, eos_ids)
    if cache.allocator.num_free != cache.allocator.num_blocks:
        raise RuntimeError("KV blocks leaked: every finished request must free its blocks")
    return requests, timeline


def kv_waste(timeline) -> dict[str, float]:
    """Share of reserved KV slots that held no token, over a whole run (summed over steps), per allocator."""
    used = sum(s.used for s in timeline)
    return {kind: 1 - used / sum(getattr(s, kind) for s in timeline) for kind in ("paged", "contiguous", "budget")}
