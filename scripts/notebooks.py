"""Run course notebooks headless with nbmake and report how long each took.

    python scripts/notebooks.py run [--workers N] [PATH ...]   run notebooks under PATHs (default: every chapter)
    python scripts/notebooks.py report [--write docs/notebook_timings.md]

Notebooks of one lab run in file order in one pytest process, so a later stage finds the artifacts
an earlier stage wrote. No notebook found is an error, never a silent pass (pytest exit 5).
With --workers N (or $COURSE_NOTEBOOK_WORKERS), whole labs are spread over N pytest processes, each
limited to cpu_count // N torch threads: kernel start-up and imports overlap, at the price of
per-notebook seconds that are no longer those of a notebook run alone (the report says so).

A lab may declare what it needs in `lab.yaml` beside its README:
    accelerator: cpu | cuda     # cuda: the lab is skipped, with this reason printed, without CUDA
    requires: [fastapi, ...]    # importable modules beyond the default install (optional extras)
    min_vram_gb: 16             # the GPU its full profile is designed for
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["00-Course_Setup", "01-Core_Training_Techniques", "02-Efficient_Inference_and_Serving",
            "03-Model_Compression", "04-Evaluation_and_Data_Engineering"]
REPORT = ROOT / ".course_reports" / "notebooks.xml"
WORKERS_NOTE = REPORT.with_name("workers.txt")  # how many processes shared the CPU in the last run
BUDGET_S = 90.0
LAB_KEYS = {"accelerator": str, "requires": list, "min_vram_gb": (int, float)}


def lab_requirements(notebook: Path) -> dict:
    """The nearest lab.yaml above a notebook (inside the repository), or {} when it declares none."""
    import yaml

    for folder in notebook.resolve().parents:
        if (folder / "lab.yaml").exists():
            return yaml.safe_load((folder / "lab.yaml").read_text(encoding="utf-8")) or {}
        if folder == ROOT:
            break
    return {}


def unmet_requirement(requirements: dict) -> str | None:
    """Why this machine cannot run a lab with these requirements, or None if it can."""
    import importlib.util

    if requirements.get("accelerator") == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "needs CUDA (lab.yaml: accelerator: cuda); this machine has none"
    missing = [m for m in requirements.get("requires", []) if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)} (lab.yaml: requires); install the lab's extra first"
    return None


def find_notebooks(paths: list[str]) -> list[Path]:
    roots = [Path(p) for p in paths] or [ROOT / c for c in CHAPTERS if (ROOT / c).exists()]
    found: list[Path] = []
    for root in roots:
        candidates = [root] if root.suffix == ".ipynb" else sorted(root.rglob("*.ipynb"))
        found += [p for p in candidates if ".ipynb_checkpoints" not in p.parts and "outputs" not in p.parts]
    return found


def lab_folder(notebook: Path) -> Path:
    """The folder whose notebooks must run in order in one process: the nearest Lab-* above it, else its own."""
    for folder in notebook.parents:
        if folder.name.startswith("Lab-"):
            return folder
    return notebook.parent


def partition(notebooks: list[Path], workers: int) -> list[list[Path]]:
    """Whole labs spread over `workers` lists, largest first onto the lightest list; order kept within a lab."""
    labs: dict[Path, list[Path]] = {}
    for notebook in notebooks:
        labs.setdefault(lab_folder(notebook), []).append(notebook)
    bins: list[list[Path]] = [[] for _ in range(max(1, min(workers, len(labs))))]
    for group in sorted(labs.values(), key=len, reverse=True):
        min(bins, key=len).extend(group)
    return [sorted(b, key=notebooks.index) for b in bins]


def _pytest(notebooks: list[Path], report: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=900", "-p", "no:cacheprovider",
               "-o", "testpaths=", f"--junitxml={report}", "-q", *map(str, notebooks)]
    return subprocess.Popen(command, cwd=ROOT, env=env)


def _merge_reports(parts: list[Path]) -> None:
    """One junit file with every worker's test suite, so `report` reads a run as one."""
    merged = ET.Element("testsuites")
    for part in parts:
        root = ET.parse(part).getroot()
        merged.extend(root.iter("testsuite") if root.tag == "testsuites" else [root])
    ET.ElementTree(merged).write(REPORT, encoding="utf-8", xml_declaration=True)


