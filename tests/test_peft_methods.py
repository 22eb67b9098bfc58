from __future__ import annotations

import copy
import re
from pathlib import Path

from common_utils import apply_peft, count_parameters, make_peft_config
from common_utils.core.runtime import PROFILES
from common_utils.core.runtime import Sizes as Profile
from common_utils.peft.methods import PEFT_METHODS

import pytest
import torch

LAB01 = Path(__file__).resolve().parents[1] / "01-Core_Training_Techniques" / "02-Labs" / "PEFT_Labs" / "Lab-01-LoRA"


def test_registry_has_lora_and_qlora() -> None:
    assert {"lora", "qlora"} <= set(PEFT_METHODS)
    for name, method in PEFT_METHODS.items():
        assert method.name == name
        assert method.family in {"additive", "selective", "reparameterized"}, f"{name}: {method.family!r}"
        assert re.search(r"\(.+, (19|20)\d\d\)$", method.paper), f"{name}: paper should end '(Authors, year)'"
    assert PEFT_METHODS["qlora"].needs_quantized_base
    assert not PEFT_METHODS["lora"].needs_quantized_base


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_lora_config_sizes_come_from_the_profile(profile_name: str) -> None:
    from common_utils import lab_sizes

    profile = lab_sizes(LAB01, profile_name)  # LoRA sizes live in the lab's lab.yaml, per profile
    config = make_peft_config("lora", profile)
    assert (config.r, config.lora_alpha) == (profile.lora_r, profile.lora_alpha)
    assert config.target_modules == "all-linear"


def test_overrides_win_over_the_profile(profile: Profile) -> None:
    config = make_peft_config("lora", profile, r=2, lora_dropout=0.1)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (2, profile.lora_alpha, 0.1)


def test_unknown_method_lists_the_available_ones(profile: Profile) -> None:
    for call in (lambda: make_peft_config("dora-x", profile), lambda: apply_peft(torch.nn.Linear(2, 2), "dora-x")):
        with pytest.raises(KeyError) as error:
            call()
        assert all(name in str(error.value) for name in PEFT_METHODS)


def test_qlora_needs_a_quantized_base() -> None:
    with pytest.raises(ValueError, match="quantization='4bit'"):
        apply_peft(torch.nn.Linear(2, 2), "qlora")


@pytest.mark.slow
def test_lora_trainable_parameters_match_the_formula(tiny_lm, profile: Profile) -> None:
    model, _ = tiny_lm
    peft_model = apply_peft(copy.deepcopy(model), "lora", profile)
    assert profile.lora_r == 8
    # all-linear: every nn.Linear of the decoder layers (not lm_head); LoRA adds r * (in + out) to each.
    per_layer = sum(m.in_features + m.out_features for m in model.model.layers[0].modules()
                    if isinstance(m, torch.nn.Linear))
    assert per_layer == 10_176
    expected = model.config.num_hidden_layers * profile.lora_r * per_layer
    assert expected == 2_442_240

    counted = count_parameters(peft_model)
    assert counted.trainable == expected
    assert (counted.trainable, counted.total) == peft_model.get_nb_trainable_parameters()
    assert not hasattr(model, "peft_config"), "the shared fixture model must not be wrapped"
    assert all(p.requires_grad for p in model.parameters()), "the shared fixture model must not be frozen"


def test_a_method_that_applies_itself_is_called_with_the_model():
    from common_utils.peft import methods as peft_methods

    calls = []

    @peft_methods.register_method("_probe", "additive", "probe (test, 2026)", applies_itself=True)
    def _probe(model, scale: float = 1.0):
        calls.append((model, scale))
        return model

    try:
        sentinel = object()
        assert peft_methods.apply_peft(sentinel, "_probe", scale=2.0) is sentinel
        assert calls == [(sentinel, 2.0)]
        with pytest.raises(TypeError, match="apply_peft"):
            peft_methods.make_peft_config("_probe")
    finally:
        peft_methods.PEFT_METHODS.pop("_probe")
