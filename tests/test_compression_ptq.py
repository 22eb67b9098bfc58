"""Lab-3.1's taught quantization code (common_utils.reference.ptq, exported from the notebooks' `#@save ptq`
cells) against independent computations: PyTorch's fake quantization, a Q4_1-style grid, RTN as GPTQ
without Hessian information, and a save/reload round trip on a two-layer random Llama."""

from __future__ import annotations

from common_utils.compression.calibration import collect_input_gram, decoder_linears, swapped_weights
from common_utils.reference.ptq import (
    dequantize_groups,
    gptq,
    load_packed,
    output_error,
    pack_int4,
    quantize_model,
    rtn,
    rtn_codes,
    save_packed,
    unpack_int4,
    with_packed_linears,
)

import pytest
import torch
from tiny_models import random_llama


@pytest.fixture(scope="module", name="random_llama")
def random_llama_fixture():
    return random_llama(hidden_size=64, intermediate_size=128)


@pytest.mark.parametrize(("bits", "symmetric"), [(8, True), (4, True), (4, False), (3, False)])
def test_rtn_matches_torch_fake_quantize(bits, symmetric):
    torch.manual_seed(1)
    weight = torch.randn(48, 96)
    codes, scale, zero = rtn_codes(weight, bits, symmetric=symmetric)
    offset = 2 ** (bits - 1) if symmetric else 0
    theirs = torch.fake_quantize_per_channel_affine(weight, scale[:, 0], (zero[:, 0] - offset).int(), 0,
                                                    (1 if symmetric else 0) - offset, 2 ** bits - 1 - offset)
    assert torch.equal(dequantize_groups(codes, scale, zero), theirs)


def test_float_offset_grid_is_lossless_on_q4_1_weights():
    torch.manual_seed(2)
    d = torch.rand(16, 4, 1) * 0.01 + 1e-3
    m = -torch.rand(16, 4, 1) * 0.05
    q = torch.randint(0, 16, (16, 4, 32)).float()
    q[..., 0], q[..., 1] = 0, 15  # each block of 32 reaches both ends of its range, as Q4_1's min/max do
    weight = (d * q + m).flatten(-2)
    assert (rtn(weight, 4, 32, float_zero=True) - weight).abs().max() < 1e-6
    assert (rtn(weight, 4, 32) - weight).abs().max() > 1e-4  # an integer zero point is another grid


def test_gptq_with_identity_hessian_is_rtn_and_real_hessian_helps():
    torch.manual_seed(3)
    weight = torch.randn(32, 128)
    x = torch.randn(512, 128) @ torch.randn(128, 128)  # correlated inputs
    gram = x.T @ x
    codes, scale, zero = gptq(weight, torch.eye(128), 3, 32, block_size=64)
    rtn_q = rtn_codes(weight, 3, 32)
    assert torch.equal(codes, rtn_q[0]) and torch.equal(scale, rtn_q[1]) and torch.equal(zero, rtn_q[2])
    gptq_error = output_error(weight, dequantize_groups(*gptq(weight, gram, 3, 32, block_size=64)), gram)
    assert gptq_error < output_error(weight, dequantize_groups(*rtn_q), gram)


def test_quantize_model_stacks_shared_inputs_without_changing_results(random_llama):
    linears = decoder_linears(random_llama)
    stats = collect_input_gram(random_llama, torch.randint(0, 300, (4, 32)))
    quantized = quantize_model(linears, stats["gram"], 4, 32, "gptq", block_size=32, progress=False)
    for name in ["model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"]:
        alone = gptq(linears[name].weight, stats["gram"][name], 4, 32, block_size=32)
        assert all(torch.equal(a, b) for a, b in zip(alone, quantized[name]))


def test_pack_save_reload_round_trip(random_llama, tmp_path):
    codes = torch.randint(0, 16, (5, 64), dtype=torch.uint8)
    assert pack_int4(codes).shape == (5, 32) and torch.equal(unpack_int4(pack_int4(codes)), codes)
    linears = decoder_linears(random_llama)
    quantized = quantize_model(linears, None, 4, 32, "rtn")
    save_packed(tmp_path / "packed", random_llama, quantized, dense_dtype=torch.float32)
    reloaded = load_packed(tmp_path / "packed")
    stored = {name: dequantize_groups(q, s.half().float(), z) for name, (q, s, z) in quantized.items()}
    ids = torch.randint(0, 300, (2, 16))
    with torch.inference_mode():
        with swapped_weights(random_llama, stored):
            expected = random_llama(ids).logits
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)
        packed = with_packed_linears(load_packed(tmp_path / "packed"), quantized)
        assert torch.allclose(packed(ids).logits, expected, atol=1e-5)
