from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from common_utils import loss_history, loss_reduction, save_pretrained_atomic
from common_utils.core.runtime import Sizes as Profile
from common_utils.training.sft import FinetuneRun, course_sft_config, finetune_extraction

import pytest

LAB01 = Path(__file__).resolve().parents[1] / "01-Core_Training_Techniques" / "02-Labs" / "PEFT_Labs" / "Lab-01-LoRA"


def test_loss_reduction() -> None:
    history = [(1, 4.0), (2, 4.0), (3, 4.0), (4, 2.0), (5, 2.0), (6, 2.0)]
    assert loss_reduction(history) == pytest.approx(0.5)
    assert loss_reduction([(1, 2.0), (2, 3.0), (3, 1.0)], window=1) == pytest.approx(0.5)
    assert loss_reduction([(1, 1.0), (2, 2.0)], window=1) == pytest.approx(-1.0), "a rising loss is negative"


def test_loss_reduction_needs_two_windows() -> None:
    with pytest.raises(ValueError, match="at least 6 logged losses, got 5"):
        loss_reduction([(i, 1.0) for i in range(5)])


def test_loss_history_keeps_only_loss_entries() -> None:
    log = [{"step": 1, "loss": 2.0, "grad_norm": 1.0}, {"step": 2, "loss": 1.5}, {"step": 2, "train_runtime": 3.0}]
    trainer = SimpleNamespace(state=SimpleNamespace(log_history=log))
    assert loss_history(trainer) == [(1, 2.0), (2, 1.5)]


class _Writer:
    def __init__(self, filename: str) -> None:
        self.filename = filename

    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / self.filename).write_text(self.filename)


class _CrashingWriter:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "half-written.bin").write_text("partial")
        raise OSError("disk full")


def test_save_pretrained_atomic_replaces_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    assert save_pretrained_atomic(target, _Writer("model.bin"), _Writer("tokenizer.json")) == target
    assert sorted(p.name for p in target.iterdir()) == ["model.bin", "tokenizer.json"]
    save_pretrained_atomic(target, _Writer("new.bin"))
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"], "no temporary folder may be left"


def test_save_pretrained_atomic_keeps_the_old_folder_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    save_pretrained_atomic(target, _Writer("model.bin"))
    with pytest.raises(OSError, match="disk full"):
        save_pretrained_atomic(target, _Writer("other.bin"), _CrashingWriter())
    assert sorted(p.name for p in target.iterdir()) == ["model.bin"]
    assert (target / "model.bin").read_text() == "model.bin"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"], "no temporary folder may be left"


def test_course_sft_config_takes_sizes_from_the_profile(profile: Profile, tmp_path: Path) -> None:
    config = course_sft_config(profile, tmp_path)
    assert config.output_dir == str(tmp_path)
    assert config.max_steps == profile.train_steps
    assert config.per_device_train_batch_size == profile.batch_size
    assert config.learning_rate == profile.learning_rate
    assert config.max_length == profile.max_length
    assert config.seed == profile.seed
    assert config.activation_checkpointing is False, "checkpointing only costs time at course sizes"
    assert not config.gradient_checkpointing


def test_course_sft_config_overrides(profile: Profile, tmp_path: Path) -> None:
    config = course_sft_config(profile, tmp_path, max_steps=3, learning_rate=5e-4)
    assert (config.max_steps, config.learning_rate) == (3, 5e-4)


# ------------------------------------------------------------------------------------------------
# One real (tiny) training run, then the same run again, which must resume rather than retrain.
# ------------------------------------------------------------------------------------------------
TRAIN_STEPS = 2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora-run")


@pytest.fixture(scope="module")
def first_run(profile: Profile, run_dir: Path) -> FinetuneRun:
    tiny = profile.with_overrides(train_steps=TRAIN_STEPS, batch_size=2)
    return finetune_extraction("lora", tiny, run_dir, r=2)


@pytest.fixture(scope="module")
def second_run(first_run: FinetuneRun, profile: Profile, run_dir: Path) -> tuple[FinetuneRun, str]:
    tiny = profile.with_overrides(train_steps=TRAIN_STEPS, batch_size=2)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        run = finetune_extraction("lora", tiny, run_dir, r=2)
    return run, stdout.getvalue()


@pytest.mark.slow
def test_finetune_extraction_trains_and_saves(first_run: FinetuneRun, run_dir: Path) -> None:
    adapter_config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2
    assert first_run.adapter_dir == run_dir / "adapter"
    assert first_run.trainer.state.global_step == TRAIN_STEPS
    assert [step for step, _ in first_run.history] == [1, 2]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in first_run.history)
    assert (run_dir / "checkpoints" / f"checkpoint-{TRAIN_STEPS}").is_dir()
    assert first_run.seconds > 0 and first_run.peak.peak_rss_mb > 0
    assert first_run.model.config.use_cache, "the KV cache must be back on for generation"


