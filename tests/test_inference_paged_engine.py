"""The paged KV cache and continuous-batching engine taught in Lab-2.3 (exported to
common_utils.reference.paged_engine) and its workload wiring (common_utils.inference.workload), on a tiny
random Llama: the engine must give generate's greedy tokens under every policy."""

from __future__ import annotations

import copy

from common_utils import load_tokenizer
from common_utils.inference import workload
from common_utils.inference.trace import serving_summary
from common_utils.reference.paged_engine import (
    BlockAllocator,
    PagedKVCache,
    Request,
    continuous_policy,
    encode_trace,
    greedy_reference,
    kv_waste,
    load_reference,
    reference_file,
    run_batch,
    serve,
    static_policy,
    use_paged_attention,
)

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

EOS = 2


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.2, eos_token_id=EOS, pad_token_id=0)  # peaked logits: clear argmax
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    model.course_model_key = "tiny-random-llama"
    return model


@pytest.fixture(scope="module")
def workload_tokens(tiny_model):
    """Seven prompts of different lengths (some longer than a block), budgets, and generate's answers."""
    generator = torch.Generator().manual_seed(1)
    lengths = [3, 9, 17, 5, 33, 12, 1]
    prompts = {i: torch.randint(3, 96, (n,), generator=generator).tolist() for i, n in enumerate(lengths)}
    budgets = {i: 3 + 2 * i for i in prompts}
    reference = greedy_reference(tiny_model, prompts, budgets)
    # its own config copy: set_attn_implementation writes to the config, which tiny_model would otherwise share
    paged = use_paged_attention(LlamaForCausalLM(copy.deepcopy(tiny_model.config)).eval())
    paged.load_state_dict(tiny_model.state_dict())
    return paged, prompts, budgets, reference


def test_block_allocator_reuses_freed_blocks_and_reports_exhaustion() -> None:
    allocator = BlockAllocator(3)
    blocks = [allocator.allocate() for _ in range(3)]
    assert blocks == [0, 1, 2] and allocator.num_free == 0
    with pytest.raises(MemoryError, match="add blocks"):
        allocator.allocate()
    allocator.free([1, 2])
    assert allocator.num_free == 2 and allocator.allocate() == 1


def test_paged_cache_allocates_a_block_only_when_the_last_is_full(tiny_model) -> None:
    cache = PagedKVCache(tiny_model.config, num_blocks=6, block_size=4)
    slots = cache.append_slots(7, 5)
    assert len(cache.block_tables[7]) == 2 and slots[4] == (cache.block_tables[7][1], 0)
    cache.append_slots(8, 2)
    cache.append_slots(7, 3)  # fills block 2 of sequence 7 exactly: no third block
    assert len(cache.block_tables[7]) == 2 and cache.tokens_used() == 10 and cache.tokens_reserved() == 12
    assert not set(cache.block_tables[7]) & set(cache.block_tables[8])
    cache.free(7)
    assert cache.allocator.num_free == 5 and 7 not in cache.lengths


def test_gather_reads_written_kv_in_token_order(tiny_model) -> None:
    cache = PagedKVCache(tiny_model.config, num_blocks=8, block_size=4)
    cache.append_slots(0, 3)  # interleave two sequences so their blocks are not contiguous
    slots = cache.append_slots(1, 6) + cache.append_slots(0, 4)
    heads, dim = tiny_model.config.num_key_value_heads, tiny_model.config.head_dim
    key = torch.randn(10, heads, dim)
    blocks, offsets = (torch.tensor(x) for x in zip(*slots))
    cache.write(1, blocks, offsets, key, -key)
    k, v, mask = cache.gather(*cache.block_table_tensor([1]), layer=1)
    assert mask is None and torch.equal(k[0].transpose(0, 1), key[:6]) and torch.equal(v, -k)
    k, _, mask = cache.gather(*cache.block_table_tensor([1, 0]), layer=1)
    assert k.shape[2] == 7 and mask[:, 0, 0].sum(dim=1).tolist() == [6, 7]
    assert torch.equal(k[1, :, 3:7].transpose(0, 1), key[6:])


