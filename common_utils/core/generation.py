"""Batched greedy generation from chat conversations: how every lab turns a model into replies to score;
and `forward_blocks`, the plain forward pass over token blocks that statistics hooks listen to.

Checkpoint cells score generations rather than trusting the training loss: a collapsed model can
log a low loss while it repeats tokens (measured in COURSE_DESIGN §3).
"""

from __future__ import annotations


def generate_batch(model, tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                   batch_size: int = 64, show_progress: bool = True) -> list[str]:
    """Greedy replies to chat conversations, decoded in left-padded batches with the KV cache on.

    Large batches: decoding a small model is bound by reading its weights once per token, so one
    batch of 40 prompts costs about as much as one prompt (COURSE_DESIGN §3 measurements)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    replies: list[str] = []
    try:
        starts = range(0, len(conversations), batch_size)
        for start in tqdm(starts, desc="generate", disable=not show_progress):
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                     for c in conversations[start:start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                        pad_token_id=tokenizer.pad_token_id)
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            replies.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = previous_side
    return replies


def forward_blocks(model, blocks, batch_size: int = 4) -> None:
    """Run `model` over token blocks ([n, T] ids) in batches, in eval and inference mode, outputs dropped.

    Calibration (chapter 03: input grams, block influence) collects what it needs with forward hooks
    while this runs; the hooks are the caller's, and so is removing them."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            model(blocks[start:start + batch_size].to(device))