@pytest.mark.slow
def test_same_run_again_resumes(second_run: tuple[FinetuneRun, str], run_dir: Path) -> None:
    _, stdout = second_run
    assert "Resuming" in stdout, stdout
    assert list((run_dir / "checkpoints").glob("checkpoint-*")), "the checkpoint folder must exist"
    assert (run_dir / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_same_run_again_takes_no_new_step(second_run: tuple[FinetuneRun, str]) -> None:
    run, _ = second_run
    assert run.trainer.state.global_step == TRAIN_STEPS
    assert len(run.history) == TRAIN_STEPS


def test_run_fingerprint_is_stable_across_processes(profile: Profile, tmp_path: Path) -> None:
    """peft keeps target modules in a set; its order depends on PYTHONHASHSEED. A fingerprint that
    changed between kernels would make every interrupted run start over instead of resuming."""
    script = (
        "from peft import LoraConfig\n"
        "from common_utils.training.sft import course_sft_config\n"
        "from common_utils import lab_sizes\n"
        "from common_utils.training.sft import _fingerprint\n"
        f"config = course_sft_config(lab_sizes({str(LAB01)!r}, 'smoke'), {str(tmp_path)!r})\n"
        "lora = LoraConfig(target_modules={'q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj'})\n"
        "print(_fingerprint(config, {'default': lora}, 'data-digest', object()))\n"
    )
    prints = {
        subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ["1", "2", "3"]
    }
    assert len(prints) == 1, prints


def test_run_fingerprint_changes_with_the_data() -> None:
    """Two datasets of the same size are two runs: a checkpoint of one must not be resumed for the other."""
    from common_utils.training.sft import data_digest

    from datasets import Dataset

    first = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]]})
    other = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 6]]})
    assert data_digest(first) == data_digest(Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]]}))
    assert data_digest(first) != data_digest(other)


def test_ensure_adapter_reuses_a_saved_adapter(profile: Profile, tmp_path: Path, monkeypatch) -> None:
    import common_utils.training.sft as train

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    monkeypatch.setattr(train, "finetune_extraction", lambda *a, **k: pytest.fail("must not retrain"))
    assert train.ensure_adapter("lora", profile, tmp_path) == tmp_path / "adapter"


