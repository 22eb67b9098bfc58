from __future__ import annotations

import dataclasses
from pathlib import Path

from common_utils import get_device, get_profile, lab_sizes, pick_dtype, seed_everything, set_threads
from common_utils.core.models import MODEL_REGISTRY
from common_utils.core.runtime import PROFILE_ENV, PROFILES, Profile, describe_runtime

import pytest
import torch
import yaml

ON_ACCELERATOR = torch.cuda.is_available() or torch.backends.mps.is_available()


def test_smoke_and_full_profiles_exist() -> None:
    assert {"smoke", "full"} <= set(PROFILES)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_fields_are_positive(name: str) -> None:
    profile = PROFILES[name]
    assert profile.name == name
    for field, value in profile.as_dict().items():
        if isinstance(value, (int, float)):
            assert value > 0, f"profile {name!r}: {field} = {value}"
    assert profile.model in MODEL_REGISTRY, f"profile {name!r}: unknown model {profile.model!r}"
    assert profile.encoder in MODEL_REGISTRY, f"profile {name!r}: unknown encoder {profile.encoder!r}"


def test_course_profile_env_selects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "full")
    assert get_profile().name == "full"
    monkeypatch.setenv(PROFILE_ENV, "smoke")
    assert get_profile().name == "smoke"
    assert get_profile("full").name == "full", "an explicit name wins over the environment"


def test_unknown_profile_names_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="huge") as error:
        get_profile("huge")
    assert all(name in str(error.value) for name in PROFILES)
    monkeypatch.setenv(PROFILE_ENV, "tiny")
    with pytest.raises(ValueError, match="smoke"):
        get_profile()


def test_with_overrides_returns_a_changed_copy(profile: Profile) -> None:
    changed = profile.with_overrides(train_steps=3, batch_size=1)
    assert (changed.train_steps, changed.batch_size) == (3, 1)
    assert changed.learning_rate == profile.learning_rate
    assert profile.train_steps == 12, "the original sizes are untouched"
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.values = {}  # type: ignore[misc]


def test_lab_sizes_read_the_active_profile_block(tmp_path: Path) -> None:
    lab = tmp_path / "Lab-9.9-Test"
    (lab / "sub").mkdir(parents=True)
    (lab / "lab.yaml").write_text("sizes:\n  smoke: {steps: 3, encoder: other}\n  full: {steps: 300}\n")
    smoke = lab_sizes(lab / "lab.yaml", "smoke")
    assert smoke.steps == 3 and smoke.encoder == "other" and smoke.profile == "smoke"
    assert lab_sizes(lab, "full").steps == 300
    assert "steps=3" in str(smoke) and "Lab-9.9-Test/lab.yaml" in str(smoke)
    with pytest.raises(AttributeError, match="declared: steps"):
        _ = smoke.batch_size


def test_lab_sizes_are_found_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = tmp_path / "Lab-9.9-Test"
    (lab / "stage").mkdir(parents=True)
    (lab / "lab.yaml").write_text("sizes:\n  smoke: {steps: 3}\n  full: {steps: 300}\n")
    monkeypatch.chdir(lab / "stage")
    assert lab_sizes(profile="smoke").steps == 3


def test_lab_sizes_name_a_missing_profile_block(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text("sizes:\n  smoke: {steps: 3}\n")
    with pytest.raises(KeyError, match="full"):
        lab_sizes(tmp_path, "full")


def test_every_lab_declares_sizes_for_both_profiles(repo_root: Path) -> None:
    for lab_file in sorted(repo_root.glob("[0-9][0-9]-*/**/lab.yaml")):
        sizes = yaml.safe_load(lab_file.read_text()).get("sizes")
        if sizes:
            assert set(sizes) == set(PROFILES), f"{lab_file}: sizes for {sorted(sizes)}, expected {sorted(PROFILES)}"
            assert set(sizes["smoke"]) == set(sizes["full"]), f"{lab_file}: smoke and full declare different keys"


@pytest.mark.skipif(ON_ACCELERATOR, reason="checks the CPU-only path")
def test_device_is_cpu_here() -> None:
    assert get_device().type == "cpu"
    assert pick_dtype() == torch.float32


def test_pick_dtype_is_float32_on_cpu() -> None:
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_describe_runtime_has_the_doctor_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "smoke")
    info = describe_runtime()
    expected = {"python", "platform", "cpu_count", "torch_threads", "device", "profile", "bf16_supported",
                "dtype", "versions"}
    assert expected <= set(info), f"missing: {expected - set(info)}"
    assert info["profile"] == "smoke"
    assert {"torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes"} <= set(info["versions"])
    if not ON_ACCELERATOR:
        assert (info["device"], info["dtype"], info["bf16_supported"]) == ("cpu", "float32", False)


def test_seed_everything_repeats_random_numbers() -> None:
    seed_everything(7)
    first = torch.rand(4)
    seed_everything(7)
    assert torch.equal(first, torch.rand(4))


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("logger_name,message", [
    ("torchao", "Failed to load /site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: cannot open"),
    ("torch.utils._pytree", "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile"),
    ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."),
])
def test_known_noise_is_dropped_and_other_messages_still_show(logger_name: str, message: str) -> None:
    import logging

    import common_utils  # noqa: F401  (importing it installs the filters)

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler = Collect()
    logger.addHandler(handler)
    try:
        logger.warning(message)
        logger.warning("a different warning from the same library")
    finally:
        logger.removeHandler(handler)
    assert seen == ["a different warning from the same library"]