def run(paths: list[str]) -> int:
    workers = int(os.environ.get("COURSE_NOTEBOOK_WORKERS", "1"))
    if paths[:1] == ["--workers"]:
        workers, paths = int(paths[1]), paths[2:]
    found = find_notebooks(paths)
    if not found:
        print(f"No notebooks found under {paths or CHAPTERS}: nothing was tested.", file=sys.stderr)
        return 1
    notebooks = []
    for notebook in found:
        reason = unmet_requirement(lab_requirements(notebook))
        if reason:
            print(f"SKIPPED {notebook.relative_to(ROOT)}: {reason}")
        else:
            notebooks.append(notebook)
    if not notebooks:
        print("Every selected notebook was skipped for the reasons above.")
        return 0
    REPORT.parent.mkdir(exist_ok=True)
    groups = partition(notebooks, workers)
    print(f"Running {len(notebooks)} notebook(s) in {len(groups)} process(es) ...", flush=True)
    threads = str(max(1, (os.cpu_count() or 1) // len(groups)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "COURSE_NUM_THREADS": threads} if len(groups) > 1 else None
    parts = [REPORT.with_name(f"notebooks-{i}.xml") for i in range(len(groups))] if len(groups) > 1 else [REPORT]
    codes = [p.wait() for p in [_pytest(group, part, env) for group, part in zip(groups, parts)]]
    if len(groups) > 1:
        _merge_reports(parts)
    WORKERS_NOTE.write_text(str(len(groups)))
    report([])
    return 1 if 5 in codes else max(codes)


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notebooks.py report")
    parser.add_argument("--write", help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    if not REPORT.exists():
        print("No notebook run recorded yet: run `make test` or `make smoke LAB=...` first.")
        return 1
    # junit classnames are paths with "/" turned into "."; folder names may contain dots themselves
    by_classname = {str(p.relative_to(ROOT)).replace("/", "."): str(p.relative_to(ROOT)) for p in find_notebooks([])}
    root = ET.parse(REPORT).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    started = suite.get("timestamp", "unknown time")[:16] if suite is not None else "unknown time"
    workers = int(WORKERS_NOTE.read_text()) if WORKERS_NOTE.exists() else 1
    shared = (f" The run used {workers} parallel processes, so each notebook shared the CPU: its seconds are "
              "higher than when run alone." if workers > 1 else "")
    rows = []
    for case in root.iter("testcase"):
        status = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        classname = case.get("classname", "")
        rows.append((float(case.get("time", 0)), status, by_classname.get(classname, classname)))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = ["| seconds | status | notebook |", "| ---: | --- | --- |"]
    lines += [f"| {s:.1f}{' ⚠' if s > BUDGET_S else ''} | {status} | {path} |" for s, status, path in rows]
    lines.append(f"| {total:.1f} | total | {len(rows)} notebooks |")
    table = "\n".join(lines)
    print(table)
    over = [r for r in rows if r[0] > BUDGET_S]
    if over:
        print(f"⚠ {len(over)} notebook(s) over the {BUDGET_S:.0f} s smoke budget.")
    if args.write:
        Path(args.write).write_text(
            "# Notebook timings (smoke profile)\n\n"
            "Rendered by `python scripts/notebooks.py report --write docs/notebook_timings.md` from the last "
            f"`make test` run, started {started} UTC on a machine with {os.cpu_count()} CPU cores (junit XML, "
            "per-notebook wall seconds including kernel start). "
            f"Budget: {BUDGET_S:.0f} s per notebook (⚠ marks overruns).{shared}\n\n" + table + "\n", encoding="utf-8")
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "report"}:
        print(__doc__)
        return 2
    return run(sys.argv[2:]) if sys.argv[1] == "run" else report(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
