"""MHA / MQA / GQA module and K/V-head pooling (taught in Lab-1.6, exported to common_utils.reference.gqa)
and the tiny LM they are measured on (common_utils.training.tiny_lm), on tiny tensors."""

from __future__ import annotations

from common_utils.reference.attention import naive_attention
from common_utils.reference.gqa import (
    GroupedQueryAttention,
    convert_kv_heads,
    kv_cache_bytes_per_token,
    pool_kv_heads,
)
from common_utils.training.tiny_lm import TinyCausalLM

import pytest
import torch


def test_gqa_matches_per_head_naive_attention() -> None:
    torch.manual_seed(0)
    attn = GroupedQueryAttention(32, n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 7, 32)
    out, (k, v) = attn(x)
    q = attn.q_proj(x).view(2, 7, 4, 8).transpose(1, 2)
    expected = naive_attention(q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), causal=True)
    torch.testing.assert_close(out, attn.o_proj(expected.transpose(1, 2).reshape(2, 7, 32)), atol=1e-5, rtol=1e-5)
    assert k.shape == (2, 2, 7, 8)


def test_cache_gives_the_same_logits_as_a_full_forward() -> None:
    torch.manual_seed(0)
    model = TinyCausalLM(vocab_size=11, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, max_len=32).eval()
    ids = torch.randint(0, 11, (1, 9))
    full, _ = model(ids)
    _, past = model(ids[:, :6])
    step, _ = model(ids[:, 6:], past)
    torch.testing.assert_close(step, full[:, 6:], atol=1e-5, rtol=1e-5)


def test_pooling_identical_heads_is_lossless_and_checks_groups() -> None:
    torch.manual_seed(0)
    attn = GroupedQueryAttention(32, n_heads=4, n_kv_heads=4)
    with torch.no_grad():  # make heads 0/1 and 2/3 identical: pooling them changes nothing
        for proj in [attn.k_proj, attn.v_proj]:
            proj.weight[8:16] = proj.weight[0:8]
            proj.weight[24:32] = proj.weight[16:24]
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(pool_kv_heads(attn, 2)(x)[0], attn(x)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="equal groups"):
        pool_kv_heads(attn, 3)
    with pytest.raises(ValueError, match="n_kv_heads"):
        GroupedQueryAttention(32, n_heads=4, n_kv_heads=3)


def test_pooled_attention_equals_the_libraries_grouped_query_attention() -> None:
    import torch.nn.functional as F
    from transformers.models.llama.modeling_llama import repeat_kv

    torch.manual_seed(0)
    attn = GroupedQueryAttention(32, n_heads=4, n_kv_heads=4)
    x = torch.randn(2, 6, 32)
    for kv in [1, 2]:
        pooled = pool_kv_heads(attn, kv)
        out, (k, v) = pooled(x)
        q = pooled.q_proj(x).view(2, 6, 4, 8).transpose(1, 2)
        for expected in [F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                         F.scaled_dot_product_attention(q, repeat_kv(k, 4 // kv), repeat_kv(v, 4 // kv), is_causal=True)]:
            torch.testing.assert_close(out, pooled.o_proj(expected.transpose(1, 2).reshape(2, 6, 32)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pool_kv_heads(attn, 4)(x)[0], attn(x)[0], atol=0, rtol=0)  # n_kv == n_heads: MHA back


def test_convert_kv_heads_keeps_other_weights_and_shrinks_the_cache() -> None:
    torch.manual_seed(0)
    model = TinyCausalLM(vocab_size=11, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, max_len=32)
    mqa = convert_kv_heads(model, 1)
    assert torch.equal(mqa.head.weight, model.head.weight) and mqa.head.weight is not model.head.weight
    assert mqa.config["n_kv_heads"] == 1 and model.config["n_kv_heads"] == 4
    ids = torch.randint(0, 11, (1, 9))
    torch.testing.assert_close(convert_kv_heads(model, 4)(ids)[0], model(ids)[0], atol=0, rtol=0)
    _, cache = mqa.generate(torch.zeros(1, 3, dtype=torch.long), 4)
    assert cache[0][0].shape == (1, 1, 7, 8)
    assert kv_cache_bytes_per_token(30, 3, 64, 4) == 46080


def test_kv_cache_bytes_matches_the_formula_for_tiny_and_transformers_caches(tmp_path) -> None:
    from common_utils.reference.gqa import kv_cache_bytes
    from common_utils.training.tiny_lm import load_or_train_tiny_lm

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = TinyCausalLM(vocab_size=11, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_len=32)
    _, cache = model.generate(torch.zeros(1, 3, dtype=torch.long), 5)
    assert kv_cache_bytes(cache) == 8 * kv_cache_bytes_per_token(2, 2, 8, 4)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    out = LlamaForCausalLM(config)(torch.zeros(1, 6, dtype=torch.long), use_cache=True)
    assert kv_cache_bytes(out.past_key_values) == 6 * kv_cache_bytes_per_token(2, 2, 8, 4)
    ids = torch.randint(0, 11, (400,))
    first, history = load_or_train_tiny_lm(tmp_path / "m.pt", ids, 2, vocab_size=11, d_model=32, n_heads=4, n_kv_heads=4)
    again, saved_history = load_or_train_tiny_lm(tmp_path / "m.pt", ids, 2)  # reused through ensure: no config needed
    assert torch.equal(first.head.weight, again.head.weight) and history == saved_history and len(history) == 2
