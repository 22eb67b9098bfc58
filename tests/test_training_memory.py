"""Fast tests of common_utils.training_memory on tiny random models (no downloads)."""

from __future__ import annotations

from common_utils.training.memory import (
    SavedTensorMeter,
    accumulated_gradients,
    estimate_training_memory,
    flat_grad,
    memory_timeline,
    optimizer_state_bytes,
    relative_error,
    split_batch,
    tensor_bytes,
    truncate_layers,
)

import pytest
import torch
from torch import nn


def _tiny_llama(layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def _padded_batch(lengths: list[int], width: int = 12) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(1, 64, (len(lengths), width))
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids[mask == 0] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_saved_tensor_meter_counts_activations_not_parameters() -> None:
    layer = nn.Linear(16, 16, bias=False)
    x = torch.randn(8, 16, requires_grad=True)
    with SavedTensorMeter(exclude=layer.parameters()) as meter:
        y = torch.relu(layer(x))
    assert meter.bytes >= x.numel() * 4  # the input saved for the weight gradient
    assert meter.bytes < x.numel() * 4 + y.numel() * 4 * 2 + 1
    with SavedTensorMeter() as all_saved:
        torch.relu(layer(x))
    assert all_saved.bytes == meter.bytes + layer.weight.numel() * 4


def test_global_normalisation_matches_the_big_batch_and_per_micro_does_not() -> None:
    model = _tiny_llama()
    batch = _padded_batch([12, 3, 10, 4])
    model.zero_grad()
    model(**batch).loss.backward()
    reference = flat_grad(model).clone()
    micro = split_batch(batch, 2)
    accumulated_gradients(model, micro, "global")
    assert relative_error(flat_grad(model), reference) < 1e-5
    accumulated_gradients(model, micro, "per_micro")
    assert relative_error(flat_grad(model), reference) > 1e-3


def test_split_batch_trims_padding_and_rejects_bad_sizes() -> None:
    micro = split_batch(_padded_batch([5, 3, 12, 2]), 2)
    assert [m["input_ids"].shape[1] for m in micro] == [5, 12]
    with pytest.raises(ValueError, match="must divide"):
        split_batch(_padded_batch([5, 3, 12]), 2)
    with pytest.raises(ValueError, match="normalisation"):
        accumulated_gradients(_tiny_llama(), micro, "mean")


def test_estimator_reproduces_the_zero_paper_rule_of_thumb() -> None:
    # ZeRO (Rajbhandari et al., 2020): mixed-precision Adam, 16 bytes/param; GPT-2 1.5B -> 24 GB (decimal).
    estimate = estimate_training_memory(1_500_000_000, precision="mixed")
    assert estimate.total == pytest.approx(24e9)
    assert estimate.as_gib()["total"] == pytest.approx(24e9 / 2**30)  # the course prints GiB: 22.35
    fp32 = estimate_training_memory(1000)
    assert (fp32.weights, fp32.gradients, fp32.optimizer, fp32.master_weights) == (4000, 4000, 8000, 0)


def test_estimator_lora_and_qlora() -> None:
    lora = estimate_training_memory(1000, trainable_params=10, precision="bf16")
    assert lora.weights == 1000 * 2 and lora.gradients == 20 and lora.optimizer == 80
    qlora = estimate_training_memory(1000, trainable_params=10, precision="bf16", frozen_format="nf4")
    assert qlora.weights == 990 * 0.5 + 10 * 2
    with pytest.raises(ValueError, match="precision"):
        estimate_training_memory(10, precision="fp8")
    with pytest.raises(ValueError, match="trainable_params"):
        estimate_training_memory(10, trainable_params=11)


def test_truncate_layers_keeps_a_working_model() -> None:
    model = truncate_layers(_tiny_llama(3), 1)
    assert len(model.model.layers) == 1 and model.config.num_hidden_layers == 1
    assert model(**_padded_batch([4, 4])).loss.isfinite()
    with pytest.raises(ValueError, match="num_layers"):
        truncate_layers(model, 5)


def test_tensor_and_optimizer_bytes() -> None:
    layer = nn.Linear(8, 4)
    assert tensor_bytes([layer.weight, layer.weight, layer.bias]) == (32 + 4) * 4
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    assert optimizer_state_bytes(optimizer) >= 2 * 36 * 4  # exp_avg + exp_avg_sq


def test_memory_timeline_sees_parameters_and_gradients() -> None:
    from torch.profiler import ProfilerActivity, profile

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8))
    optimizer = torch.optim.AdamW(model.parameters())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        model(torch.randn(16, 64)).sum().backward()
        optimizer.step()
    times, by_category = memory_timeline(prof)
    assert len(times) == len(by_category["parameter"]) > 0
    assert max(by_category["gradient"]) > 0 and max(by_category["optimizer_state"]) > 0


def test_peak_tensor_memory_sees_a_temporary() -> None:
    from common_utils.training.memory import peak_tensor_memory_mb

    peak = peak_tensor_memory_mb(lambda: torch.ones(1024, 1024).sum())  # 4 MB temporary
    assert 3.9 < peak < 8.5
