from __future__ import annotations

from pathlib import Path

from common_utils import count_parameters, load_causal_lm, load_tokenizer, model_path
from common_utils.core.models import CACHE_ENV, MODEL_REGISTRY, ModelNotProvisionedError, resolve_model

import pytest
import torch

EMBEDDED_LM = "smollm2-135m-instruct"


@pytest.mark.parametrize("key", sorted(MODEL_REGISTRY))
def test_registry_entry_is_well_formed(key: str) -> None:
    spec = MODEL_REGISTRY[key]
    assert spec.key == key
    assert spec.kind in {"causal-lm", "encoder"}
    assert spec.location and spec.license and spec.description
    if spec.source == "hub":
        assert "/" in spec.location, f"{key}: hub location should be a repo id, got {spec.location!r}"
        fallback = MODEL_REGISTRY.get(spec.fallback)
        assert fallback is not None, f"{key}: fallback {spec.fallback!r} is not in the registry"
        assert fallback.source != "hub", f"{key}: fallback {spec.fallback!r} must be an embedded model"
        assert fallback.kind == spec.kind, f"{key}: fallback {spec.fallback!r} is a {fallback.kind}"
    else:
        assert spec.source in {"embedded-gguf", "embedded-folder"}
        assert "==" in spec.pip_requirement, f"{key}: pin the embedded package, got {spec.pip_requirement!r}"
        assert spec.file


def test_unprovisioned_model_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(ModelNotProvisionedError, match="python -m common_utils provision"):
        model_path(EMBEDDED_LM)


def test_model_path_rejects_hub_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="hub model"):
        model_path("qwen2.5-0.5b-instruct")
    with pytest.raises(KeyError, match=EMBEDDED_LM):
        model_path("no-such-model")


@pytest.mark.slow
def test_hub_model_falls_back_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    # huggingface_hub reads its cache location once, at import time.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    used_key, target = resolve_model("qwen2.5-0.5b-instruct")
    assert used_key == EMBEDDED_LM
    assert Path(target) == model_path(EMBEDDED_LM)
    assert "falling back" in capsys.readouterr().out


@pytest.mark.slow
def test_tokenizer_pad_token_is_not_eos() -> None:
    """pad == EOS would mask every EOS out of the loss, and the model would never learn to stop."""
    tokenizer = load_tokenizer(EMBEDDED_LM)
    assert tokenizer.pad_token is not None
    assert tokenizer.pad_token != tokenizer.eos_token
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


@pytest.mark.slow
def test_tiny_lm_fixture(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    assert model.course_model_key == EMBEDDED_LM
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


@pytest.mark.slow
def test_4bit_model_is_smaller(tiny_lm) -> None:
    model, _ = tiny_lm
    quantized, _ = load_causal_lm(EMBEDDED_LM, quantization="4bit", device="cpu")
    assert quantized.is_loaded_in_4bit
    assert quantized.get_memory_footprint() < 0.5 * model.get_memory_footprint()
    # Packed 4-bit weights are counted by their logical size, so the totals agree.
    assert count_parameters(quantized).total == count_parameters(model).total


@pytest.mark.slow
def test_bad_quantization_is_rejected() -> None:
    with pytest.raises(ValueError, match="'4bit' or '8bit'"):
        load_causal_lm(EMBEDDED_LM, quantization="3bit", device="cpu")


@pytest.mark.slow
def test_encoder_embeds_a_sentence(encoder) -> None:
    model, tokenizer = encoder
    assert model.course_model_key == "minilm-l6-v2"
    batch = tokenizer(["The striker scored twice."], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (1, batch["input_ids"].shape[1], model.config.hidden_size)
    assert torch.isfinite(hidden).all()


@pytest.mark.slow
@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_nf4_saves_on_the_linear_weights_whatever_the_base_dtype(compute_dtype) -> None:
    """Lab-01's QLoRA checkpoint: the 4-bit linear weights take <= 0.3x their 16-bit bytes, in the fp32
    CPU case and with a bf16 base as on a GPU; an unquantized model has no 4-bit layers, so it fails."""
    from common_utils.training.memory import nf4_linear_bytes

    quantized, _ = load_causal_lm(EMBEDDED_LM, quantization="4bit", dtype=compute_dtype, device="cpu")
    measured = nf4_linear_bytes(quantized)
    assert measured.layers == 30 * 7, measured
    assert measured.ratio <= 0.3, measured
    plain, _ = load_causal_lm(EMBEDDED_LM, dtype=torch.bfloat16, device="cpu")
    assert nf4_linear_bytes(plain).layers == 0


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_merge_check_holds_in_the_models_dtype_and_fails_without_the_adapter(dtype) -> None:
    """The merge checkpoints (Lab-01 04, Lab-05 04, Lab-1.1 05, Lab-1.8 04) compare adapter and merged
    logits against merge_tolerance(dtype): a correct merge passes in fp32 (CPU) and bf16 (every GPU
    run); comparing with the base model, i.e. a merge that lost the adapter, fails in both."""
    from common_utils.training.peft_lab import compare_logits, merge_tolerance

    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_causal_lm(EMBEDDED_LM, dtype=dtype, device="cpu")
    batch = tokenizer(["Extract the person: Ana Silva, 31, lives in Lisbon."], return_tensors="pt")
    with torch.inference_mode():
        base_logits = model(**batch).logits.float()
    torch.manual_seed(0)
    adapted = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))  # random B: a "trained" adapter
    with torch.inference_mode():
        adapter_logits = adapted(**batch).logits.float()
    merged = adapted.merge_and_unload()
    with torch.inference_mode():
        merged_logits = merged(**batch).logits.float()
    tolerance = merge_tolerance(dtype)
    assert compare_logits(adapter_logits, merged_logits, batch).relative < tolerance
    assert compare_logits(adapter_logits, base_logits, batch).relative > tolerance
