"""The known, harmless messages third-party libraries print, silenced in one place (and only these).

Each entry names what prints it and why it is safe to hide; docs/troubleshooting.md has the details.
Only the standard library is used here, so `import common_utils` stays cheap and silent.
"""

from __future__ import annotations

import logging
import warnings

# bitsandbytes >= 0.50 on CPUs with AVX512-BF16 tries an optional fast 4-bit GEMM kernel from the
# `kernels` package at import time (peft imports bitsandbytes) and logs a warning when it is absent;
# the built-in CPU kernel is used instead and NF4 results are the same.
BNB_CPU_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
# DeepSpeed (imported by trl/accelerate when installed) warns that it falls back to its CPU accelerator
# on a machine without a GPU: that fallback is exactly what the CPU labs want.
DEEPSPEED_CPU_FALLBACK = "Setting accelerator to CPU"
# trl 1.16 reads `model.is_gradient_checkpointing`, which transformers 5 deprecated in favour of
# `is_activation_checkpointing`; nothing to change on our side until trl updates.
TRL_CHECKPOINTING_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"
# torchao 0.18 (Lab-3.1's library path; transformers imports it on every from_pretrained once installed)
# tries to load optional CUDA/other-Python-version kernel libraries and logs each failure; its CPU
# weight-only paths do not use them.
TORCHAO_LOGGER, TORCHAO_OPTIONAL_KERNELS = "torchao", "Failed to load"
# ...and registers its Enums with torch's pytree, which torch 2.13 answers with a deprecation warning
# meant for torchao's maintainers.
PYTREE_LOGGER, PYTREE_ENUM_DEPRECATION = "torch.utils._pytree", "is an Enum subclass and is now natively supported"


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _drop(logger_name: str, text: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
        logger.addFilter(_DropMessage(text))


def silence_known_noise() -> None:
    """Hide the messages above; idempotent. Anything else the libraries print still shows."""
    logging.getLogger(BNB_CPU_KERNEL_LOGGER).setLevel(logging.ERROR)
    _drop("DeepSpeed", DEEPSPEED_CPU_FALLBACK)
    _drop(TORCHAO_LOGGER, TORCHAO_OPTIONAL_KERNELS)
    _drop(PYTREE_LOGGER, PYTREE_ENUM_DEPRECATION)
    warnings.filterwarnings("ignore", message=TRL_CHECKPOINTING_DEPRECATION, category=FutureWarning)
