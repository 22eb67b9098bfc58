"""The decode loops, KV cache and samplers taught in Lab-2.1 (exported from its notebooks to
common_utils.reference.kv_cache / .sampling), checked against transformers on tiny random models:
a Llama (GQA, like the smoke model) and a Qwen2 (q/k/v biases, like the full profile's model)."""

from __future__ import annotations

from common_utils.reference.gqa import kv_cache_bytes, kv_cache_bytes_per_token
from common_utils.reference.kv_cache import (
    KVCache,
    decode,
    decode_dynamic_cache,
    decode_no_cache,
    forward_with_cache,
)
from common_utils.reference.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    make_sampler,
)

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

VOCAB, EOS, PAD = 97, 3, 0
SIZES = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=1)


def _tiny(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**SIZES))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES))
        with torch.no_grad():  # random init leaves the biases at zero; make them matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request):
    return _tiny(request.param)


def _generate(model, ids, n, **kwargs):
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=kwargs.pop("attention_mask", torch.ones_like(ids)), max_new_tokens=n,
                             eos_token_id=EOS, pad_token_id=PAD, **kwargs)
    return out[:, ids.shape[1]:]


def test_all_three_greedy_loops_equal_generate(tiny) -> None:
    ids = torch.randint(4, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    reference = _generate(tiny, ids, 12, do_sample=False)
    ours, cache = decode(tiny, ids, 12, eos_token_id=EOS, pad_token_id=PAD)
    dynamic, _ = decode_dynamic_cache(tiny, ids, 12, eos_token_id=EOS, pad_token_id=PAD)
    no_cache = decode_no_cache(tiny, ids, 12, eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(ours, reference) and torch.equal(dynamic, reference) and torch.equal(no_cache, reference)
    config = tiny.config
    per_token = kv_cache_bytes_per_token(config.num_hidden_layers, config.num_key_value_heads,
                                         config.hidden_size // config.num_attention_heads, 4)
    assert kv_cache_bytes(cache.pairs()) == ids.shape[0] * len(cache) * per_token


def test_left_padded_batch_equals_one_at_a_time_and_generate(tiny) -> None:
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(4, VOCAB, (n,), generator=gen) for n in (5, 9, 7)]
    width = max(len(p) for p in prompts)
    ids = torch.stack([torch.cat([torch.full((width - len(p),), PAD), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), torch.ones(len(p), dtype=torch.long)])
                        for p in prompts])
    batched, _ = decode(tiny, ids, 8, eos_token_id=EOS, pad_token_id=PAD, attention_mask=mask)
    assert torch.equal(batched, _generate(tiny, ids, 8, do_sample=False, attention_mask=mask))
    for row, prompt in enumerate(prompts):
        single, _ = decode(tiny, prompt[None], 8, eos_token_id=EOS, pad_token_id=PAD)
        assert torch.equal(batched[row, :single.shape[1]], single[0])
    layers = tiny.config.num_hidden_layers
    masked = forward_with_cache(tiny, ids, KVCache(layers), attention_mask=mask)
    unmasked = forward_with_cache(tiny, ids, KVCache(layers))  # the pitfall: the padding is attended
    for row in (0, 2):  # padded rows change
        assert (unmasked[row] - masked[row]).abs().max() > 1e-3
    torch.testing.assert_close(unmasked[1], masked[1])  # row 1 is the longest: no padding, no change


def test_prefill_in_chunks_equals_one_prefill(tiny) -> None:
    ids = torch.randint(4, VOCAB, (1, 12), generator=torch.Generator().manual_seed(3))
    whole = forward_with_cache(tiny, ids, KVCache(tiny.config.num_hidden_layers))
    cache = KVCache(tiny.config.num_hidden_layers)
    forward_with_cache(tiny, ids[:, :5], cache)
    chunked = forward_with_cache(tiny, ids[:, 5:], cache)  # 7 new tokens after 5 cached: bottom-right causal mask
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert len(cache) == 12


def test_processors_equal_transformers_bit_for_bit() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 500) * 3
    seq = torch.randint(0, 500, (6, 20))
    assert torch.equal(apply_temperature(logits, 0.7), TemperatureLogitsWarper(0.7)(seq, logits))
    for k in (1, 5, 40):
        assert torch.equal(apply_top_k(logits, k), TopKLogitsWarper(k)(seq, logits))
    for p in (0.3, 0.9, 0.99):
        assert torch.equal(apply_top_p(logits, p), TopPLogitsWarper(p)(seq, logits))
    for penalty in (0.7, 1.3):
        assert torch.equal(apply_repetition_penalty(seq, logits, penalty),
                           RepetitionPenaltyLogitsProcessor(penalty)(seq, logits))


def test_top_p_keeps_the_top_token_even_when_it_alone_exceeds_p() -> None:
    logits = torch.tensor([[10.0, 0.0, -1.0, -2.0]])
    kept = torch.isfinite(apply_top_p(logits, 0.5))
    assert kept.tolist() == [[True, False, False, False]]


def test_sampling_decode_equals_generate_with_the_same_seed() -> None:
    model = _tiny("llama")
    ids = torch.randint(4, VOCAB, (1, 8), generator=torch.Generator().manual_seed(4))
    knobs = {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2}
    for seed in range(3):
        torch.manual_seed(seed)
        ours, _ = decode(model, ids, 10, select=make_sampler(**knobs), eos_token_id=EOS, pad_token_id=PAD)
        torch.manual_seed(seed)
        assert torch.equal(ours, _generate(model, ids, 10, do_sample=True, **knobs))
