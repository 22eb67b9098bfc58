"""What DDP sends and when (launched by 03-Optimization.ipynb with torchrun).

A pure-torch MLP (no transformers import, so the launch is cheap) is wrapped in DDP with a counting
communication hook. (1) For several bucket_cap_mb values: how many all-reduce calls one backward
makes and the median step time. (2) Gradient accumulation over K micro-batches with and without
`no_sync()`: all-reduce calls per optimizer step, time, and whether both give the same gradients.
Rank 0 writes the numbers to --out as JSON.
"""

from __future__ import annotations

import argparse
import time

from common_utils import write_metrics
from common_utils.training.distributed import finish_distributed, init_distributed, max_abs_diff

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP


def make_mlp(width: int, depth: int, seed: int = 0) -> nn.Sequential:
    """The same MLP on every rank (same seed): DDP also broadcasts rank 0's weights at wrap time."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


class CommCounter:
    """All-reduce calls and bytes seen by `counting_allreduce_hook` (passed to it as the hook state)."""

    def __init__(self) -> None:
        self.calls, self.bytes = 0, 0


def counting_allreduce_hook(state: CommCounter, bucket):
    """A DDP comm hook: count the bucket, then do DDP's default all-reduce (average) of it."""
    state.calls += 1
    state.bytes += bucket.buffer().numel() * bucket.buffer().element_size()
    return allreduce_hook(None, bucket)


def wrap(width: int, depth: int, bucket_cap_mb: float, device) -> tuple[DDP, CommCounter]:
    model = DDP(make_mlp(width, depth).to(device), bucket_cap_mb=bucket_cap_mb)
    counter = CommCounter()
    model.register_comm_hook(state=counter, hook=counting_allreduce_hook)
    return model, counter


def batch(step: int, rank: int, size: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic regression batch for (step, rank): same data for every configuration compared."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(size, width, generator=gen)
    return x.to(device), x.sum(dim=1, keepdim=True).tanh().to(device)


def bucket_sweep(args, ctx) -> list[dict]:
    """All-reduce calls per backward and median step seconds for each bucket size."""
    rows = []
    for cap in args.bucket_caps:
        model, hook = wrap(args.width, args.depth, cap, ctx.device)
        times = []
        for step in range(args.steps + 1):
            if step == 1:  # DDP rebuilds its buckets after the first backward: count from the second
                hook.calls, hook.bytes, times = 0, 0, []
            x, y = batch(step, ctx.rank, args.micro_batch, args.width, ctx.device)
            dist.barrier()
            start = time.perf_counter()
            nn.functional.mse_loss(model(x), y).backward()
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        rows.append({"bucket_cap_mb": cap, "allreduce_calls_per_step": hook.calls / args.steps,
                     "mb_per_step": hook.bytes / args.steps / 2**20,
                     "median_backward_seconds": sorted(times)[len(times) // 2]})
    return rows


def accumulate(args, ctx, use_no_sync: bool) -> dict:
    """One optimizer step's worth of gradients over `accum` micro-batches; returns counts, time, grads."""
    model, hook = wrap(args.width, args.depth, 25, ctx.device)
    times = []
    for repeat in range(args.steps + 1):
        if repeat == 1:  # skip the first step, where DDP still rebuilds its buckets
            hook.calls, times = 0, []
        dist.barrier()
        start = time.perf_counter()
        for micro in range(args.accum):
            x, y = batch(micro, ctx.rank, args.micro_batch, args.width, ctx.device)
            if use_no_sync and micro < args.accum - 1:
                # forward AND backward inside no_sync: DDP decides at forward time whether to sync
                with model.no_sync():
                    (nn.functional.mse_loss(model(x), y) / args.accum).backward()  # gradients pile up locally
            else:
                (nn.functional.mse_loss(model(x), y) / args.accum).backward()  # all-reduce of the sum
        times.append(time.perf_counter() - start)
        grads = {n: p.grad.detach().clone() for n, p in model.module.named_parameters()}
        model.zero_grad(set_to_none=True)
    return {"no_sync": use_no_sync, "allreduce_calls_per_step": hook.calls / args.steps,
            "median_step_seconds": sorted(times)[len(times) // 2], "grads": grads}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--bucket-caps", type=float, nargs="+", default=[1, 5, 25, 100])
    args = parser.parse_args()

    ctx = init_distributed()
    n_params = sum(p.numel() for p in make_mlp(args.width, args.depth).parameters())
    sweep = bucket_sweep(args, ctx)
    synced, skipped = accumulate(args, ctx, False), accumulate(args, ctx, True)
    grad_diff = max_abs_diff(synced.pop("grads"), skipped.pop("grads"))
    if ctx.is_main:
        write_metrics(args.out, "comm", {
            "world_size": ctx.world_size, "backend": ctx.backend, "params": n_params,
            "param_mb": n_params * 4 / 2**20, "buckets": sweep, "accumulation_steps": args.accum,
            "accumulation": [synced, skipped], "no_sync_max_abs_grad_diff": grad_diff,
        })
        print(f"buckets {sweep}\naccumulation {synced} vs {skipped}, grad diff {grad_diff:.2e}")
    finish_distributed()


if __name__ == "__main__":
    main()