def test_ensure_adapter_rebuilds_a_missing_adapter(profile: Profile, tmp_path: Path, monkeypatch, capsys) -> None:
    import common_utils.training.sft as train

    calls = []

    def fake_finetune(*args, **kwargs) -> None:
        calls.append((args, kwargs))
        (tmp_path / "adapter").mkdir()
        (tmp_path / "adapter" / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(train, "finetune_extraction", fake_finetune)
    assert train.ensure_adapter("qlora", profile, tmp_path, quantization="4bit") == tmp_path / "adapter"
    assert calls == [(("qlora", profile, tmp_path), {"quantization": "4bit"})]
    assert "not found" in capsys.readouterr().out


def test_ensure_adapter_fails_when_the_rebuild_saves_nothing(profile: Profile, tmp_path: Path, monkeypatch) -> None:
    """ensure_adapter goes through core.artifacts.ensure: a rebuild that writes no adapter must not pass silently."""
    import common_utils.training.sft as train

    monkeypatch.setattr(train, "finetune_extraction", lambda *args, **kwargs: None)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        train.ensure_adapter("lora", profile, tmp_path)


def _stub_training(monkeypatch) -> list:
    """Replace model loading and training in finetune_extraction by stubs; returns the list of SFT configs used."""
    import common_utils.core.models as models
    import common_utils.training.sft as train

    used = []
    model = SimpleNamespace(peft_config={})
    monkeypatch.setattr(models, "load_causal_lm", lambda key, quantization=None: (object(), object()))
    monkeypatch.setattr("common_utils.peft.methods.apply_peft", lambda m, method, profile=None, **kw: model)
    monkeypatch.setattr(train, "extraction_train_set", lambda limit=None: [])
    monkeypatch.setattr(train, "make_sft_trainer", lambda m, tok, data, config: used.append(config) or SimpleNamespace(
        model=model, state=SimpleNamespace(log_history=[{"step": 1, "loss": 1.0}]), args=config))
    monkeypatch.setattr(train, "run_sft", lambda trainer, resume=True: trainer)
    monkeypatch.setattr("common_utils.core.artifacts.save_pretrained_atomic", lambda path, *objects: Path(path))
    return used


def test_finetune_extraction_takes_a_config_object_and_the_same_defaults(profile: Profile, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """A notebook that writes its IA3Config by hand trains with the SFTConfig the method name would get, so
    a later stage that rebuilds with ensure_adapter("ia3") reproduces the run."""
    from common_utils.peft.methods import default_learning_rate

    from peft import IA3Config

    used = _stub_training(monkeypatch)
    config = IA3Config(target_modules=["k_proj"], feedforward_modules=[], task_type="CAUSAL_LM")
    finetune_extraction(config, profile, tmp_path)
    finetune_extraction("ia3", profile, tmp_path)
    assert used[0].to_dict() == used[1].to_dict()
    assert used[0].learning_rate == default_learning_rate("ia3", profile)
    assert used[0].output_dir == str(tmp_path / "checkpoints")


def test_finetune_extraction_uses_a_given_sft_config(profile: Profile, tmp_path: Path, monkeypatch) -> None:
    used = _stub_training(monkeypatch)
    sft_config = course_sft_config(profile, tmp_path / "elsewhere", learning_rate=7e-3)
    run = finetune_extraction("lora", profile, tmp_path, sft_config=sft_config)
    assert used == [sft_config]
    assert run.measured()["learning_rate"] == 7e-3 and run.measured()["steps"] == profile.train_steps
    with pytest.raises(TypeError, match="fields of sft_config"):
        finetune_extraction("lora", profile, tmp_path, sft_config=sft_config, learning_rate=1e-3)


def test_finetune_run_summary_and_measured() -> None:
    from common_utils.core.monitor import PeakMemory

    args = SimpleNamespace(max_steps=12, learning_rate=1e-2)
    run = FinetuneRun(model=None, tokenizer=None, trainer=SimpleNamespace(args=args), history=[(1, 0.3), (12, 0.012)],
                      seconds=26.6, peak=PeakMemory(600.0, 1900.0, None), adapter_dir=Path("adapter"))
    assert run.summary() == "12 steps in 26.6 s, loss 0.300 -> 0.012, peak RSS 1900 MB (+1300 MB while training)"
    assert run.measured() == {"seconds": 26.6, "steps": 12, "learning_rate": 1e-2, "peak_rss_mb": 1900.0,
                              "train_rss_increase_mb": 1300.0, "cuda_peak_mb": None, "loss_first": 0.3,
                              "loss_last": 0.012}


def test_config_as_code_shows_what_differs_from_the_defaults(profile: Profile, tmp_path: Path) -> None:
    from common_utils.peft.adapters import AdapterConfig
    from common_utils.training.sft import config_as_code

    from peft import PrefixTuningConfig, PromptTuningConfig, PromptTuningInit

    prefix = config_as_code(PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True))
    assert prefix == "PrefixTuningConfig(\n    task_type='CAUSAL_LM',\n    num_virtual_tokens=10,\n    prefix_projection=True,\n)"
    prompt = config_as_code(PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                               prompt_tuning_init=PromptTuningInit.RANDOM))
    assert "num_virtual_tokens=4," in prompt and "prompt_tuning_init" not in prompt, "RANDOM is the default"
    assert config_as_code(AdapterConfig()) == "AdapterConfig()"
    sft = config_as_code(course_sft_config(profile, tmp_path, learning_rate=5e-3))
    assert sft.startswith("SFTConfig(\n") and f"output_dir={str(tmp_path)!r}," in sft
    assert "learning_rate=0.005," in sft and f"max_steps={profile.train_steps}," in sft
    assert "seed=" not in sft, "the course's seed is TRL's default: not a setting to write"


def test_show_loss_tokens_marks_the_answer_and_eos(capsys) -> None:
    from common_utils.training.sft import eos_carries_loss, show_loss_tokens

    class Tokenizer:
        eos_token, pad_token_id = "<eos>", 0
        vocab = {1: "Q", 2: "A", 3: "<eos>"}

        def convert_ids_to_tokens(self, ids):
            return [self.vocab[i] for i in ids]

        def decode(self, ids, **kwargs):
            return "".join(self.vocab[i] for i in ids)

    import torch

    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[-100, 2, 3]])}
    trainer = SimpleNamespace(get_train_dataloader=lambda: iter([batch]), processing_class=Tokenizer())
    table = show_loss_tokens(trainer)
    out = capsys.readouterr().out
    assert "Q[A][<eos>]" in out and "2 of 3 tokens carry loss" in out
    assert eos_carries_loss(table, Tokenizer())
    assert not eos_carries_loss([(text, text == "A") for text, _ in table], Tokenizer())


def test_prefix_tuning_with_projection_is_not_resumed_from_checkpoints() -> None:
    """peft saves a projected prefix as the MLP's output only; resuming would load the wrong shape."""
    from types import SimpleNamespace

    from common_utils.training.sft import _resumable

    from peft import LoraConfig, PrefixTuningConfig

    projected = SimpleNamespace(peft_config={"default": PrefixTuningConfig(num_virtual_tokens=4, prefix_projection=True,
                                                                           task_type="CAUSAL_LM")})
    plain = SimpleNamespace(peft_config={"default": PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")})
    assert not _resumable(projected)
    assert _resumable(plain)
    assert _resumable(SimpleNamespace(peft_config={"default": LoraConfig(r=2)}))
    assert _resumable(SimpleNamespace())  # bottleneck adapters: no peft_config
