"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/01-Teacher_Student_Setup.ipynb
    03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/02-KD_Loss_from_Scratch.ipynb
    03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/03-Heal_with_KD_vs_SFT.ipynb
    03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/04-Library_KD_and_Deploy.ipynb

Edit the notebook's `#@save distill` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/01-Teacher_Student_Setup.ipynb ----
import copy
import json
from pathlib import Path

import torch  # noqa: F811 (a #@save cell carries its own imports)


def ensure_block_influence(path, model, blocks) -> list[float]:
    """ShortGPT block influence of every decoder block, measured once on `blocks` and cached as JSON
    (Lab-3.2's `block_influence`); later stages read the file instead of re-measuring."""
    from common_utils.core.artifacts import atomic_file, ensure
    from common_utils.reference.pruning import block_influence

    def build() -> None:
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps(block_influence(model, blocks)))

    ensure(path, build, made_by="01-Teacher_Student_Setup (block_influence on the calibration blocks)")
    return json.loads(Path(path).read_text())


def lowest_influence(influence: list[float], n: int) -> list[int]:
    """Indices of the n blocks whose removal should hurt least (smallest influence first)."""
    return sorted(range(len(influence)), key=influence.__getitem__)[:n]


def pruned_student(teacher, drop: list[int]):
    """A depth-pruned copy of the teacher: same embeddings, norms and LM head, minus the `drop` blocks.
    Initialised from the teacher, so distillation starts close to what it has to recover."""
    from common_utils.reference.pruning import drop_blocks

    student = drop_blocks(copy.deepcopy(teacher), drop)
    student.config.use_cache = True
    return student.eval()

# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/01-Teacher_Student_Setup.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)
import torch.nn.functional as F  # noqa: F811


