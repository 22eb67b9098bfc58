"""Adapter, prompt tuning, prefix tuning and (IA)^3 on tiny random models (fast, no downloads).

For each method and both course model kinds (a Llama-style causal LM, a BERT classifier): it applies,
only its own weights train, a forward+backward step runs, and the trainable count equals the formula.
Adapters and (IA)^3 start as the identity; soft prompts and prefixes add tokens, so they do not."""

from __future__ import annotations

import copy
import json

from common_utils import apply_peft, count_parameters, make_peft_config
from common_utils.peft.adapters import (
    AdapterConfig,
    adapter_targets,
    add_adapters,
    has_adapters,
    is_adapter_dir,
    load_adapters,
    save_adapters,
)
from common_utils.peft.methods import (
    PEFT_METHODS,
    default_learning_rate,
    prefix_kv_dim,
    trainable_param_formula,
)

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

METHODS = ["adapter", "prompt_tuning", "prefix_tuning", "ia3"]
IDENTITY_AT_INIT = {"adapter", "ia3"}
# the names of each method's own trainable tensors
OWN_WEIGHTS = {"adapter": ".adapter.", "prompt_tuning": "prompt_encoder", "prefix_tuning": "prompt_encoder",
               "ia3": "ia3_l"}


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_labels=4)
    return BertForSequenceClassification(config).eval()


def _model(kind: str, tiny_llama, tiny_bert):
    return (tiny_llama, "CAUSAL_LM") if kind == "llama" else (tiny_bert, "SEQ_CLS")


def test_the_four_methods_are_registered() -> None:
    assert set(METHODS) <= set(PEFT_METHODS)
    assert PEFT_METHODS["adapter"].applies_itself
    assert not any(PEFT_METHODS[m].applies_itself for m in ["prompt_tuning", "prefix_tuning", "ia3"])
    assert "Houlsby" in PEFT_METHODS["adapter"].paper and "Lester" in PEFT_METHODS["prompt_tuning"].paper


@pytest.mark.parametrize("kind", ["llama", "bert"])
@pytest.mark.parametrize("method", METHODS)
def test_method_applies_trains_only_its_weights_and_matches_the_formula(method, kind, tiny_llama, tiny_bert) -> None:
    base, task_type = _model(kind, tiny_llama, tiny_bert)
    model = apply_peft(copy.deepcopy(base), method, task_type=task_type)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    own = [name for name in trainable if OWN_WEIGHTS[method] in name]
    head = [name for name in trainable if "classifier" in name]
    assert own, f"{method}: none of its weights train"
    assert sorted(own + head) == sorted(trainable), f"{method}: other weights train: {set(trainable) - set(own)}"
    assert bool(head) == (task_type == "SEQ_CLS"), "the classifier head trains exactly for SEQ_CLS"

    assert count_parameters(model).trainable == trainable_param_formula(method, base, task_type=task_type)

    ids = torch.randint(0, 64, (2, 7))
    labels = ids if task_type == "CAUSAL_LM" else torch.tensor([0, 3])
    model.train()
    model(input_ids=ids, labels=labels).loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if name in own]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in base.parameters()), "the shared base model must not be touched"

    model.eval()
    with torch.no_grad():
        reference = base(input_ids=ids).logits
        output = model(input_ids=ids).logits
    if task_type == "CAUSAL_LM":
        output = output[:, -ids.shape[1]:]  # soft prompts prepend virtual positions
    same = torch.allclose(reference, output, atol=1e-6)
    assert same == (method in IDENTITY_AT_INIT), f"{method}: identity at init should be {method in IDENTITY_AT_INIT}"


@pytest.mark.parametrize("overrides", [{"num_virtual_tokens": 5},
                                       {"num_virtual_tokens": 4, "prefix_projection": False},
                                       {"num_virtual_tokens": 4, "encoder_hidden_size": 8}])
