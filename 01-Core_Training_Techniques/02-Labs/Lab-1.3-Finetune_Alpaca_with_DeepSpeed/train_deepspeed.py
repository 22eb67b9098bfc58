"""Alpaca-format SFT with DeepSpeed ZeRO (launched by the lab's notebooks with torchrun or accelerate).

Plain DeepSpeed (`--stages 0 1 2 3`): the same processes train a fresh copy of the model once per
ZeRO stage, a few optimizer steps each, and measure what every rank holds (parameters, gradients,
optimizer states) during the second step, after a micro-batch that is not an accumulation boundary.
With `--accelerate` the script is started by `accelerate launch --config_file ...`: the DeepSpeed
plugin builds the engine from the same JSON config, and the run ends with a ZeRO checkpoint
(`engine.save_checkpoint`) that the notebook consolidates with DeepSpeed's zero_to_fp32 utility.
Rank 0 writes one metrics JSON with every rank's numbers (gathered over the process group).
Sizes (sequence length, layers kept, data source, ...) come as arguments; an argument left out takes
the active profile's value from this lab's lab.yaml (`lab_sizes`), as the model and the seed do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from common_utils import lab_sizes, load_causal_lm, load_tokenizer, write_metrics
from common_utils.tasks.alpaca import alpaca_sft_tensors, load_alpaca
from common_utils.training.deepspeed import rank_model_states, zero_train_config
from common_utils.training.memory import truncate_layers

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def build_model(sizes, layers: int):
    """The course model in fp32, cut to its first `layers` decoder layers (0 = all of them)."""
    torch.manual_seed(sizes.seed)
    model, _ = load_causal_lm(sizes.model, dtype=torch.float32, device="cpu")
    if layers:
        truncate_layers(model, layers)
    model.config.use_cache = False
    return model


def mean_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def train(engine, loader, steps: int, grad_accum: int, device) -> dict:
    """`steps` optimizer steps of `grad_accum` micro-batches. The rank's model states are measured in
    the second step twice: after the first backward (gradients still accumulating) and after the last
    one (the accumulation boundary: gradients reduced, optimizer step next)."""
    losses, seconds, states = [], [], {}
    batches = iter(loader)
    for step in range(steps):
        start, total = time.perf_counter(), 0.0
        for micro in range(grad_accum):
            try:
                input_ids, mask, labels = next(batches)
            except StopIteration:
                batches = iter(loader)
                input_ids, mask, labels = next(batches)
            loss = engine(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            engine.backward(loss)
            if step == 1:  # Adam's moments exist from step 0's update
                if micro == 0 and grad_accum > 1:
                    states["accumulating"] = rank_model_states(engine)
                if micro == grad_accum - 1:
                    states["boundary"] = rank_model_states(engine)
            engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
            total += float(loss.detach())
        losses.append(mean_over_ranks(total / grad_accum))
        seconds.append(time.perf_counter() - start)
        if dist.get_rank() == 0:
            print(f"step {step + 1}: loss {losses[-1]:.4f} ({seconds[-1]:.1f} s)", flush=True)
    return {"losses": losses, "step_seconds": seconds, "states": states}


def gathered(record: dict) -> list:
    """Every rank's record, in rank order (all_gather_object over the gloo/NCCL group)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, record)
    return out