def task_batch(tokenizer, conversations_with_answer, conversations_prompt):
    """Right-padded input_ids, attention_mask and labels for teacher-forced task scoring: labels are -100
    except on the answer tokens and the end-of-turn token that follows them (what greedy decoding must emit)."""
    ids, labels = [], []
    for full, prompt in zip(conversations_with_answer, conversations_prompt):
        full_ids = tokenizer.apply_chat_template(full, tokenize=True, return_dict=False)
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
        if full_ids[:len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template tokenizes the prompt differently inside the full conversation")
        end = full_ids.index(tokenizer.eos_token_id, len(prompt_ids)) + 1  # answer + <|im_end|>
        ids.append(full_ids[:end])
        labels.append([-100] * len(prompt_ids) + full_ids[len(prompt_ids):end])
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    return {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in ids]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
            "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels])}


def task_scores(model, batch, batch_size: int = 8) -> dict:
    """Answer-token perplexity and greedy exact match, both from one teacher-forced pass: greedy decoding
    reproduces the reference iff every answer position's argmax is the next reference token."""
    model.eval()
    device = next(model.parameters()).device
    nll, tokens, exact = 0.0, 0, []
    with torch.inference_mode():
        for start in range(0, len(batch["input_ids"]), batch_size):
            part = {k: v[start:start + batch_size].to(device) for k, v in batch.items()}
            logits = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits[:, :-1].float()
            target = part["labels"][:, 1:]
            mask = target != -100
            nll += F.cross_entropy(logits[mask], target[mask], reduction="sum").item()
            tokens += int(mask.sum())
            exact += ((logits.argmax(-1) == target) | ~mask).all(-1).tolist()
    return {"answer_ppl": float(torch.tensor(nll / tokens).exp()), "exact_match": sum(exact) / len(exact),
            "answer_tokens": tokens, "n": len(exact)}

# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/01-Teacher_Student_Setup.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)


def chat_token_blocks(tokenizer, conversations, n_blocks: int, block_tokens: int):
    """Chat-templated conversations joined end to end and cut into n_blocks rows of block_tokens ids
    (packing: no padding, every position is a real next-token prediction)."""
    ids: list[int] = []
    for messages in conversations:
        ids.extend(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
        if len(ids) >= n_blocks * block_tokens:
            break
    if len(ids) < n_blocks * block_tokens:
        raise ValueError(f"{len(ids)} tokens, fewer than {n_blocks} x {block_tokens}: ask for fewer blocks")
    return torch.tensor(ids[:n_blocks * block_tokens]).view(n_blocks, block_tokens)


def teacher_topk(teacher, blocks, k: int, batch_size: int = 8) -> dict:
    """The teacher's k most likely next tokens at every position of `blocks`: their log-probabilities
    (under the full-vocabulary softmax, so the tail mass 1 - sum(exp) is known) and their ids."""
    teacher.eval()
    device = next(teacher.parameters()).device
    values, ids = [], []
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            logits = teacher(blocks[start:start + batch_size].to(device)).logits.float()
            top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
            values.append(top.values.cpu())
            ids.append(top.indices.to(torch.int32).cpu())
    return {"blocks": blocks, "logprobs": torch.cat(values), "ids": torch.cat(ids)}


def ensure_teacher_topk(path, teacher, blocks, k: int) -> dict:
    """Load the cached top-k teacher distributions, or compute and save them atomically."""
    from common_utils.core.artifacts import atomic_file, ensure

    def build() -> None:
        with atomic_file(path) as tmp:
            torch.save(teacher_topk(teacher, blocks, k), tmp)

    ensure(path, build, made_by="01-Teacher_Student_Setup (teacher_topk on the packed training chats)")
    cache = torch.load(path, weights_only=True)
    if not torch.equal(cache["blocks"], blocks) or cache["ids"].shape[-1] != k:
        raise ValueError(f"{path} was built for other blocks or another k: delete it and rerun")
    return cache

# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/02-KD_Loss_from_Scratch.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)
import torch.nn.functional as F  # noqa: F811


def forward_kl(student_logits, teacher_logits, temperature: float = 1.0):
    """Hinton's KD loss: T^2 * KL(p_teacher || q_student) at temperature T, averaged over positions.
    Logits (..., vocab); the T^2 keeps gradient magnitudes comparable across temperatures."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.mean() * temperature ** 2


def reverse_kl(student_logits, teacher_logits, temperature: float = 1.0):
    """MiniLLM's direction: T^2 * KL(q_student || p_teacher), the expectation under the student's own
    distribution, so mass the student puts where the teacher has little is punished hardest."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    return kl.mean() * temperature ** 2


def topk_forward_kl(student_logits, teacher_top_logprobs, teacher_top_ids, tail: bool = True):
    """Forward KL against a cached top-k teacher: the k tokens plus one 'tail' bucket holding the rest of
    the mass on both sides. A coarsening of the full distributions, so it never exceeds the full KL
    and equals it at k = vocab. Without the tail bucket the teacher's top-k is renormalised to sum to 1
    and the student is pushed to put all its mass on those k tokens."""
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    log_q_top = log_q.gather(-1, teacher_top_ids.long())
    log_p_top = teacher_top_logprobs.float()
    if not tail:
        log_p_top = log_p_top - torch.logsumexp(log_p_top, dim=-1, keepdim=True)
        return (log_p_top.exp() * (log_p_top - log_q_top)).sum(-1).mean()
    p_tail = (1 - log_p_top.exp().sum(-1)).clamp_min(1e-12)
    q_tail = (1 - log_q_top.exp().sum(-1)).clamp_min(1e-12)
    kl = (log_p_top.exp() * (log_p_top - log_q_top)).sum(-1) + p_tail * (p_tail.log() - q_tail.log())
    return kl.mean()

# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/03-Heal_with_KD_vs_SFT.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)


def heal(student, blocks, loss_fn, steps: int, batch_size: int, lr: float, first_trainable: int) -> list[float]:
    """Train the student's decoder blocks from `first_trainable` up (everything below, embeddings and the
    tied LM head frozen) for `steps` AdamW steps over consecutive batches of `blocks`.
    `loss_fn(logits, rows)` gets the student's logits for positions 0..T-2 and the row indices, so a KD loss
    can look up cached teacher targets for exactly those rows. Returns the loss of every step."""
    for param in student.parameters():
        param.requires_grad_(False)
    trainable = [p for block in student.model.layers[first_trainable:] for p in block.parameters()]
    for param in trainable:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    device = next(student.parameters()).device
    student.train()
    losses = []
    for step in range(steps):
        rows = torch.arange(step * batch_size, (step + 1) * batch_size) % len(blocks)
        logits = student(blocks[rows].to(device)).logits[:, :-1]
        loss = loss_fn(logits, rows)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    for param in student.parameters():
        param.requires_grad_(True)
    return losses


def kd_loss_fn(cache):
    """The KD target of `heal`: forward KL to the cached top-k teacher distribution (+ tail bucket) at the
    same rows and positions the student predicts."""
    def loss(logits, rows):
        top_logprobs = cache["logprobs"][rows, :-1].to(logits.device)
        return topk_forward_kl(logits, top_logprobs, cache["ids"][rows, :-1].to(logits.device))
    return loss

# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/03-Heal_with_KD_vs_SFT.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)


def paired_bootstrap(nll_a, nll_b, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Mean per-token NLL difference a - b over the same tokens, with a 95% bootstrap interval
    (tokens resampled with replacement). Upper bound < 0: model a is better on these tokens."""
    diff = (nll_a - nll_b).reshape(-1).double()
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(diff), (n_resamples, len(diff)), generator=generator)
    means = diff[picks].mean(-1)
    return {"mean": diff.mean().item(), "low": means.quantile(0.025).item(), "high": means.quantile(0.975).item(),
            "tokens": len(diff), "a_better_fraction": (diff < 0).double().mean().item()}

# ---- from 03-Model_Compression/02-Labs/Lab-3.3-Knowledge_Distillation/04-Library_KD_and_Deploy.ipynb ----
import torch  # noqa: F811 (a #@save cell carries its own imports)


def greedy_reply_ids(model, tokenizer, conversations, max_new_tokens: int) -> list[list[int]]:
    """(prompt ids, greedy reply ids up to and including EOS) per conversation, one at a time (no padding)."""
    pairs = []
    with torch.inference_mode():
        for messages in conversations:
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)["input_ids"].to(model.device)
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                 do_sample=False, repetition_penalty=1.0, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
            pairs.append((prompt[0].tolist(), out[0, prompt.shape[1]:].tolist()))
    return pairs


def draft_matches(draft, prompt_ids: list[int], reply_ids: list[int]) -> list[bool]:
    """matches[i]: the draft's argmax after prompt + reply[:i] equals reply[i] (teacher forcing). Feeds
    Lab-2.2's `greedy_acceptance`, which replays greedy speculative decoding from these exactly."""
    ids = torch.tensor([prompt_ids + reply_ids], device=draft.device)
    with torch.inference_mode():
        logits = draft(ids).logits[0, len(prompt_ids) - 1:-1]
    return (logits.argmax(-1).cpu() == torch.tensor(reply_ids)).tolist()
