"""DDP training of the course model (launched by 02-Train.ipynb and 04-Deploy.ipynb with torchrun).

Each rank loads the same model, DistributedDataParallel averages the gradients over ranks during
backward, and every rank takes the same optimizer step. With --check-equivalence, rank 0 also
trains a second, unwrapped copy on the concatenated global batch of the first step and reports how
far its gradients and weights are from the DDP ones. Rank 0 saves the checkpoint (model, optimizer,
step) and writes the metrics JSON; --resume continues from such a checkpoint.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from common_utils import lab_sizes, load_causal_lm, load_tokenizer, write_metrics
from common_utils.training.distributed import (
    extraction_lm_blocks,
    finish_distributed,
    init_distributed,
    load_training_state,
    max_abs_diff,
    save_training_checkpoint,
)

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from transformers import AutoModelForCausalLM


def lm_loss(model, blocks: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over every token of equal-length blocks (labels = inputs, shifted inside)."""
    return model(input_ids=blocks, labels=blocks).loss


@torch.no_grad()
def eval_loss(model, blocks: torch.Tensor, batch: int = 8) -> float:
    """Mean loss over held-out blocks (all blocks have the same length, so the mean of means is exact)."""
    model.eval()
    losses = [float(lm_loss(model, blocks[i:i + batch])) for i in range(0, len(blocks), batch)]
    model.train()
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="folder for checkpoint/ and metrics JSON")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps of this launch")
    parser.add_argument("--global-batch", type=int, default=4, help="blocks per step over all ranks")
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval-blocks", type=int, default=16)
    parser.add_argument("--check-equivalence", action="store_true")
    parser.add_argument("--resume", default=None, help="checkpoint folder to continue from")
    parser.add_argument("--metrics-name", default="train_ddp.json")
    args = parser.parse_args()

    ctx = init_distributed()
    if args.global_batch % ctx.world_size:
        raise ValueError(f"--global-batch {args.global_batch} must be divisible by the {ctx.world_size} ranks")
    # model key and seed of the active profile (this lab's lab.yaml); steps, batch, length come as arguments
    sizes = lab_sizes(Path(__file__).resolve().parent)
    torch.manual_seed(sizes.seed)
    tokenizer = load_tokenizer(sizes.model)
    if args.resume:
        model = AutoModelForCausalLM.from_pretrained(args.resume, dtype=torch.float32).to(ctx.device)
    else:
        model, _ = load_causal_lm(sizes.model, dtype=torch.float32, device=ctx.device)
    model.config.use_cache = False
    model.train()

    train_blocks = extraction_lm_blocks(tokenizer, "train", args.seq_len)
    eval_blocks = extraction_lm_blocks(tokenizer, "valid", args.seq_len, args.eval_blocks).to(ctx.device)
    # DistributedSampler gives each rank a disjoint slice (rank::world_size) of every global batch
    sampler = DistributedSampler(TensorDataset(train_blocks), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=sizes.seed)
    loader = DataLoader(TensorDataset(train_blocks), batch_size=args.global_batch // ctx.world_size, sampler=sampler)

    ddp = DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=args.lr, weight_decay=0.0)
    start_step, history = 0, []
    if args.resume:
        start_step, extra = load_training_state(args.resume, optimizer)
        history = extra.get("history", [])
    eval_before = eval_loss(model, eval_blocks) if ctx.is_main else math.nan

    equivalence = None
    # resume where the data order left off: same epoch (shuffle seed), skipping batches already seen
    step, t0 = start_step, time.perf_counter()
    epoch, skip = divmod(start_step, len(loader))
    step_seconds = []
    while step < start_step + args.steps:
        sampler.set_epoch(epoch)  # new shuffle per epoch, identical on every rank
        for index, (local,) in enumerate(loader):
            if index < skip:
                continue
            if step >= start_step + args.steps:
                break
            t_step = time.perf_counter()
            local = local.to(ctx.device)
            loss = lm_loss(ddp, local)
            loss.backward()  # DDP all-reduces (averages) gradients bucket by bucket during backward
            if args.check_equivalence and step == start_step:
                equivalence = check_equivalence(ctx, model, optimizer, local, args, sizes)
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            mean_loss /= ctx.world_size
            history.append({"step": step + 1, "loss": float(mean_loss)})
            step_seconds.append(time.perf_counter() - t_step)
            if ctx.is_main:
                print(f"step {step + 1}: loss {float(mean_loss):.4f} ({step_seconds[-1]:.1f} s)", flush=True)
            step += 1
        epoch, skip = epoch + 1, 0

    if ctx.is_main:
        eval_after = eval_loss(model, eval_blocks)
        checkpoint = save_training_checkpoint(f"{args.out}/checkpoint", ddp, optimizer, step, tokenizer,
                                              extra={"history": history, "eval_loss": eval_after})
        write_metrics(f"{args.out}/{args.metrics_name}", "ddp", {
            "world_size": ctx.world_size, "backend": ctx.backend, "global_batch": args.global_batch,
            "seq_len": args.seq_len, "lr": args.lr, "start_step": start_step, "end_step": step,
            "history": history, "eval_loss_before": eval_before, "eval_loss_after": eval_after,
            "median_step_seconds": sorted(step_seconds)[len(step_seconds) // 2],
            "seconds": time.perf_counter() - t0, "equivalence": equivalence, "checkpoint": str(checkpoint),
        })
    dist.barrier()  # other ranks wait until rank 0 has written the checkpoint
    finish_distributed()


def check_equivalence(ctx, model, optimizer, local, args, sizes) -> dict | None:
    """Compare DDP's averaged gradients and post-step weights with one process on the global batch.

    Called after the first DDP backward. Every rank sends its local batch to rank 0, which rebuilds
    the concatenated global batch and trains an unwrapped copy of the starting weights on it."""
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local)
    result = None
    if ctx.is_main:
        reference, _ = load_causal_lm(sizes.model, dtype=torch.float32, device=ctx.device) if not args.resume \
            else (AutoModelForCausalLM.from_pretrained(args.resume, dtype=torch.float32).to(ctx.device), None)
        reference.config.use_cache = False
        reference.train()
        ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=args.lr, weight_decay=0.0)
        if args.resume:
            load_training_state(args.resume, ref_optimizer)
        ref_loss = lm_loss(reference, torch.cat(gathered))
        ref_loss.backward()
        grad_diff = max_abs_diff({n: p.grad for n, p in model.named_parameters()},
                                 {n: p.grad for n, p in reference.named_parameters()})
        grad_scale = max(float(p.grad.abs().max()) for p in reference.parameters())
        ref_optimizer.step()
    optimizer.step()
    if ctx.is_main:
        weight_diff = max_abs_diff(dict(model.named_parameters()), dict(reference.named_parameters()))
        result = {"global_batch_loss_single_process": float(ref_loss.detach()), "max_abs_grad_diff": grad_diff,
                  "max_abs_grad": grad_scale, "max_abs_weight_diff_after_step": weight_diff, "lr": args.lr}
        print(f"equivalence: grad diff {grad_diff:.2e} (max |grad| {grad_scale:.2e}), weight diff {weight_diff:.2e}")
        del reference, ref_optimizer
    dist.barrier()
    return result


if __name__ == "__main__":
    main()