def main() -> None:
    sizes = lab_sizes(Path(__file__).resolve().parent)  # defaults: the active profile's block of lab.yaml
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="metrics JSON written by rank 0 (section deepspeed/accelerate)")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3], help="ZeRO stages (plain DeepSpeed)")
    parser.add_argument("--accelerate", action="store_true", help="started by accelerate launch (stage from its config)")
    parser.add_argument("--save", default=None, help="folder for the final ZeRO checkpoint (accelerate route)")
    parser.add_argument("--steps", type=int, default=sizes.zero_steps,
                        help="optimizer steps (>= 2: memory is measured in the second)")
    parser.add_argument("--micro-batch", type=int, default=sizes.micro_batch)
    parser.add_argument("--grad-accum", type=int, default=sizes.grad_accum)
    parser.add_argument("--seq-len", type=int, default=sizes.seq_len)
    parser.add_argument("--layers", type=int, default=sizes.layers, help="decoder layers kept (0 = all of them)")
    parser.add_argument("--source", choices=["course", "hub"], default=sizes.data_source,
                        help="Alpaca data: the course's offline split or tatsu-lab/alpaca")
    parser.add_argument("--examples", type=int, default=sizes.train_examples,
                        help="training examples (0 = the whole split)")
    parser.add_argument("--lr", type=float, default=sizes.learning_rate)
    args = parser.parse_args()
    if args.steps < 2 or args.grad_accum < 2:
        parser.error("--steps and --grad-accum must be >= 2: memory is measured during the second step, "
                     "once while gradients accumulate and once at the boundary")

    import deepspeed

    layers = args.layers
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    accelerator = None
    if args.accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator()
    else:
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    tokenizer = load_tokenizer(sizes.model)  # its pad token is set, and distinct from EOS
    source = args.source
    data = alpaca_sft_tensors(tokenizer, load_alpaca("train", args.examples or None, source), args.seq_len,
                              drop_long=source == "hub")  # the hub's records vary in length; the course's fit
    dataset = TensorDataset(data["input_ids"], data["attention_mask"], data["labels"])

    result = {"world_size": world, "layers": layers, "source": source, "seq_len": args.seq_len,
              "micro_batch": args.micro_batch, "grad_accum": args.grad_accum, "steps": args.steps,
              "device": device.type, "stages": {}}
    runs = [None] if args.accelerate else args.stages
    for stage in runs:
        model = build_model(sizes, layers)
        partitioned_at_load = any(hasattr(p, "ds_tensor") for p in model.parameters())
        # ds_numel: the full size of a parameter already partitioned at load time (zero.Init under ZeRO-3)
        numels = [getattr(p, "ds_numel", p.numel()) for p in model.parameters()]  # ZeRO-1/2 flattening order
        n_params = sum(numels)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
        if accelerator is not None:
            loader = DataLoader(dataset, batch_size=args.micro_batch, shuffle=True,
                                generator=torch.Generator().manual_seed(sizes.seed))
            engine, _, loader = accelerator.prepare(model, optimizer, loader)  # engine: a DeepSpeedEngine
            stage = engine.zero_optimization_stage()
        else:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=sizes.seed)
            loader = DataLoader(dataset, batch_size=args.micro_batch, sampler=sampler)
            config = zero_train_config(stage, args.micro_batch, args.grad_accum, world)
            engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        grad_accum = engine.gradient_accumulation_steps()
        start = time.perf_counter()
        run = train(engine, loader, args.steps, grad_accum, device)
        record = {"n_params": n_params, "losses": run["losses"], "step_seconds": run["step_seconds"],
                  "seconds": time.perf_counter() - start, "per_rank": gathered(run["states"]),
                  "param_numels": numels, "partitioned_at_load": partitioned_at_load}
        result["stages"][str(stage)] = record
        if args.save:
            save_checkpoint(engine, tokenizer, model.config, Path(args.save), rank)
        engine.destroy()
        del engine, model, optimizer
    if rank == 0:
        write_metrics(args.out, "deepspeed" if not args.accelerate else "accelerate", result)
        print(json.dumps({k: v for k, v in result.items() if k != "stages"}))
    dist.barrier()
    dist.destroy_process_group()


def save_checkpoint(engine, tokenizer, config, folder: Path, rank: int) -> None:
    """A ZeRO checkpoint (every rank writes its own partition files) plus the model config and
    tokenizer, in a temporary sibling that rank 0 swaps in once every rank has finished writing."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if rank == 0 and tmp.exists():
        shutil.rmtree(tmp)
    dist.barrier()
    engine.save_checkpoint(str(tmp), tag="final")
    dist.barrier()
    if rank == 0:
        config.use_cache = True  # off for training only; generation from the saved model wants the KV cache
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    dist.barrier()


if __name__ == "__main__":
    main()
