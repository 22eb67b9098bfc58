"""Data, tensor and pipeline parallelism and sharding, by hand, on 2 processes (launched by the notebooks).

    torchrun --nproc_per_node=2 parallel_demo.py {data,tensor,pipeline,sharding} --out FILE.json

Every part builds the same small pure-torch model on every rank (same seed), runs the parallel
version, compares it with the same computation done unsplit in one process, and rank 0 writes the
differences and timings to --out. Teaching code: the library versions (DDP, Megatron-LM's layers,
torch.distributed.pipelining, FSDP) do the same with overlap and many more cases.
"""

from __future__ import annotations

import argparse
import time

from common_utils import write_metrics
from common_utils.training.distributed import finish_distributed, init_distributed

import torch
import torch.distributed as dist
from torch import nn


def mlp(width: int, depth: int, out: int = 1, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, out))


def full_batch(n: int, width: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=gen)
    return x, x[:, :1].sin()


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# ---- data parallel: all-reduce the gradients by hand ------------------------------------------------

def data_parallel(ctx, args) -> dict:
    model, reference = mlp(args.width, 2), mlp(args.width, 2)
    x, y = full_batch(args.batch, args.width)
    mine = x.chunk(ctx.world_size)[ctx.rank], y.chunk(ctx.world_size)[ctx.rank]
    nn.functional.mse_loss(model(mine[0]), mine[1]).backward()
    for p in model.parameters():  # what DDP does for you, bucket by bucket, during backward
        dist.all_reduce(p.grad)
        p.grad /= ctx.world_size
    nn.functional.mse_loss(reference(x), y).backward()  # one process, the whole batch
    grad_diff = max_diff([p.grad for p in model.parameters()], [p.grad for p in reference.parameters()])
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    checksum = torch.stack([p.sum() for p in model.parameters()]).sum().reshape(1)
    sums = [torch.zeros(1) for _ in range(ctx.world_size)]
    dist.all_gather(sums, checksum)
    return {"local_batch": len(mine[0]), "global_batch": args.batch, "max_abs_grad_diff": grad_diff,
            "weight_checksums_per_rank": [float(s) for s in sums]}


# ---- tensor parallel: Megatron-style column- and row-split Linear layers ----------------------------

class _CopyToParallel(torch.autograd.Function):
    """Megatron's `f`: identity forward; backward all-reduces the input gradient (each rank saw x)."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _ReduceFromParallel(torch.autograd.Function):
    """Megatron's `g`: all-reduce forward (sum the partial outputs); identity backward."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


