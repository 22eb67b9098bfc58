"""Random-weight Llama models for fast offline tests of code that needs a real transformers model
(hooks, generation, KV cache, merging) but not trained weights."""

from __future__ import annotations

from typing import Any


def random_llama(vocab_size: int = 300, hidden_size: int = 32, intermediate_size: int = 48, layers: int = 2,
                 heads: int = 4, kv_heads: int = 2, max_positions: int = 64, seed: int = 0, **config: Any):
    """A seeded LlamaForCausalLM in eval mode; extra keyword arguments go to LlamaConfig."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                                        intermediate_size=intermediate_size, num_hidden_layers=layers,
                                        num_attention_heads=heads, num_key_value_heads=kv_heads,
                                        max_position_embeddings=max_positions, **config)).eval()