def test_prefix_formula_with_and_without_projection(overrides, tiny_llama) -> None:
    assert prefix_kv_dim(tiny_llama) == 2 * 8, "grouped-query attention: prefixes are kv_heads * head_dim wide"
    model = apply_peft(copy.deepcopy(tiny_llama), "prefix_tuning", **overrides)
    assert count_parameters(model).trainable == trainable_param_formula("prefix_tuning", tiny_llama, **overrides)


def test_pfeiffer_places_one_adapter_per_layer(tiny_llama, tiny_bert) -> None:
    for base in (tiny_llama, tiny_bert):
        houlsby, pfeiffer = adapter_targets(base, "houlsby"), adapter_targets(base, "pfeiffer")
        assert len(houlsby) == 2 * base.config.num_hidden_layers
        assert len(pfeiffer) == base.config.num_hidden_layers and set(pfeiffer) < set(houlsby)
    bert_ffn = adapter_targets(tiny_bert, "pfeiffer")
    assert all("attention" not in name for name in bert_ffn), bert_ffn
    model = apply_peft(copy.deepcopy(tiny_llama), "adapter", placement="pfeiffer", bottleneck=4)
    assert count_parameters(model).trainable == trainable_param_formula("adapter", tiny_llama, placement="pfeiffer",
                                                                        bottleneck=4)
    assert count_parameters(model).trainable == 2 * (2 * 32 * 4 + 32 + 4)


def test_adapters_save_alone_and_reload_to_identical_outputs(tmp_path, tiny_llama) -> None:
    model = add_adapters(copy.deepcopy(tiny_llama), bottleneck=4)
    with torch.no_grad():  # pretend training moved the adapters away from the identity
        for name, parameter in model.named_parameters():
            if ".adapter." in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    path = save_adapters(tmp_path / "adapter", model)
    assert is_adapter_dir(path) and json.loads((path / "adapter_config.json").read_text())["bottleneck"] == 4
    saved = sum(p.numel() for n, p in model.named_parameters() if ".adapter." in n)
    assert (path / "adapter_model.safetensors").stat().st_size < 4 * saved + 10_000, "only adapter weights saved"
    reloaded = load_adapters(copy.deepcopy(tiny_llama), path)
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)
        assert not torch.allclose(tiny_llama(input_ids=ids).logits, reloaded(input_ids=ids).logits)
    assert not list(tmp_path.glob(".adapter-*")), "atomic save leaves no temporary folder"


def test_adapter_errors_name_the_problem(tmp_path, tiny_llama) -> None:
    with pytest.raises(ValueError, match="placement"):
        AdapterConfig(placement="middle")
    with pytest.raises(ValueError, match="model_type"):
        add_adapters(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="save_adapters"):
        load_adapters(copy.deepcopy(tiny_llama), tmp_path)
    model = add_adapters(copy.deepcopy(tiny_llama))
    assert has_adapters(model)
    with pytest.raises(ValueError, match="already"):
        add_adapters(model)


def test_bert_ia3_scales_ffn_output_not_attention_output(tiny_bert) -> None:
    model = apply_peft(copy.deepcopy(tiny_bert), "ia3", task_type="SEQ_CLS")
    scaled = {name.split(".ia3_l")[0] for name, _ in model.named_parameters() if "ia3_l" in name}
    assert not any("attention.output" in name for name in scaled), scaled
    assert sum("layer.0." in name for name in scaled) == 3  # key, value, FFN output projection


def test_prompt_tuning_text_init_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer_name_or_path"):
        make_peft_config("prompt_tuning", init_text="Extract the person")
    config = make_peft_config("prompt_tuning", init_text="Extract", tokenizer_name_or_path="some/path")
    assert str(config.prompt_tuning_init).endswith("TEXT")


def test_soft_prompts_get_a_larger_learning_rate(profile) -> None:
    assert default_learning_rate("lora", profile) == profile.learning_rate
    assert default_learning_rate("prompt_tuning", profile) > default_learning_rate("lora", profile)


