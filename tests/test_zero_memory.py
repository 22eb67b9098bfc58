"""common_utils.training.deepspeed (what one rank holds) and .memory: byte counting over
overlapping views, the fp32 ZeRO formulas, the partition-overlap rule and the two config writers.
The DeepSpeed engine is replaced by a stand-in with the same attribute names (the lab's notebooks
measure the real one on 2 processes)."""

from __future__ import annotations

from types import SimpleNamespace

from common_utils.training.deepspeed import (
    accelerate_deepspeed_yaml,
    overlapping_param_numel,
    rank_model_states,
    union_bytes,
    zero_train_config,
)
from common_utils.training.memory import fp32_zero_bytes

import pytest
import torch


def test_union_bytes_counts_overlaps_once() -> None:
    assert union_bytes([]) == 0
    assert union_bytes([(0, 10), (5, 15), (20, 30)]) == 25
    assert union_bytes([(0, 10), (0, 10), (2, 3)]) == 10


def test_fp32_formulas_follow_the_zero_partitioning() -> None:
    n, r = 1000, 4
    assert fp32_zero_bytes(n, r, 0) == {"params": 4000, "grads": 4000, "optimizer": 8000}  # no master copy
    assert fp32_zero_bytes(n, r, 1) == {"params": 4000, "grads": 4000, "optimizer": 3000}
    assert fp32_zero_bytes(n, r, 2) == {"params": 4000, "grads": 1000, "optimizer": 3000}
    assert fp32_zero_bytes(n, r, 3) == {"params": 1000, "grads": 1000, "optimizer": 3000}
    assert fp32_zero_bytes(n, 1, 0, master_copy=True)["optimizer"] == 12 * n
    with pytest.raises(ValueError, match="stage"):
        fp32_zero_bytes(n, r, 4)
    with pytest.raises(ValueError, match="positive"):
        fp32_zero_bytes(0, r, 1)


def test_overlapping_params_include_a_tensor_that_crosses_the_slice_boundary() -> None:
    numels = [80, 10, 10]  # an "embedding" of 80 crosses the boundary at 50 of 2 slices
    assert overlapping_param_numel(numels, 2, 0) == 80
    assert overlapping_param_numel(numels, 2, 1) == 100
    assert overlapping_param_numel([25, 25, 25, 25], 2, 1) == 50
    with pytest.raises(ValueError, match="rank"):
        overlapping_param_numel(numels, 2, 2)


def _fake_zero_engine():
    """A ZeRO-1/2-shaped stand-in: params are views of one flat buffer, the fp32 master partition and
    the moments belong to the optimizer, the gradient partition is a view of a flat grad buffer."""
    flat = torch.zeros(100)
    weight, bias = flat[:90].view(9, 10), flat[90:]
    module = torch.nn.Module()
    module.weight, module.bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)
    master = torch.zeros(50)
    inner = SimpleNamespace(state={0: {"exp_avg": torch.zeros(50), "exp_avg_sq": torch.zeros(50)}})
    grad_flat = torch.zeros(50)
    optimizer = SimpleNamespace(optimizer=inner, single_partition_of_fp32_groups=[master],
                                averaged_gradients={0: [grad_flat[:30], grad_flat[30:], grad_flat[10:20]]})
    return SimpleNamespace(module=module, optimizer=optimizer)


def test_rank_model_states_counts_each_category_once() -> None:
    engine = _fake_zero_engine()
    states = rank_model_states(engine)
    assert states == {"params": 400, "grads": 200, "optimizer": 400 + 200}


def test_rank_model_states_counts_zero3_partitions_and_plain_grads() -> None:
    layer = torch.nn.Linear(4, 4, bias=False)
    layer.weight.ds_tensor = torch.zeros(8)  # this rank's half of the 16 elements
    layer.weight.grad = torch.zeros(4, 4)
    inner = SimpleNamespace(state={})
    engine = SimpleNamespace(module=layer, optimizer=SimpleNamespace(optimizer=inner))
    assert rank_model_states(engine) == {"params": 32, "grads": 64, "optimizer": 0}


