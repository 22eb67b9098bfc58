"""Shared fixtures. The embedded model is loaded once per session; tests that change it work on a copy.

Hub offline mode is set before anything imports huggingface_hub (which reads it at import time),
so no test can reach the network even when run without `make unit`.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

from common_utils import lab_sizes
from common_utils.core.runtime import Sizes

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

REPO_ROOT = Path(__file__).resolve().parents[1]
LAB01 = REPO_ROOT / "01-Core_Training_Techniques" / "02-Labs" / "PEFT_Labs" / "Lab-01-LoRA"
CAUSAL_LM = "smollm2-135m-instruct"
ENCODER = "minilm-l6-v2"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def profile() -> Sizes:
    """Lab-01's smoke sizes (the course's extraction recipe), which most recipe tests shrink further."""
    return lab_sizes(LAB01, "smoke")


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer) of the embedded 135M causal LM, fp32 on CPU. Shared: never train or wrap it."""
    from common_utils import load_causal_lm

    model, tokenizer = load_causal_lm(CAUSAL_LM, device="cpu")
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def encoder():
    """(model, tokenizer) of the embedded MiniLM encoder on CPU."""
    from common_utils import load_encoder

    model, tokenizer = load_encoder(ENCODER, device="cpu")
    model.eval()
    return model, tokenizer
