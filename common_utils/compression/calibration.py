"""Calibration and held-out text for chapter 03, and the activation statistics GPTQ, Wanda and
SparseGPT read.

Why CPython's `pydoc_data.topics`: it ships with every Python, so it is offline, licensed (PSF) and
identical on every machine; it is plain English prose about programming, close to what the course
model was trained on. Distinct topic texts in name order; even positions are calibration text, odd
positions held-out text, so calibration never sees a held-out topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

Split = Literal["calibration", "heldout"]


def prose_texts(split: Split) -> list[str]:
    """The documentation topics of one split (even-indexed topics: calibration; odd: held-out)."""
    from pydoc_data.topics import topics

    if split not in ("calibration", "heldout"):
        raise ValueError(f"split must be 'calibration' or 'heldout', not {split!r}")
    texts = list(dict.fromkeys(topics[name] for name in sorted(topics)))  # 'if' and 'else' share one text
    first = 0 if split == "calibration" else 1
    return texts[first::2]


def token_blocks(tokenizer, split: Split, n_blocks: int, block_tokens: int):
    """`n_blocks` rows of `block_tokens` token ids cut from the split's texts joined by EOS.

    Fixed-length rows need no padding, so every position is a real prediction and perplexities of
    two models over the same blocks are paired token for token."""
    import torch

    ids: list[int] = []
    for text in prose_texts(split):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= n_blocks * block_tokens:
            break
    if len(ids) < n_blocks * block_tokens:
        raise ValueError(f"the {split} split holds {len(ids)} tokens, fewer than {n_blocks} x {block_tokens}; "
                         f"ask for fewer or shorter blocks")
    return torch.tensor(ids[:n_blocks * block_tokens]).view(n_blocks, block_tokens)


def decoder_linears(model) -> dict:
    """Every nn.Linear inside the decoder blocks, by module name (the LM head and embeddings excluded:
    GPTQ, Wanda and SparseGPT papers leave them dense)."""
    import torch

    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"}


def collect_input_gram(model, blocks, batch_size: int = 4) -> dict:
    """Sum of xᵀx over every calibration token x entering each decoder linear, plus the token count.

    Returns {"tokens": n, "gram": {linear_name: (in_features, in_features) float32 tensor}}.
    GPTQ's Hessian is 2·gram/n; Wanda's input norm of column j is sqrt(gram[j, j]). Linears fed the
    same tensor (q/k/v, gate/up) share one matrix: it is computed once per forward and stored once."""
    from common_utils.core.generation import forward_blocks

    import torch

    linears = decoder_linears(model)
    gram: dict[str, torch.Tensor] = {}
    previous: dict = {"input": None, "name": None}  # q/k/v (and gate/up) are called one after another

    def hook(name: str):
        def accumulate(module, inputs) -> None:
            if inputs[0] is previous["input"]:
                gram[name] = gram[previous["name"]]
                return
            previous.update(input=inputs[0], name=name)
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            if name not in gram:
                gram[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32)
            gram[name] += (x.T @ x).cpu()
        return accumulate

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in linears.items()]
    try:
        forward_blocks(model, blocks, batch_size)
    finally:
        previous.update(input=None, name=None)
        for handle in handles:
            handle.remove()
    return {"tokens": int(blocks.numel()), "gram": gram}


def ensure_input_gram(path: str | Path, model, blocks, batch_size: int = 4) -> dict:
    """Load the cached input statistics, or collect and save them atomically (one calibration pass
    per lab, reused by every later stage)."""
    from common_utils.core.artifacts import atomic_file, ensure

    import torch

    def build() -> None:
        stats = collect_input_gram(model, blocks, batch_size)
        with atomic_file(path) as tmp:
            torch.save(stats, tmp)

    ensure(path, build, made_by="collect_input_gram over the calibration blocks")
    return torch.load(path, weights_only=True)


@contextmanager
def swapped_weights(model, weights: dict) -> Iterator[None]:
    """Temporarily replace the weights of named linears (quantized or pruned copies), restore after.

    One dense model in memory serves every variant a notebook compares."""
    modules = dict(model.named_modules())
    originals = {name: modules[name].weight.data for name in weights}
    try:
        for name, weight in weights.items():
            modules[name].weight.data = weight.to(originals[name].dtype)
        yield
    finally:
        for name, weight in originals.items():
            modules[name].weight.data = weight