def test_run_batch_matches_generate_and_frees_every_block(workload_tokens) -> None:
    model, prompts, budgets, reference = workload_tokens
    cache = PagedKVCache(model.config, num_blocks=32, block_size=4)
    requests = [Request(i, prompts[i], budgets[i]) for i in prompts]
    run_batch(model, cache, requests, {EOS})
    assert {r.request_id: r.output_ids for r in requests} == reference
    assert cache.allocator.num_free == 32 and not cache.block_tables


@pytest.mark.parametrize("policy", [continuous_policy, static_policy])
def test_serve_matches_generate_under_both_policies(workload_tokens, policy) -> None:
    model, prompts, budgets, reference = workload_tokens
    cache = PagedKVCache(model.config, num_blocks=32, block_size=4)
    requests = [Request(i, prompts[i], budgets[i], arrival_s=0.001 * i) for i in prompts]
    timeline = serve(model, cache, requests, policy, max_batch=3, max_model_len=64, eos_ids={EOS})
    assert {r.request_id: r.output_ids for r in requests} == reference
    assert all(r.arrival_s <= r.admit_s <= r.first_token_s <= r.finish_s for r in requests)
    assert max(s.running for s in timeline) <= 3 and cache.allocator.num_free == 32
    waste = kv_waste(timeline)
    assert 0 <= waste["paged"] < waste["contiguous"] < 1
    assert serving_summary(requests)["tokens"] == sum(map(len, reference.values()))


def test_policies_fill_free_slots_or_wait_for_a_full_batch() -> None:
    waiting = ["a", "b", "c"]
    assert continuous_policy(waiting, ["x"], max_batch=3, more_coming=True) == ["a", "b"]
    assert static_policy(waiting, ["x"], max_batch=2, more_coming=True) == []
    assert static_policy(waiting[:1], [], max_batch=2, more_coming=True) == []
    assert static_policy(waiting[:1], [], max_batch=2, more_coming=False) == ["a"]
    assert static_policy(waiting, [], max_batch=2, more_coming=True) == ["a", "b"]


def test_serve_refuses_a_request_larger_than_the_pool(workload_tokens) -> None:
    model, prompts, _, _ = workload_tokens
    cache = PagedKVCache(model.config, num_blocks=2, block_size=4)
    with pytest.raises(MemoryError, match="add blocks"):
        serve(model, cache, [Request(0, prompts[4], 8)], continuous_policy, 2, 64, {EOS})


def test_lab_workload_builds_trace_prompts_and_reuses_the_reference(tmp_path, tiny_model, monkeypatch) -> None:
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    sizes = type("Sizes", (), {"model": "any", "requests": 3, "arrival_rate": 2.0, "new_tokens": [2, 3], "seed": 5})()
    monkeypatch.setattr("common_utils.core.models.load_causal_lm", lambda key, dtype=None: (tiny_model, tokenizer))
    # the tiny model's vocabulary is smaller than the tokenizer's: fold the prompt ids into it for this wiring test
    monkeypatch.setattr("common_utils.reference.paged_engine.encode_trace",
                        lambda tok, trace: {i: [t % 96 for t in ids[:6]] for i, ids in encode_trace(tok, trace).items()})
    first = workload.lab_workload(sizes, tmp_path)
    assert [r.request_id for r in first.trace] == [0, 1, 2] and set(first.prompts) == {0, 1, 2}
    path = reference_file(tmp_path, "tiny-random-llama", first.prompts,
                          {r.request_id: r.max_new_tokens for r in first.trace})
    assert load_reference(path) == first.reference and all(first.reference.values())

    def no_recompute(*args):
        raise AssertionError("the saved reference must be reused")

    monkeypatch.setattr("common_utils.reference.paged_engine.greedy_reference", no_recompute)
    assert workload.lab_workload(sizes, tmp_path).reference == first.reference
