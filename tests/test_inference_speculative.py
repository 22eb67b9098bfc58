"""The code Lab-2.2 teaches (exported from its notebooks to common_utils.reference.speculative and
.inference_quant), checked against the libraries it explains: speculative decoding against greedy
`generate` and against the target distribution, int8 emulations against torch's quantizers."""

from __future__ import annotations

from common_utils.inference.benchmark import teacher_forced_matches
from common_utils.reference.inference_quant import (
    Int8WeightOnlyLinear,
    fake_int8_dynamic_linear,
    int8_dynamic,
    int8_weight_only,
)
from common_utils.reference.speculative import (
    ModelDrafter,
    NgramDrafter,
    crop_cache,
    greedy_acceptance,
    probs_from_logits,
    speculative_generate,
    speculative_step,
    truncated_draft,
)

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 61


def _tiny(layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _generate(model, ids, n):
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_probs_are_one_hot_and_sampling_probs_sum_to_one() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0]])
    assert probs_from_logits(logits, 0.0).tolist() == [[0.0, 1.0, 0.0]]
    assert float(probs_from_logits(logits, 0.7).sum()) == pytest.approx(1.0)


def test_speculative_step_keeps_the_target_distribution() -> None:
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n, k = 100_000, 2
    gen = torch.Generator().manual_seed(0)
    draft = torch.multinomial(q.expand(n, 4), k, replacement=True, generator=gen)
    n_acc, nxt = speculative_step(p.expand(n, k + 1, 4), q.expand(n, k, 4), draft, gen)
    first = torch.where(n_acc > 0, draft[:, 0], nxt)
    empirical = torch.bincount(first, minlength=4).double() / n
    assert 0.5 * float((empirical - p.double()).abs().sum()) < 0.01
    # an always-accepting "verifier" would return the draft's distribution instead
    assert 0.5 * float((torch.bincount(draft[:, 0], minlength=4).double() / n - p.double()).abs().sum()) > 0.2


def test_greedy_step_accepts_exactly_the_matching_prefix() -> None:
    target_argmax = torch.tensor([[3, 1, 2, 0]])  # positions 0..k
    p = torch.nn.functional.one_hot(target_argmax, 5).float()
    draft = torch.tensor([[3, 1, 4]])
    q = torch.nn.functional.one_hot(draft, 5).float()
    n_acc, nxt = speculative_step(p, q, draft)
    assert n_acc.tolist() == [2] and nxt.tolist() == [2]
    n_acc, nxt = speculative_step(p, q[:, :0], draft[:, :0])  # no draft: plain decoding
    assert n_acc.tolist() == [0] and nxt.tolist() == [3]


@pytest.mark.parametrize("k", [1, 3])
def test_speculative_generate_equals_greedy_generate(k: int) -> None:
    model = _tiny()
    ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    reference = _generate(model, ids, 12)
    for drafter in [ModelDrafter(truncated_draft(model, 1)), NgramDrafter(VOCAB)]:
        tokens, stats = speculative_generate(model, drafter, ids, 12, k=k)
        assert tokens == reference
        assert stats["accepted"] <= stats["proposed"]


def test_greedy_acceptance_replays_a_real_run() -> None:
    model = _tiny(layers=3)
    ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    reference = _generate(model, ids, 16)
    draft = truncated_draft(model, 2)
    matches = teacher_forced_matches(draft, ids, reference)
    for k in [1, 2, 4]:
        _, stats = speculative_generate(model, ModelDrafter(draft), ids, 16, k=k)
        replay = greedy_acceptance(matches, k)
        assert replay == {**stats, "target_passes": stats["target_passes"] - 1}  # the run also counts its prefill
    assert greedy_acceptance([True] * 9, 4) == {"target_passes": 2, "proposed": 7, "accepted": 7}  # 4+1, then 3+1
    assert greedy_acceptance([False] * 3, 4) == {"target_passes": 3, "proposed": 3, "accepted": 0}


def test_truncated_draft_shares_the_targets_weights() -> None:
    model = _tiny(layers=3)
    draft = truncated_draft(model, 2)
    assert draft.config.num_hidden_layers == 2 and len(draft.model.layers) == 2
    assert draft.model.layers[0] is model.model.layers[0] and draft.lm_head is model.lm_head


def test_ngram_drafter_copies_what_followed_the_last_bigram() -> None:
    drafter = NgramDrafter(VOCAB)
    tokens, q = drafter.propose(torch.tensor([[1, 2, 3, 4, 9, 1, 2]]), 3)
    assert tokens.tolist() == [[3, 4, 9]] and q.shape == (1, 3, VOCAB)
    empty, _ = drafter.propose(torch.tensor([[1, 2, 3]]), 3)
    assert empty.shape == (1, 0)


def test_crop_cache_keeps_a_prefix() -> None:
    from transformers import DynamicCache

    model = _tiny()
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3, 4, 5]]), past_key_values=cache, use_cache=True)
    crop_cache(cache, 3)
    assert cache.get_seq_length() == 3
    crop_cache(cache, 7)  # longer than the cache: nothing to do
    assert cache.get_seq_length() == 3


def test_fake_int8_dynamic_linear_reproduces_torch_ao() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=True)
    x = torch.randn(5, 64)
    x[:, 3] = 25.0  # an outlier channel sets the activation scale
    quantized = int8_dynamic(torch.nn.Sequential(linear))[0]
    reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")
    ours = fake_int8_dynamic_linear(x, linear.weight.detach(), linear.bias.detach(), reduce_range=reduce_range)
    with torch.inference_mode():
        library = quantized(x)
        exact = linear(x)
    assert float((ours - library).abs().max()) < 0.05 * float((library - exact).abs().max())


def test_int8_weight_only_equals_per_channel_quantization() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 16)
    layer = Int8WeightOnlyLinear(linear)
    scales = layer.scale.squeeze(1).double()
    reference = torch.quantize_per_channel(linear.weight.detach(), scales, torch.zeros(16, dtype=torch.long),
                                           0, torch.qint8).dequantize()
    assert float((layer.dequantized_weight() - reference).abs().max()) < 1e-6
    model = int8_weight_only(torch.nn.Sequential(linear, torch.nn.ReLU(), torch.nn.Linear(16, 4)))
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    x = torch.randn(3, 48)
    expected = torch.nn.functional.linear(x, reference, linear.bias)
    assert torch.allclose(model[0](x), expected, atol=1e-5)
