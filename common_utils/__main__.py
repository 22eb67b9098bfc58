"""Command line: `python -m common_utils doctor | provision | validate-data | project init|validate DIR`.

Instructors run `doctor` on classroom machines: it prints versions, device, profile, precision
support, the bitsandbytes status and where each model lives, and exits non-zero if something
the course needs is missing.
"""

from __future__ import annotations

import argparse
import json
import sys


def _bitsandbytes_status() -> str:
    try:
        import bitsandbytes as bnb
        import torch

        weight = torch.randn(64, 64)
        packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
        error = (bnb.functional.dequantize_4bit(packed, state) - weight).abs().mean().item()
        return f"ok (bitsandbytes {bnb.__version__}, NF4 round-trip mean error {error:.3f})"
    except Exception as error:  # noqa: BLE001 - report, don't crash the doctor
        return f"unavailable: {type(error).__name__}: {error}"


def doctor() -> int:
    from common_utils.core.models import (
        MODEL_REGISTRY,
        ModelNotProvisionedError,
        cache_dir,
        hub_offline,
        model_path,
    )
    from common_utils.core.runtime import describe_runtime

    info = describe_runtime()
    print(json.dumps(info, indent=2, ensure_ascii=False))
    print(f"bitsandbytes 4-bit: {_bitsandbytes_status()}")
    print(f"hub offline mode: {hub_offline()}    model cache: {cache_dir()}")
    healthy = True
    for key, spec in MODEL_REGISTRY.items():
        if spec.source == "hub":
            print(f"  {key:24s} hub: {spec.location} (full profile; falls back to {spec.fallback})")
            continue
        try:
            print(f"  {key:24s} ready: {model_path(key)}")
        except ModelNotProvisionedError as error:
            healthy = False
            print(f"  {key:24s} MISSING: {str(error).splitlines()[0]}")
    if not healthy:
        print("Fix: python -m common_utils provision")
    return 0 if healthy else 1


def provision_command(force: bool) -> int:
    from common_utils.core.models import provision

    for key, path in provision(force=force).items():
        print(f"{key}: ready at {path}")
    return 0


def validate_data_command(paths: list[str]) -> int:
    from pathlib import Path

    from common_utils.data import DatasetFormatError, dataset_schemas, datasets_dir, validate_jsonl

    files = [Path(p) for p in paths] or sorted(datasets_dir().glob("*/*.jsonl"))
    failed = False
    for path in files:
        schema = dataset_schemas().get(path.parent.name)
        if schema is None:
            print(f"{path}: no schema for dataset folder {path.parent.name!r}")
            failed = True
            continue
        try:
            print(f"{path}: {len(validate_jsonl(path, schema))} rows OK")
        except DatasetFormatError as error:
            print(error)
            failed = True
    return 1 if failed else 0


def project_command(action: str, folder: str, force: bool) -> int:
    """`project init DIR` scaffolds a fine-tuning project; `project validate DIR` checks its data (Lab-4.3)."""
    from common_utils.data import DatasetFormatError
    from common_utils.project.definition import DefinitionError, init_project, load_definition
    from common_utils.project.validate import validate_project

    if action == "init":
        try:
            written = init_project(folder, overwrite=force)
        except FileExistsError as error:
            print(error)
            return 1
        print("created:", *written, sep="\n  ")
        print(f"next: edit the definition and data, then `python -m common_utils project validate {folder}`")
        return 0
    try:
        definition = load_definition(folder)
        report = validate_project(definition)
    except (DefinitionError, DatasetFormatError, FileNotFoundError) as error:
        print(error)
        return 1
    print(f"project {definition.name!r}: {len(definition.labels)} labels, metric {definition.metric} "
          f">= {definition.threshold}")
    print(report.summary(definition.labels))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="print the environment and check the embedded models")
    provision_parser = commands.add_parser("provision", help="install, convert and verify the embedded models")
    provision_parser.add_argument("--force", action="store_true", help="convert again even if already provisioned")
    validate_parser = commands.add_parser("validate-data", help="check course JSONL files (default: all)")
    validate_parser.add_argument("paths", nargs="*")
    project_parser = commands.add_parser("project", help="scaffold or validate a fine-tuning project (Lab-4.3)")
    project_parser.add_argument("action", choices=["init", "validate"])
    project_parser.add_argument("folder", help="the project folder (holds task_definition.yaml)")
    project_parser.add_argument("--force", action="store_true", help="init: overwrite an existing definition")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "provision":
        return provision_command(args.force)
    if args.command == "project":
        return project_command(args.action, args.folder, args.force)
    return validate_data_command(args.paths)


if __name__ == "__main__":
    sys.exit(main())