def test_ia3_scales_start_at_one_in_layer_order(tiny_llama) -> None:
    from common_utils.peft.methods import ia3_scales

    model = apply_peft(copy.deepcopy(tiny_llama), "ia3")
    scales = ia3_scales(model)
    assert sorted(scales) == ["down_proj", "k_proj", "v_proj"]
    assert [len(vectors) for vectors in scales.values()] == [2, 2, 2]
    assert scales["down_proj"][0].shape == (64,) and scales["k_proj"][0].shape == (16,)  # FFN input, kv width
    assert all(torch.equal(v, torch.ones_like(v)) for vectors in scales.values() for v in vectors)
    with pytest.raises(ValueError, match="ia3"):
        ia3_scales(tiny_llama)


def test_per_layer_distribution_plot_draws_one_line_per_series() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from common_utils.core.plots import plot_per_layer_distributions

    figure = plot_per_layer_distributions({"a": [[1.0, 1.1], [0.9, 1.2], [1.0, 1.0]], "b": [[2.0], [2.1], [2.2]]},
                                          ylabel="scale", title="t", reference=1.0)
    lines = figure.axes[0].get_lines()
    assert len(lines) == 3  # two medians + the reference line
    assert list(lines[1].get_ydata()) == [2.0, 2.1, 2.2]


def test_median_seconds_times_the_call_and_rejects_zero_repeats() -> None:
    import time

    from common_utils import median_seconds

    calls = []
    seconds = median_seconds(lambda: (calls.append(1), time.sleep(0.01)), repeats=3, warmup=2)
    assert len(calls) == 5 and 0.009 < seconds < 0.5
    with pytest.raises(ValueError, match="repeats"):
        median_seconds(lambda: None, repeats=0)


@pytest.mark.parametrize("method", METHODS)
def test_apply_peft_takes_the_config_written_out_and_leaves_it_untouched(method, tiny_llama) -> None:
    """A notebook may write the config itself (IA3Config(...), AdapterConfig(...)): apply_peft gives the same
    model as the method name, and peft's in-place filling of the config does not leak into the notebook's."""
    from common_utils.peft.methods import method_of

    if method == "adapter":
        config = AdapterConfig()
    else:
        config = make_peft_config(method, model=tiny_llama)
    before = copy.deepcopy(config)
    by_config = apply_peft(copy.deepcopy(tiny_llama), config)
    by_name = apply_peft(copy.deepcopy(tiny_llama), method)
    assert count_parameters(by_config).trainable == count_parameters(by_name).trainable
    assert config == before, "apply_peft must not fill the caller's config in place"
    assert method_of(config) == method


def test_apply_peft_rejects_a_config_with_overrides(tiny_llama) -> None:
    with pytest.raises(TypeError, match="config object or overrides"):
        apply_peft(copy.deepcopy(tiny_llama), AdapterConfig(), bottleneck=4)


def test_method_of_names_the_course_method() -> None:
    from common_utils.peft.methods import method_of

    from peft import LoraConfig, PrefixTuningConfig

    assert method_of(LoraConfig(r=2)) == "lora"
    assert method_of(PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM")) == "prefix_tuning"
    assert method_of(AdapterConfig(bottleneck=4)) == "adapter"
    with pytest.raises(TypeError, match="not a config the course knows"):
        method_of(object())


def test_make_peft_config_with_a_model_fills_what_apply_peft_fills(tiny_llama) -> None:
    """So a hand-written config can be checked against the recipe a later stage rebuilds with."""
    from common_utils.peft.methods import IA3_TARGETS

    from peft import IA3Config, PromptTuningConfig, PromptTuningInit

    targets, feedforward = IA3_TARGETS["llama"]
    assert make_peft_config("ia3", model=tiny_llama) == IA3Config(task_type="CAUSAL_LM", target_modules=targets,
                                                                  feedforward_modules=feedforward)
    model = copy.deepcopy(tiny_llama)
    model.name_or_path = "/models/tiny"
    assert make_peft_config("prompt_tuning", model=model, init_text="Extract.") == PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=20, prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text="Extract.", tokenizer_name_or_path="/models/tiny")
