"""common_utils.training.memory / .deepspeed: the per-GPU model-state formulas equal DeepSpeed's own estimators, and
the planner picks the fastest ZeRO setup that fits."""

from __future__ import annotations

from common_utils.training.deepspeed import deepspeed_config, plan_zero
from common_utils.training.memory import GIB, model_state_bytes_per_gpu

import pytest

# deepspeed is part of the default install (the `distributed` extra of scripts/install.sh): no skip
from deepspeed.runtime.zero import stage3 as deepspeed_zero3
from deepspeed.runtime.zero import stage_1_and_2 as deepspeed_zero2

CASES = [(135_000_000, 28_311_552, 1), (135_000_000, 28_311_552, 2), (7_000_000_000, 131_072_000, 8),
         (70_000_000_000, 1_050_000_000, 8), (1_500_000_000, 136_000_000, 4)]


@pytest.mark.parametrize(("params", "largest", "gpus"), CASES)
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_matches_deepspeed_estimator(params: int, largest: int, gpus: int, offload: bool) -> None:
    _, ds_gpu = deepspeed_zero2.estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus,
                                                                      cpu_offload=offload)
    assert model_state_bytes_per_gpu(params, gpus, 2, offload_optimizer=offload) == ds_gpu


@pytest.mark.parametrize(("params", "largest", "gpus"), CASES)
@pytest.mark.parametrize(("offload_opt", "offload_par"), [(False, False), (True, False), (True, True)])
def test_zero3_matches_deepspeed_estimator(params: int, largest: int, gpus: int, offload_opt: bool,
                                           offload_par: bool) -> None:
    _, ds_gpu, _ = deepspeed_zero3.estimate_zero3_model_states_mem_needs(
        params, largest, num_gpus_per_node=gpus, cpu_offload=offload_opt, cpu_offload_params=offload_par)
    ours = model_state_bytes_per_gpu(params, gpus, 3, offload_opt, offload_par, largest_layer_params=largest)
    assert ours == ds_gpu


def test_stages_0_and_1_follow_the_zero_paper() -> None:
    # Rajbhandari et al. 2020, Figure 1: 7.5B parameters, 64 GPUs, K = 12 -> 120 GB and 31.4 GB
    assert model_state_bytes_per_gpu(7_500_000_000, 64, 0) / 1e9 == pytest.approx(120.0)
    assert model_state_bytes_per_gpu(7_500_000_000, 64, 1) / 1e9 == pytest.approx(31.4, abs=0.1)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="stage"):
        model_state_bytes_per_gpu(10, 1, 4)
    with pytest.raises(ValueError, match="parameter offload"):
        model_state_bytes_per_gpu(10, 1, 2, offload_params=True)
    with pytest.raises(ValueError, match="do not fit"):
        plan_zero(70_000_000_000, 1, 16, activation_gb_per_sample=20)


def test_plan_picks_the_fastest_setup_that_fits() -> None:
    small = plan_zero(135_000_000, 1, 16, activation_gb_per_sample=0.5)
    assert (small.stage, small.offload_optimizer) == (0, False) and small.micro_batch >= 1
    big = plan_zero(7_000_000_000, 8, 80, activation_gb_per_sample=2.0, largest_layer_params=131_072_000)
    assert big.stage in (1, 2) and not big.offload_optimizer  # DDP's 112 GB does not fit 80 GB
    assert big.model_state_gb * GIB == pytest.approx(
        model_state_bytes_per_gpu(7_000_000_000, 8, big.stage), rel=1e-3)
    huge = plan_zero(70_000_000_000, 8, 80, activation_gb_per_sample=4.0, largest_layer_params=1_050_000_000)
    assert huge.stage == 3


def test_deepspeed_config_fills_the_global_batch() -> None:
    plan = plan_zero(7_000_000_000, 8, 80, activation_gb_per_sample=8.0, largest_layer_params=131_072_000)
    config = deepspeed_config(plan, global_batch=8 * plan.micro_batch * 4)
    assert config["gradient_accumulation_steps"] == 4
    assert config["zero_optimization"]["stage"] == plan.stage
    with pytest.raises(ValueError, match="multiple"):
        deepspeed_config(plan, global_batch=8 * plan.micro_batch + 1)