class _GatherFromParallel(torch.autograd.Function):
    """Concatenate each rank's output columns; backward keeps this rank's slice of the gradient."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, grad):
        return grad.chunk(dist.get_world_size(), dim=-1)[dist.get_rank()].contiguous()


class ColumnParallelLinear(nn.Module):
    """y = x A^T + b with A's output rows (y's columns) split over ranks; each rank holds 1/p of A."""

    def __init__(self, full: nn.Linear, rank: int, world: int, gather_output: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world, dim=0)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().chunk(world)[rank].clone())
        self.gather_output = gather_output

    def forward(self, x):
        y = nn.functional.linear(_CopyToParallel.apply(x), self.weight, self.bias)
        return _GatherFromParallel.apply(y) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """y = x A^T + b with A's input columns split over ranks; the input arrives already split (the
    output of a column-parallel layer), partial outputs are summed with one all-reduce."""

    def __init__(self, full: nn.Linear, rank: int, world: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world, dim=1)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())  # added once, after the sum

    def forward(self, x_part):
        return _ReduceFromParallel.apply(nn.functional.linear(x_part, self.weight)) + self.bias


def tensor_parallel(ctx, args) -> dict:
    torch.manual_seed(0)
    up, down = nn.Linear(args.width, 4 * args.width), nn.Linear(4 * args.width, args.width)
    x, _ = full_batch(args.batch, args.width)
    x_tp, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    # (1) one column-parallel Linear, output gathered: equal to the unsplit layer
    col = ColumnParallelLinear(up, ctx.rank, ctx.world_size, gather_output=True)
    column_diff = float((col(x) - up(x)).abs().max())
    # (2) Megatron MLP: column-parallel up (no gather) -> GeLU on the local slice -> row-parallel down
    col = ColumnParallelLinear(up, ctx.rank, ctx.world_size, gather_output=False)
    row = RowParallelLinear(down, ctx.rank, ctx.world_size)
    y_tp = row(nn.functional.gelu(col(x_tp)))
    y_ref = down(nn.functional.gelu(up(x_ref)))
    y_tp.square().mean().backward()
    y_ref.square().mean().backward()
    rows = slice(ctx.rank * col.weight.shape[0], (ctx.rank + 1) * col.weight.shape[0])
    return {
        "width": args.width, "hidden": 4 * args.width,
        "column_linear_max_abs_diff": column_diff,
        "mlp_output_max_abs_diff": float((y_tp - y_ref).abs().max()),
        "up_weight_grad_max_abs_diff": float((col.weight.grad - up.weight.grad[rows]).abs().max()),
        "down_weight_grad_max_abs_diff": float((row.weight.grad - down.weight.grad[:, rows]).abs().max()),
        "input_grad_max_abs_diff": float((x_tp.grad - x_ref.grad).abs().max()),
        "params_per_rank": sum(p.numel() for p in [col.weight, col.bias, row.weight, row.bias]),
        "params_unsplit": sum(p.numel() for p in [*up.parameters(), *down.parameters()]),
        "allreduce_numel_per_forward": y_tp.numel(),
    }


# ---- pipeline parallel: two stages, GPipe schedule, the bubble measured ------------------------------

def gpipe_step(ctx, stage: nn.Module, x, y, m: int, width: int) -> tuple[float, float]:
    """One GPipe step over m micro-batches on this rank's stage; returns (busy seconds, wall seconds)."""
    stage.zero_grad()
    busy, saved = 0.0, []
    dist.barrier()
    start = time.perf_counter()
    for xi, yi in zip(x.chunk(m), y.chunk(m)):  # all forwards: stage 0 sends activations to stage 1
        if ctx.rank == 0:
            t = time.perf_counter()
            out = stage(xi)
            busy += time.perf_counter() - t
            dist.send(out.detach(), 1)
            saved.append(out)
        else:
            act = torch.empty(len(xi), width)
            dist.recv(act, 0)
            act.requires_grad_()
            t = time.perf_counter()
            loss = nn.functional.mse_loss(stage(act), yi) / m  # / m: the mean over the whole batch
            busy += time.perf_counter() - t
            saved.append((act, loss))
    for item in saved:  # all backwards: stage 1 sends activation gradients back to stage 0
        if ctx.rank == 1:
            act, loss = item
            t = time.perf_counter()
            loss.backward()
            busy += time.perf_counter() - t
            dist.send(act.grad, 0)
        else:
            grad = torch.empty_like(item)
            dist.recv(grad, 1)
            t = time.perf_counter()
            item.backward(grad)
            busy += time.perf_counter() - t
    return busy, time.perf_counter() - start


def pipeline_parallel(ctx, args) -> dict:
    """Rank 0 runs the first half of the layers, rank 1 the second half. GPipe: all micro-batch
    forwards, then all backwards. Busy time = time inside forward/backward; the rest is bubble."""
    if ctx.world_size != 2:
        raise ValueError("the pipeline demo uses exactly 2 stages: launch it with nproc=2")
    full = mlp(args.width, 2 * args.depth)
    half = len(full) // 2
    stage = full[:half] if ctx.rank == 0 else full[half:]
    reference = mlp(args.width, 2 * args.depth)
    x, y = full_batch(args.batch, args.width)
    results = []
    for m in [1, *args.micro_batches]:  # the first run is a warm-up (allocator, first-call costs): dropped
        runs = torch.tensor([gpipe_step(ctx, stage, x, y, m, args.width) for _ in range(args.repeats)])
        grads = [p.grad.clone() for p in stage.parameters()]
        both = [torch.zeros_like(runs) for _ in range(2)]
        dist.all_gather(both, runs)  # [rank][repeat] = (busy, wall)
        walls = torch.stack([b[:, 1] for b in both]).max(dim=0).values
        best = int(walls.argmin())  # the least disturbed repeat (other programs share the CPU)
        busy, wall = [float(b[best, 0]) for b in both], float(walls[best])
        results.append({"micro_batches": m, "busy_s": busy, "total_s": wall,
                        "bubble_measured": 1 - sum(busy) / (2 * wall), "bubble_formula": (2 - 1) / (m + 2 - 1)})
    results = results[1:]
    nn.functional.mse_loss(reference(x), y).backward()
    ref_stage = reference[:half] if ctx.rank == 0 else reference[half:]
    grad_diff = torch.tensor([max_diff(grads, [p.grad for p in ref_stage.parameters()])])
    dist.all_reduce(grad_diff, op=dist.ReduceOp.MAX)
    return {"stages": 2, "batch": args.batch, "width": args.width, "layers_per_stage": args.depth,
            "schedules": results, "max_abs_grad_diff_vs_single_process": float(grad_diff)}


