"""From-scratch attention vs torch's scaled_dot_product_attention (tiny tensors, CPU)."""

from __future__ import annotations

from common_utils.reference.attention import attention_cost, naive_attention, tiled_attention

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture()
def qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return tuple(torch.randn(2, 3, 37, 16) for _ in range(3))  # odd length: blocks do not divide N


@pytest.mark.parametrize("causal", [False, True])
def test_naive_matches_sdpa(qkv, causal: bool) -> None:
    q, k, v = qkv
    torch.testing.assert_close(naive_attention(q, k, v, causal), F.scaled_dot_product_attention(q, k, v, is_causal=causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("blocks", [(8, 8), (5, 16), (64, 64)])
def test_tiled_matches_sdpa(qkv, causal: bool, blocks: tuple[int, int]) -> None:
    q, k, v = qkv
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(tiled_attention(q, k, v, *blocks, causal=causal), expected, atol=1e-5, rtol=1e-5)


def test_tiled_decoding_tail_is_causal(qkv) -> None:
    q, k, v = qkv
    full = naive_attention(q, k, v, causal=True)
    tail = tiled_attention(q[..., -4:, :], k, v, 3, 8, causal=True)  # last 4 queries see every earlier key
    torch.testing.assert_close(tail, full[..., -4:, :], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="block sizes"):
        tiled_attention(q, k, v, 0, 8)


def test_attention_cost_grows_quadratically_and_tiling_moves_less() -> None:
    short, long = attention_cost(1024, 64), attention_cost(2048, 64)
    assert long.flops == 4 * short.flops
    assert long.io_reduction > short.io_reduction > 1
