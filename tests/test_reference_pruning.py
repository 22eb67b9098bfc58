"""common_utils.reference.pruning (taught in Lab-3.2's notebooks) on tiny tensors and a tiny Llama."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from common_utils.reference.pruning import (  # noqa: E402
    block_influence,
    drop_blocks,
    magnitude_scores,
    nm_mask,
    prune_mask,
    pruned_weights,
    sparsegpt_prune,
    wanda_scores,
)

from tiny_models import random_llama  # noqa: E402


def _layer_error(delta: torch.Tensor, gram: torch.Tensor) -> float:
    delta = delta.double()
    return torch.einsum("ij,jk,ik->", delta, gram.double(), delta).item()


def _tiny_llama(layers: int = 4):
    return random_llama(layers=layers)


def test_layer_mask_equals_torch_prune_and_sparsities_are_exact() -> None:
    from torch.nn.utils import prune

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 24)
    reference = prune.l1_unstructured(copy.deepcopy(linear), "weight", amount=0.5).weight_mask.bool()
    assert torch.equal(prune_mask(linear.weight.detach().abs(), 0.5, per="layer"), reference)
    rows = prune_mask(linear.weight.detach().abs(), 0.25)
    assert ((~rows).sum(1) == 16).all()
    groups = (~nm_mask(linear.weight.detach().abs())).reshape(24, -1, 4).sum(-1)
    assert (groups == 2).all()


def test_wanda_keeps_weights_on_a_loud_input_channel() -> None:
    weight = torch.ones(4, 8)
    weight[:, 0] = 0.1  # small weights on channel 0 ...
    gram = torch.eye(8)
    gram[0, 0] = 1e4  # ... whose input is very large
    assert not prune_mask(magnitude_scores(weight), 0.5)[:, 0].any()
    assert prune_mask(wanda_scores(weight, gram), 0.5)[:, 0].all()


def test_sparsegpt_beats_its_own_mask_without_update() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 32) @ torch.randn(32, 32)  # correlated inputs: the OBS update has work to do
    gram, weight = x.T @ x, torch.randn(16, 32)
    for kwargs in ({"sparsity": 0.5}, {"n_m": (2, 4)}):
        pruned, keep = sparsegpt_prune(weight, gram, blocksize=8, **kwargs)
        assert abs(keep.float().mean().item() - 0.5) < 1e-9 and torch.equal(pruned == 0, ~keep | (weight == 0))
        assert _layer_error(weight - pruned, gram) < 0.9 * _layer_error(weight - weight * keep, gram)


def test_pruned_weights_and_depth_pruning_on_a_tiny_llama() -> None:
    model = _tiny_llama()
    ids = torch.randint(0, 300, (2, 16))
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    grams = {n: torch.eye(m.in_features) for n, m in linears.items()}
    weights = pruned_weights(linears, grams, score=wanda_scores, sparsity=0.5)
    assert all(abs((w == 0).float().mean().item() - 0.5) < 1e-9 for w in weights.values())

    bi = block_influence(model, ids)
    assert len(bi) == 4 and all(0 <= v <= 2 for v in bi)
    pruned = drop_blocks(copy.deepcopy(model), [1, 2])
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    assert pruned.config.num_hidden_layers == 2
    assert pruned.generate(ids[:1, :4], max_new_tokens=3, do_sample=False).shape == (1, 7)
