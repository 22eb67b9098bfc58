"""Process groups, ranks and all-reduce by hand (launched by 01-Setup.ipynb with torchrun).

Each rank: (1) joins the process group, (2) all-reduces a tensor whose value is rank + 1 and checks
the sum, (3) runs a ring all-reduce written with send/recv and checks it against dist.all_reduce,
(4) times dist.all_reduce for growing message sizes. Rank 0 writes everything to --out as JSON.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from common_utils import write_metrics
from common_utils.training.distributed import finish_distributed, init_distributed

import torch
import torch.distributed as dist


def ring_all_reduce(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum `tensor` over all ranks with the ring algorithm; returns (result, elements this rank sent).

    The tensor is cut into world_size chunks. Reduce-scatter: in world_size - 1 steps each rank sends
    one chunk to its right neighbour and adds the chunk arriving from its left one, so each rank ends
    up owning one fully summed chunk. All-gather: world_size - 1 more steps pass the summed chunks
    around. Each rank sends 2 (p - 1) / p of the tensor: independent of p, the reason rings scale."""
    rank, world = dist.get_rank(), dist.get_world_size()
    chunks = list(tensor.clone().chunk(world))
    right, left = (rank + 1) % world, (rank - 1) % world
    sent = 0
    for step in range(world - 1):  # reduce-scatter
        send_idx, recv_idx = (rank - step) % world, (rank - step - 1) % world
        incoming = torch.empty_like(chunks[recv_idx])
        ops = [dist.P2POp(dist.isend, chunks[send_idx], right), dist.P2POp(dist.irecv, incoming, left)]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        chunks[recv_idx] = chunks[recv_idx] + incoming
        sent += chunks[send_idx].numel()
    for step in range(world - 1):  # all-gather
        send_idx, recv_idx = (rank - step + 1) % world, (rank - step) % world
        incoming = torch.empty_like(chunks[recv_idx])
        ops = [dist.P2POp(dist.isend, chunks[send_idx], right), dist.P2POp(dist.irecv, incoming, left)]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        chunks[recv_idx] = incoming
        sent += chunks[send_idx].numel()
    return torch.cat(chunks), sent


def time_all_reduce(numel: int, device: torch.device, repeats: int) -> float:
    """Median seconds of dist.all_reduce on a float32 tensor of `numel` elements."""
    x = torch.ones(numel, device=device)
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="JSON file rank 0 writes")
    parser.add_argument("--ring-numel", type=int, default=1_000_003)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6, 4 * 10**6])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    ctx = init_distributed()
    # (1) who am I: every rank contributes one record, all_gather_object collects them everywhere
    me = {"rank": ctx.rank, "local_rank": ctx.local_rank, "world_size": ctx.world_size, "pid": os.getpid(),
          "host": socket.gethostname(), "backend": ctx.backend, "device": str(ctx.device)}
    everyone: list[dict] = [None] * ctx.world_size  # type: ignore[list-item]
    dist.all_gather_object(everyone, me)

    # (2) all-reduce: rank r holds r + 1, so the sum must be 1 + 2 + ... + world_size on every rank
    value = torch.full((4,), float(ctx.rank + 1), device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    expected = ctx.world_size * (ctx.world_size + 1) / 2
    sums = [None] * ctx.world_size
    dist.all_gather_object(sums, value.tolist())

    # (3) ring all-reduce by hand vs the library
    torch.manual_seed(ctx.rank)
    data = torch.randn(args.ring_numel, device=ctx.device)
    mine, sent = ring_all_reduce(data)
    reference = data.clone()
    dist.all_reduce(reference)
    ring_error = float((mine - reference).abs().max())

    # (4) all-reduce time vs message size
    timings = [{"numel": n, "mb": n * 4 / 2**20, "seconds": time_all_reduce(n, ctx.device, args.repeats)}
               for n in args.sizes]
    if ctx.is_main:
        write_metrics(args.out, "allreduce", {
            "ranks": everyone, "sums": sums, "expected_sum": expected,
            "ring": {"numel": args.ring_numel, "max_abs_error_vs_all_reduce": ring_error,
                     "elements_sent_by_rank0": sent,
                     "formula_2(p-1)/p*N": 2 * (ctx.world_size - 1) / ctx.world_size * args.ring_numel},
            "timings": timings,
        })
        print(f"rank 0: sums {sums}, ring error {ring_error:.2e}, wrote {args.out}")
    finish_distributed()


if __name__ == "__main__":
    main()
