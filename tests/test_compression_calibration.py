"""Chapter 03 plumbing: calibration/held-out text, the input gram GPTQ and Wanda read, weight swaps,
and block perplexity. A two-layer random Llama keeps these tests fast and offline."""

from __future__ import annotations

import math

from common_utils.compression.calibration import (
    collect_input_gram,
    decoder_linears,
    ensure_input_gram,
    prose_texts,
    swapped_weights,
    token_blocks,
)
from common_utils.evaluation import block_perplexity

import pytest
import torch
from tiny_models import random_llama


@pytest.fixture(scope="module", name="random_llama")
def random_llama_fixture():
    return random_llama()


class ByteTokenizer:
    """Bytes as token ids (0..255), EOS = 256: enough for token_blocks without a real vocabulary."""

    eos_token_id = 256

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": list(text.encode("utf-8"))}


def test_prose_splits_are_disjoint_and_non_empty() -> None:
    calibration, heldout = prose_texts("calibration"), prose_texts("heldout")
    assert calibration and heldout
    assert not set(calibration) & set(heldout)
    with pytest.raises(ValueError, match="calibration"):
        prose_texts("test")


def test_token_blocks_shape_and_shortage() -> None:
    blocks = token_blocks(ByteTokenizer(), "heldout", n_blocks=3, block_tokens=16)
    assert blocks.shape == (3, 16) and blocks.dtype == torch.long
    with pytest.raises(ValueError, match="fewer"):
        token_blocks(ByteTokenizer(), "heldout", n_blocks=10**6, block_tokens=64)


def test_input_gram_matches_captured_inputs_and_is_shared(random_llama) -> None:
    blocks = torch.randint(0, 256, (3, 8))
    linears = decoder_linears(random_llama)
    assert len(linears) == 2 * 7 and not any("lm_head" in name for name in linears)
    captured: list[torch.Tensor] = []
    handle = linears["model.layers.1.mlp.down_proj"].register_forward_pre_hook(
        lambda module, inputs: captured.append(inputs[0].reshape(-1, inputs[0].shape[-1])))
    try:
        stats = collect_input_gram(random_llama, blocks, batch_size=2)
    finally:
        handle.remove()
    x = torch.cat(captured)
    assert stats["tokens"] == 24
    torch.testing.assert_close(stats["gram"]["model.layers.1.mlp.down_proj"], x.T @ x, rtol=1e-5, atol=1e-5)
    gram = stats["gram"]
    assert gram["model.layers.0.self_attn.q_proj"] is gram["model.layers.0.self_attn.v_proj"]
    assert gram["model.layers.0.mlp.gate_proj"] is gram["model.layers.0.mlp.up_proj"]
    assert gram["model.layers.0.self_attn.q_proj"] is not gram["model.layers.0.self_attn.o_proj"]


def test_ensure_input_gram_reuses_the_artifact(random_llama, tmp_path, capsys) -> None:
    blocks = torch.randint(0, 256, (2, 8))
    first = ensure_input_gram(tmp_path / "gram.pt", random_llama, blocks)
    second = ensure_input_gram(tmp_path / "gram.pt", random_llama, torch.zeros(1, 1, dtype=torch.long))
    assert "reusing" in capsys.readouterr().out
    torch.testing.assert_close(first["gram"]["model.layers.0.mlp.down_proj"], second["gram"]["model.layers.0.mlp.down_proj"])


def test_swapped_weights_restore_even_on_error(random_llama) -> None:
    name = "model.layers.0.mlp.down_proj"
    original = decoder_linears(random_llama)[name].weight.detach().clone()
    with pytest.raises(RuntimeError), swapped_weights(random_llama, {name: torch.zeros_like(original)}):
        assert decoder_linears(random_llama)[name].weight.abs().sum() == 0
        raise RuntimeError("a failing cell")
    assert torch.equal(decoder_linears(random_llama)[name].weight, original)


def test_block_perplexity_is_exp_of_the_models_own_loss(random_llama) -> None:
    blocks = torch.randint(0, 300, (3, 10))
    with torch.inference_mode():
        loss = random_llama(blocks, labels=blocks).loss  # mean over the same 3 x 9 predicted tokens
    assert block_perplexity(random_llama, blocks, batch_size=2) == pytest.approx(math.exp(loss.item()), rel=1e-5)
