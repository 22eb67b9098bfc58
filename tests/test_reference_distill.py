"""common_utils.reference.distill (taught in Lab-3.3's notebooks) on small random tensors and a tiny Llama."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from common_utils.evaluation import block_token_nll  # noqa: E402
from common_utils.reference.distill import (  # noqa: E402
    draft_matches,
    forward_kl,
    heal,
    kd_loss_fn,
    lowest_influence,
    paired_bootstrap,
    reverse_kl,
    topk_forward_kl,
)

from tiny_models import random_llama  # noqa: E402


def _logits(seed: int, shape=(3, 5, 50)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def _tiny_llama(layers: int = 4, vocab: int = 64):
    return random_llama(vocab_size=vocab, intermediate_size=64, layers=layers)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_directions_match_kl_div(temperature: float) -> None:
    s, t = _logits(0), _logits(1)
    log_q = F.log_softmax(s / temperature, -1).reshape(-1, s.shape[-1])
    log_p = F.log_softmax(t / temperature, -1).reshape(-1, s.shape[-1])
    scale = temperature ** 2
    assert forward_kl(s, t, temperature).item() == pytest.approx(
        (F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * scale).item(), abs=1e-6)
    assert reverse_kl(s, t, temperature).item() == pytest.approx(
        (F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * scale).item(), abs=1e-6)
    assert forward_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_topk_kl_lower_bounds_full_kl_and_is_exact_at_full_vocab() -> None:
    s, t = _logits(2), _logits(3)
    full = forward_kl(s, t).item()
    previous = 0.0
    for k in (1, 5, 20, 50):
        top = F.log_softmax(t, -1).topk(k, dim=-1)
        value = topk_forward_kl(s, top.values, top.indices).item()
        assert value <= full + 1e-6
        assert value >= previous - 1e-6  # a finer partition never lowers the KL
        previous = value
    assert previous == pytest.approx(full, abs=1e-5)


def test_paired_bootstrap_sign_and_interval() -> None:
    a = torch.full((200,), 1.0)
    b = a + 0.5 + 0.1 * torch.randn(200, generator=torch.Generator().manual_seed(0))
    result = paired_bootstrap(a, b)
    assert result["high"] < 0 < -result["low"]
    assert result["low"] <= result["mean"] <= result["high"]
    same = paired_bootstrap(a, a)
    assert same["low"] == same["high"] == 0.0


def test_lowest_influence_orders_by_value() -> None:
    assert lowest_influence([0.9, 0.1, 0.5, 0.05], 2) == [3, 1]


def test_block_token_nll_matches_cross_entropy_and_kd_heal_moves_toward_teacher() -> None:
    teacher, student = _tiny_llama(), _tiny_llama()
    torch.nn.init.normal_(student.model.layers[2].mlp.down_proj.weight, std=0.5)  # a damaged student
    blocks = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    nll = block_token_nll(teacher, blocks)
    with torch.no_grad():
        reference = teacher(blocks, labels=blocks).loss.item()
    assert nll.shape == (4, 11) and nll.mean().item() == pytest.approx(reference, rel=1e-5)
    with torch.no_grad():
        top = torch.log_softmax(teacher(blocks).logits, -1).topk(64, dim=-1)
    cache = {"logprobs": top.values, "ids": top.indices}
    with torch.no_grad():
        before = forward_kl(student(blocks).logits, teacher(blocks).logits).item()
    losses = heal(student, blocks, kd_loss_fn(cache), steps=8, batch_size=4, lr=1e-2, first_trainable=2)
    with torch.no_grad():
        after = forward_kl(student(blocks).logits, teacher(blocks).logits).item()
    assert len(losses) == 8 and after < before
    assert all(p.requires_grad for p in student.parameters())  # heal restores requires_grad


def test_draft_matches_is_all_true_for_the_target_itself() -> None:
    model = _tiny_llama()
    prompt = [1, 2, 3, 4]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0)
    reply = out[0, len(prompt):].tolist()
    assert draft_matches(model, prompt, reply) == [True] * len(reply)