def test_zero_train_config_fills_the_global_batch() -> None:
    config = zero_train_config(2, micro_batch=1, grad_accum=2, world_size=2)
    assert config["train_batch_size"] == 4 and config["zero_optimization"] == {"stage": 2}
    assert "optimizer" not in config  # the script passes its own torch AdamW
    offload = zero_train_config(2, 1, 2, 2, offload_optimizer=True)
    assert offload["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    with pytest.raises(ValueError, match="offload"):
        zero_train_config(0, 1, 2, 2, offload_optimizer=True)


def test_accelerate_yaml_points_at_the_deepspeed_json(tmp_path) -> None:
    import yaml

    path = accelerate_deepspeed_yaml(tmp_path / "acc.yaml", tmp_path / "ds.json", num_processes=2, port=29999)
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["num_processes"] == 2
    assert config["deepspeed_config"]["deepspeed_config_file"] == str((tmp_path / "ds.json").resolve())
    assert config["main_process_port"] == 29999 and config["use_cpu"] is (not torch.cuda.is_available())


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA the CPU comm op is not built")
def test_comm_op_helper_removes_a_stale_lock_and_reports_the_cache(tmp_path, monkeypatch, capsys) -> None:
    import os

    from common_utils.training.deepspeed import ensure_deepspeed_cpu_comm_op

    import torch.utils.cpp_extension as cpp_extension
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    library = tmp_path / "deepspeed_shm_comm.so"

    def compile_library(self, verbose=False) -> None:  # what a (re)build does: write the shared library
        library.write_text("")
        os.utime(library, (library.stat().st_atime, library.stat().st_mtime + 1))

    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    monkeypatch.setattr(ShareMemCommBuilder, "load", compile_library)
    monkeypatch.setattr(ShareMemCommBuilder, "is_compatible", lambda self, verbose=False: True)
    lock = tmp_path / "lock"
    lock.write_text("")
    os.utime(lock, (0, 0))  # as old as a build killed long ago
    result = ensure_deepspeed_cpu_comm_op()
    assert not lock.exists() and "stale build lock" in capsys.readouterr().out
    assert result["built"] is True and result["folder"] == str(tmp_path)
    assert ensure_deepspeed_cpu_comm_op()["built"] is True, "a cached library that ninja rebuilt counts as built"
    monkeypatch.setattr(ShareMemCommBuilder, "load", lambda self, verbose=False: None)  # loaded from the cache
    assert ensure_deepspeed_cpu_comm_op()["built"] is False
    monkeypatch.setattr(ShareMemCommBuilder, "is_compatible", lambda self, verbose=False: False)
    assert "not supported" in ensure_deepspeed_cpu_comm_op()["reason"]


def test_accelerate_command_uses_this_interpreter_and_config(tmp_path) -> None:
    import sys

    from common_utils.training.deepspeed import accelerate_command, launch_accelerate

    command = accelerate_command(tmp_path / "acc.yaml", "train.py", ["--steps", 2])
    assert command[:5] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "acc.yaml")]
    assert command[5:] == ["train.py", "--steps", "2"]
    script = tmp_path / "train.py"
    script.write_text("")
    with pytest.raises(FileNotFoundError, match="accelerate_deepspeed_yaml"):
        launch_accelerate(script, config_file=tmp_path / "missing.yaml")


def test_write_zero_configs_pairs_the_json_and_the_yaml(tmp_path) -> None:
    import json

    from common_utils.training.deepspeed import write_zero_configs

    import yaml

    ds_json, acc_yaml = write_zero_configs(tmp_path, stage=3, micro_batch=1, grad_accum=2, num_processes=2)
    assert json.loads(ds_json.read_text())["zero_optimization"]["stage"] == 3
    assert yaml.safe_load(acc_yaml.read_text())["deepspeed_config"]["deepspeed_config_file"] == str(ds_json.resolve())


def test_load_zero_checkpoint_builds_the_model_from_the_merged_state(tmp_path, monkeypatch) -> None:
    from common_utils.training.deepspeed import load_zero_checkpoint

    import deepspeed.utils.zero_to_fp32 as zero_to_fp32
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    reference = AutoModelForCausalLM.from_config(config)
    config.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        load_zero_checkpoint(tmp_path)
    (tmp_path / "final").mkdir()
    monkeypatch.setattr(zero_to_fp32, "get_fp32_state_dict_from_zero_checkpoint",
                        lambda folder, tag: {k: v.clone() for k, v in reference.state_dict().items()})
    model = load_zero_checkpoint(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    monkeypatch.setattr(zero_to_fp32, "get_fp32_state_dict_from_zero_checkpoint", lambda folder, tag: {})
    with pytest.raises(RuntimeError, match="Missing key"):
        load_zero_checkpoint(tmp_path)