# ---- sharding: what DDP, ZeRO-1 and FSDP (ZeRO-3) keep on each rank ---------------------------------

def _bytes(tensors) -> int:
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def _state_tensors(optimizer):
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.dim() > 0]


def sharding(ctx, args) -> dict:
    """Train the same MLP one Adam step three ways and measure per-rank bytes of parameters,
    gradients and optimizer states; check all three end with the same weights."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y = full_batch(args.batch, args.width)
    mine = x.chunk(ctx.world_size)[ctx.rank], y.chunk(ctx.world_size)[ctx.rank]
    rows, finals = {}, {}

    def step(model, optimizer):
        nn.functional.mse_loss(model(mine[0]), mine[1]).backward()
        optimizer.step()

    ddp = DDP(mlp(args.width, args.depth))
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    step(ddp, opt)
    rows["DDP"] = (list(ddp.parameters()), [p.grad for p in ddp.parameters()], _state_tensors(opt))
    finals["DDP"] = [p.detach().clone() for p in ddp.module.parameters()]

    zero1 = DDP(mlp(args.width, args.depth))
    opt = ZeroRedundancyOptimizer(zero1.parameters(), optimizer_class=torch.optim.Adam, lr=1e-3)
    step(zero1, opt)
    rows["ZeRO-1 (ZeroRedundancyOptimizer)"] = (list(zero1.parameters()), [p.grad for p in zero1.parameters()],
                                                _state_tensors(opt.optim))
    finals["ZeRO-1 (ZeroRedundancyOptimizer)"] = [p.detach().clone() for p in zero1.module.parameters()]

    fsdp = mlp(args.width, args.depth)
    for layer in fsdp:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)  # each Linear's parameters: dim 0 split over ranks, gathered just in time
    fully_shard(fsdp)
    opt = torch.optim.Adam(fsdp.parameters(), lr=1e-3)
    step(fsdp, opt)
    rows["FSDP (ZeRO-3)"] = (list(fsdp.parameters()), [p.grad for p in fsdp.parameters()], _state_tensors(opt))
    finals["FSDP (ZeRO-3)"] = [p.full_tensor().detach().clone() for p in fsdp.parameters()]

    n_params = sum(p.numel() for p in mlp(args.width, args.depth).parameters())
    measured = {name: {"params_bytes": _bytes(p), "grads_bytes": _bytes(g), "optimizer_bytes": _bytes(s)}
                for name, (p, g, s) in rows.items()}
    per_rank = [None] * ctx.world_size
    dist.all_gather_object(per_rank, measured)
    return {"params": n_params, "world_size": ctx.world_size, "per_rank": per_rank,
            "max_abs_weight_diff_vs_DDP": {name: max_diff(w, finals["DDP"]) for name, w in finals.items()}}


PARTS = {"data": data_parallel, "tensor": tensor_parallel, "pipeline": pipeline_parallel, "sharding": sharding}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ctx = init_distributed(force_cpu=True)  # the demos need 2 ranks; tiny models run on CPU (gloo) everywhere
    result = PARTS[args.part](ctx, args)
    if ctx.is_main:
        write_metrics(args.out, args.part, {"world_size": ctx.world_size, "backend": ctx.backend, **result})
        print(f"{args.part}: {result}")
    finish_distributed()


if __name__ == "__main__":
    main()
