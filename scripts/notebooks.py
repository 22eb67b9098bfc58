"""Run course notebooks headless with nbmake and report how long each took and its GPU peak.

    python scripts/notebooks.py run [--workers N] [--profile smoke|full] [--max-gpu-gib G]
                                    [--timeout S] [--snapshots DIR] [--dry-run] [PATH ...]
    python scripts/notebooks.py report [--write FILE] [--dir DIR ...]

Chapters are the top-level folders named like `00-Course_Setup` (pattern `[0-9][0-9]-*`), so a new
chapter is tested as soon as its folder exists. Notebooks of one lab (the nearest `Lab-*` folder)
run in file order in one pytest process, so a later stage finds the artifacts an earlier stage
wrote. No notebook found is an error, never a silent pass (pytest exit 5 counts as a failure).

Whole labs are spread over N worker processes (--workers, else $COURSE_NOTEBOOK_WORKERS, else
DEFAULT_WORKERS), each limited to cpu_count // N torch threads: kernel start-up and imports
overlap, at the price of per-notebook seconds that are no longer those of a notebook run alone
(the report says so).

Every run writes its reports to .course_reports/ ($COURSE_REPORT_DIR overrides): the junit XML
(wall seconds per notebook), gpu_peaks.jsonl (peak CUDA memory per notebook, recorded from inside
each kernel by scripts/nbmake_hooks/) and notebook_timings.md (the table `report` prints).

--snapshots DIR (else $COURSE_SNAPSHOT_DIR; `make test` passes build/executed) also keeps each
notebook as executed, outputs and errors included, at DIR/<path relative to the repository>: the
same execution as the test (scripts/nbmake_hooks/ writes the copy), the committed notebook untouched.
A selected notebook's old snapshot is removed before the run, so none outlives a failed start.
scripts/build_site.py publishes the snapshots in the course site (`make site`).

A lab may declare what it needs in `lab.yaml` beside its README:
    accelerator: cpu | cuda     # cuda: the lab is skipped, with this reason printed, without CUDA
    requires: [fastapi, ...]    # importable modules beyond the default install (optional extras)
    min_vram_gb: 16             # the GPU its full profile is designed for
    sizes: {smoke: {...}, full: {...}}   # per-profile sizes the lab's notebooks read
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "nbmake_hooks"
CHAPTER_PATTERN = "[0-9][0-9]-*"
DEFAULT_WORKERS = 2  # 2-core box, same 16 notebooks back to back: 1 worker 252 s, 2 workers 211 s (docs/notebook_timings.md)
WORKERS_ENV = "COURSE_NOTEBOOK_WORKERS"
REPORT_DIR_ENV = "COURSE_REPORT_DIR"
GPU_REPORT_ENV = "COURSE_GPU_REPORT"
PROFILES = ("smoke", "full")
BUDGET_S = 90.0
NOTEBOOK_TIMEOUT_S = 900
GIB = 1024**3
LAB_KEYS: dict[str, type | tuple[type, ...]] = {
    "accelerator": str, "requires": list, "min_vram_gb": (int, float), "sizes": dict}
JUNIT = "notebooks.xml"
GPU_PEAKS = "gpu_peaks.jsonl"
RUN_NOTE = "run.json"  # how the last run was made: workers, profile, start time
SNAPSHOT_DIR_ENV = "COURSE_SNAPSHOT_DIR"  # read by scripts/nbmake_hooks/course_nbmake_plugin.py too
SNAPSHOT_DEVICE_ENV = "COURSE_SNAPSHOT_DEVICE"
TIMINGS = "notebook_timings.md"


# --- what to run ---------------------------------------------------------------------------------

def chapter_folders() -> list[Path]:
    """Top-level folders named like a chapter (`NN-Name`), sorted, read now so new chapters count."""
    return sorted(path for path in ROOT.glob(CHAPTER_PATTERN) if path.is_dir())


# Names of the chapters at import time, for callers that list them (tests/test_notebooks_hygiene.py).
CHAPTERS: list[str] = [path.name for path in chapter_folders()]


def find_notebooks(paths: list[str]) -> list[Path]:
    """Notebooks under `paths` (files or folders), else under every chapter; checkpoints and outputs excluded."""
    roots = [Path(p) for p in paths] or chapter_folders()
    found: list[Path] = []
    for root in roots:
        candidates = [root] if root.suffix == ".ipynb" else sorted(root.rglob("*.ipynb"))
        found += [p for p in candidates if ".ipynb_checkpoints" not in p.parts and "outputs" not in p.parts]
    return found


def lab_requirements(notebook: Path) -> dict:
    """The nearest lab.yaml above a notebook (inside the repository), or {} when it declares none."""
    import yaml

    for folder in notebook.resolve().parents:
        if (folder / "lab.yaml").exists():
            return yaml.safe_load((folder / "lab.yaml").read_text(encoding="utf-8")) or {}
        if folder == ROOT:
            break
    return {}


def lab_yaml_problems(declared: dict) -> list[str]:
    """What is wrong with a lab.yaml's content (unknown keys, wrong types), so authors see it early."""
    problems = [f"unknown key {key!r}; allowed: {sorted(LAB_KEYS)}" for key in declared if key not in LAB_KEYS]
    problems += [f"{key} should be {kind}" for key, kind in LAB_KEYS.items()
                 if key in declared and not isinstance(declared[key], kind)]
    if declared.get("accelerator", "cpu") not in {"cpu", "cuda"}:
        problems.append("accelerator must be cpu or cuda")
    sizes = declared.get("sizes")
    if isinstance(sizes, dict):
        problems += [f"sizes: unknown profile {name!r}; allowed: {list(PROFILES)}" for name in sizes
                     if name not in PROFILES]
        problems += [f"sizes.{name} should be a mapping" for name, value in sizes.items()
                     if name in PROFILES and not isinstance(value, dict)]
    return problems


def unmet_requirement(requirements: dict) -> str | None:
    """Why this machine cannot run a lab with these requirements, or None if it can."""
    import importlib.util

    if requirements.get("accelerator") == "cuda" and not _cuda_available():
        return "needs CUDA (lab.yaml: accelerator: cuda); this machine has none"
    missing = [m for m in requirements.get("requires", []) if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)} (lab.yaml: requires); install the lab's extra first"
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def lab_folder(notebook: Path) -> Path:
    """The folder whose notebooks must run in order in one process: the nearest Lab-* above it, else its own."""
    for folder in notebook.parents:
        if folder.name.startswith("Lab-"):
            return folder
    return notebook.parent


# The committed timing table of the last full run: how long each notebook took, to balance workers.
TIMINGS_DOC = ROOT / "docs" / "notebook_timings.md"
# Seconds assumed for a notebook the table does not list yet (a new lab): the course's per-notebook budget.
UNKNOWN_NOTEBOOK_S = 60.0


def recorded_seconds(table: Path = TIMINGS_DOC) -> dict[str, float]:
    """Notebook path (relative to the repository) -> seconds, from the rendered timing table."""
    if not table.exists():
        return {}
    seconds = {}
    for line in table.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[-1].endswith(".ipynb"):
            try:
                seconds[cells[-1]] = float(cells[0].split()[0])
            except ValueError:
                continue
    return seconds


def partition(notebooks: list[Path], workers: int, seconds: dict[str, float] | None = None) -> list[list[Path]]:
    """Whole labs spread over `workers` lists, longest lab first onto the least loaded list (greedy
    longest-processing-time), by the recorded seconds of each notebook (a notebook without a record
    counts UNKNOWN_NOTEBOOK_S); order kept within a lab, since later stages reuse earlier artifacts."""
    seconds = recorded_seconds() if seconds is None else seconds

    def cost(notebook: Path) -> float:
        try:
            key = notebook.resolve().relative_to(ROOT).as_posix()
        except ValueError:
            key = notebook.as_posix()
        return seconds.get(key, UNKNOWN_NOTEBOOK_S)

    labs: dict[Path, list[Path]] = {}
    for notebook in notebooks:
        labs.setdefault(lab_folder(notebook), []).append(notebook)
    bins: list[list[Path]] = [[] for _ in range(max(1, min(workers, len(labs))))]
    loads = [0.0] * len(bins)
    for group in sorted(labs.values(), key=lambda g: sum(map(cost, g)), reverse=True):
        lightest = loads.index(min(loads))
        bins[lightest].extend(group)
        loads[lightest] += sum(map(cost, group))
    return [sorted(b, key=notebooks.index) for b in bins]


class Plan(NamedTuple):
    """What a run will do: the notebooks of each worker process, and those skipped with the reason."""

    groups: list[list[Path]]
    skipped: list[tuple[Path, str]]

    @property
    def notebooks(self) -> list[Path]:
        return [notebook for group in self.groups for notebook in group]


def make_plan(found: list[Path], workers: int) -> Plan:
    """Drop the notebooks whose lab this machine cannot run, then spread the rest over the workers."""
    selected: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for notebook in found:
        reason = unmet_requirement(lab_requirements(notebook))
        if reason:
            skipped.append((notebook, reason))
        else:
            selected.append(notebook)
    return Plan(partition(selected, workers) if selected else [], skipped)


def default_workers() -> int:
    """$COURSE_NOTEBOOK_WORKERS when set, else DEFAULT_WORKERS."""
    return int(os.environ.get(WORKERS_ENV) or DEFAULT_WORKERS)


def threads_per_worker(workers: int) -> int:
    """Torch threads each worker may use so that the workers together do not oversubscribe the CPU."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def describe_plan(plan: Plan) -> str:
    """The --dry-run listing: each worker's notebooks in the order they will run, then the skips."""
    threads = threads_per_worker(len(plan.groups)) if len(plan.groups) > 1 else None
    lines = [f"Would run {len(plan.notebooks)} notebook(s) in {len(plan.groups)} worker process(es)"
             + (f", {threads} torch thread(s) each" if threads else "") + "."]
    for index, group in enumerate(plan.groups, start=1):
        labs = len({lab_folder(notebook) for notebook in group})
        lines.append(f"worker {index}: {len(group)} notebook(s), {labs} lab(s)")
        lines += [f"  {_rel(notebook)}" for notebook in group]
    if plan.skipped:
        lines.append(f"skipped: {len(plan.skipped)} notebook(s)")
        lines += [f"  {_rel(notebook)}: {reason}" for notebook, reason in plan.skipped]
    return "\n".join(lines)


# --- running -------------------------------------------------------------------------------------

def report_dir() -> Path:
    """Where a run writes its reports: $COURSE_REPORT_DIR, else .course_reports/ of the repository."""
    return Path(os.environ.get(REPORT_DIR_ENV) or ROOT / ".course_reports")


def install_hooks(folder: Path) -> dict[str, str]:
    """Put the GPU-peak hooks into `folder`; returns the environment that makes nbmake runs use them.

    IPYTHONDIR points the kernels at a startup file of ours without touching the user's own
    IPython profile; PYTHONPATH lets pytest import the plugin that names each kernel's notebook.
    """
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOOKS / "ipython_startup.py", startup / "00-course.py")
    python_path = os.pathsep.join(p for p in [str(HOOKS), os.environ.get("PYTHONPATH", "")] if p)
    return {"IPYTHONDIR": str(folder / "ipython"), "PYTHONPATH": python_path}


def _pytest(notebooks: list[Path], junit: Path, env: dict[str, str], timeout: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "pytest", "--nbmake", f"--nbmake-timeout={timeout}", "-p", "no:cacheprovider",
               "-p", "course_nbmake_plugin", "-o", "testpaths=", f"--junitxml={junit}", "-q", *map(str, notebooks)]
    return subprocess.Popen(command, cwd=ROOT, env=env)


def _merge_reports(parts: list[Path], target: Path) -> None:
    """One junit file with every worker's test suite, so `report` reads a run as one."""
    merged = ET.Element("testsuites")
    for part in parts:
        root = ET.parse(part).getroot()
        merged.extend(root.iter("testsuite") if root.tag == "testsuite" else root.findall("testsuite"))
    ET.ElementTree(merged).write(target, encoding="utf-8", xml_declaration=True)


def _clear_reports(folder: Path) -> None:
    """Remove the last run's files so a new run never reports stale notebooks or GPU peaks."""
    for name in [JUNIT, GPU_PEAKS, RUN_NOTE, TIMINGS, *(p.name for p in folder.glob("notebooks-*.xml"))]:
        (folder / name).unlink(missing_ok=True)


def _cuda_model() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # a broken torch install shows up in the notebooks themselves
        return None


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notebooks.py run", description="Run notebooks headless with nbmake.")
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: every chapter)")
    parser.add_argument("--workers", type=int, default=None, help="parallel pytest processes, whole labs "
                        f"each (default: ${WORKERS_ENV}, else {DEFAULT_WORKERS})")
    parser.add_argument("--profile", choices=PROFILES, help="set COURSE_PROFILE for the notebooks")
    parser.add_argument("--max-gpu-gib", type=float, default=None,
                        help="fail when a notebook's peak reserved CUDA memory exceeds this many GiB")
    parser.add_argument("--timeout", type=int, default=NOTEBOOK_TIMEOUT_S, help="per-cell nbmake timeout, seconds")
    parser.add_argument("--snapshots", type=Path, default=os.environ.get(SNAPSHOT_DIR_ENV) or None, metavar="DIR",
                        help="also write each notebook as executed (with outputs) to DIR/<repository path> "
                        f"(default: ${SNAPSHOT_DIR_ENV}, else none)")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, per worker, and exit")
    return parser


def snapshot_file(notebook: Path, folder: Path) -> Path:
    """Where the executed snapshot of `notebook` goes under `folder` (as the nbmake plugin writes it)."""
    try:
        relative = notebook.resolve().relative_to(ROOT)
    except ValueError:  # a notebook outside the repository keeps only its name
        relative = Path(notebook.name)
    return folder / relative


def run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    workers = args.workers if args.workers is not None else default_workers()
    if workers < 1:
        print(f"--workers must be at least 1, got {workers}", file=sys.stderr)
        return 2
    found = find_notebooks(args.paths)
    if not found:
        where = args.paths or [str(c) for c in chapter_folders()] or [f"{ROOT}/{CHAPTER_PATTERN}"]
        print(f"No notebooks found under {where}: nothing was tested.", file=sys.stderr)
        return 1
    plan = make_plan(found, workers)
    if args.dry_run:
        print(describe_plan(plan))
        if args.snapshots:
            print(f"executed snapshots would be written under {args.snapshots}")
        return 0
    for notebook, reason in plan.skipped:
        print(f"SKIPPED {_rel(notebook)}: {reason}")
    if not plan.groups:
        print("Every selected notebook was skipped for the reasons above.")
        return 0
    folder = report_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _clear_reports(folder)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    snapshots = args.snapshots.resolve() if args.snapshots else None
    if snapshots:
        for notebook in plan.notebooks:
            snapshot_file(notebook, snapshots).unlink(missing_ok=True)
    code = _execute(plan, folder, args.profile, args.timeout, snapshots)
    if snapshots:
        written = sum(snapshot_file(notebook, snapshots).exists() for notebook in plan.notebooks)
        print(f"Executed snapshots: {written} of {len(plan.notebooks)} notebook(s) under {_rel(snapshots)}")
    note = {"workers": len(plan.groups), "profile": args.profile or os.environ.get("COURSE_PROFILE"),
            "started": started, "cpu_count": os.cpu_count(), "gpu": _cuda_model()}
    (folder / RUN_NOTE).write_text(json.dumps(note, indent=1), encoding="utf-8")
    if (folder / JUNIT).exists():
        report(["--write", str(folder / TIMINGS)])
    if args.max_gpu_gib is not None:
        over = gpu_over_limit(read_gpu_peaks(folder / GPU_PEAKS), args.max_gpu_gib)
        for line in over:
            print(f"GPU MEMORY OVER LIMIT: {line}", file=sys.stderr)
        if over:
            code = code or 1
    return code


def _execute(plan: Plan, folder: Path, profile: str | None, timeout: int, snapshots: Path | None = None) -> int:
    """Run each worker's notebooks in its own pytest process; the worst exit code (5, no tests, fails).

    With `snapshots`, the plugin writes each executed notebook there (see snapshot_file)."""
    junit = folder / JUNIT
    parts = [folder / f"notebooks-{i}.xml" for i in range(len(plan.groups))] if len(plan.groups) > 1 else [junit]
    print(f"Running {len(plan.notebooks)} notebook(s) in {len(plan.groups)} process(es) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="course-nbmake-") as hooks:
        env = {**os.environ, **install_hooks(Path(hooks)), GPU_REPORT_ENV: str(folder / GPU_PEAKS)}
        if profile:
            env["COURSE_PROFILE"] = profile
        env.pop(SNAPSHOT_DIR_ENV, None)
        if snapshots:
            env.update({SNAPSHOT_DIR_ENV: str(snapshots), "COURSE_SNAPSHOT_ROOT": str(ROOT),
                        SNAPSHOT_DEVICE_ENV: _cuda_model() or "CPU"})
        if len(plan.groups) > 1:
            threads = str(threads_per_worker(len(plan.groups)))
            env.update(OMP_NUM_THREADS=threads, COURSE_NUM_THREADS=threads)
        processes = [_pytest(group, part, env, timeout) for group, part in zip(plan.groups, parts)]
        codes = _wait_all(processes)
    written = [part for part in parts if part.exists()]
    if len(parts) > 1 and written:
        _merge_reports(written, junit)
    if len(written) < len(parts):
        print(f"{len(parts) - len(written)} worker(s) wrote no junit report (crashed?).", file=sys.stderr)
        codes.append(1)
    return 1 if 5 in codes else max(codes)


def _wait_all(processes: list[subprocess.Popen], grace_s: float = 30.0) -> list[int]:
    """Exit codes of all processes; on SIGTERM, stop them and wait for them before exiting ourselves.

    A caller that kills this runner (a CI step timeout, `timeout` in scripts/gpu_check.sh) must not
    find pytest still running afterwards, writing its junit report over whatever the caller wrote.
    Only the first SIGTERM counts and the handler stays until the children are gone: GNU timeout
    signals its child and then the child's group, and a second SIGTERM meeting the default handler
    would kill the runner in the middle of the clean-up.
    """
    received: list[int] = []

    def terminated(signum: int, _frame: object) -> None:
        if not received:
            received.append(signum)
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        return [process.wait() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        signal.signal(signal.SIGTERM, previous)


# --- reporting -----------------------------------------------------------------------------------

class GpuPeak(NamedTuple):
    """The highest CUDA memory one notebook's kernel held, in bytes, and the GPU it ran on."""

    max_allocated: int
    max_reserved: int
    model: str


def read_gpu_peaks(path: Path) -> dict[str, GpuPeak]:
    """Per notebook (path relative to the repository), the highest peaks its kernel recorded."""
    peaks: dict[str, GpuPeak] = {}
    if not path.exists():
        return peaks
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        name = _rel(Path(record["notebook"])) if record.get("notebook") else "(unknown notebook)"
        seen = peaks.get(name)
        peaks[name] = GpuPeak(max(record["max_allocated"], seen.max_allocated if seen else 0),
                              max(record["max_reserved"], seen.max_reserved if seen else 0),
                              record.get("model") or (seen.model if seen else ""))
    return peaks


def gpu_over_limit(peaks: dict[str, GpuPeak], limit_gib: float) -> list[str]:
    """One line per notebook whose peak reserved memory exceeds `limit_gib`, naming notebook and number."""
    return [f"{name} reserved {peak.max_reserved / GIB:.2f} GiB > {limit_gib:g} GiB (allocated "
            f"{peak.max_allocated / GIB:.2f} GiB on {peak.model})"
            for name, peak in sorted(peaks.items()) if peak.max_reserved > limit_gib * GIB]


ANSI = re.compile(r"(\x1b|#x1B)\[[0-9;]*m")  # junit XML spells ESC as "#x1B"
ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)|Cell execution timed out)\b")


def first_error_line(text: str) -> str:
    """The first line of a failure that names an exception, else its first non-empty line."""
    lines = [ANSI.sub("", line).strip() for line in text.splitlines()]
    named = [line for line in lines if ERROR_LINE.match(line)]
    return (named or [line for line in lines if line] or ["(no message)"])[0][:200]


class Row(NamedTuple):
    """One notebook's line of the report; `failure` is the first line naming its exception."""

    seconds: float
    status: str
    notebook: str
    failure: str = ""


def _junit_rows(junit: Path, by_classname: dict[str, str]) -> list[Row]:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        status = "failed" if problem is not None else ("skipped" if case.find("skipped") is not None else "passed")
        failure = first_error_line(f"{problem.get('message', '')}\n{problem.text or ''}") if problem is not None else ""
        recorded = [prop.get("value", "") for prop in case.iter("property") if prop.get("name") == "notebook"]
        classname = case.get("classname", "")
        notebook = _rel(Path(recorded[0])) if recorded else by_classname.get(classname, classname)
        rows.append(Row(float(case.get("time", 0)), status, notebook, failure))
    return rows


def _gpu_cell(peak: GpuPeak | None) -> str:
    return "—" if peak is None else f"{peak.max_allocated / GIB:.2f} / {peak.max_reserved / GIB:.2f}"


def render_table(rows: list[Row], peaks: dict[str, GpuPeak]) -> str:
    """Markdown table, slowest first: seconds (⚠ over budget), GPU peak GiB, status, notebook."""
    rows = sorted(rows, key=lambda r: r.seconds, reverse=True)
    lines = ["| seconds | peak GiB (alloc/reserved) | status | notebook |", "| ---: | ---: | --- | --- |"]
    lines += [f"| {r.seconds:.1f}{' ⚠' if r.seconds > BUDGET_S else ''} | {_gpu_cell(peaks.get(r.notebook))} "
              f"| {r.status} | {r.notebook} |" for r in rows]
    top = max((p.max_reserved for p in peaks.values()), default=None)
    lines.append(f"| {sum(r.seconds for r in rows):.1f} | {'—' if top is None else f'max {top / GIB:.2f} reserved'} "
                 f"| total | {len(rows)} notebooks |")
    return "\n".join(lines)


def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notebooks.py report", description="Table of the last notebook run.")
    parser.add_argument("--write", help="also write the table as markdown to this file")
    parser.add_argument("--dir", action="append", type=Path, default=None,
                        help="report folder(s) to read and merge (default: the run's report folder)")
    return parser


def report(argv: list[str]) -> int:
    args = _report_parser().parse_args(argv)
    folders = args.dir or [report_dir()]
    junits = [folder / JUNIT for folder in folders if (folder / JUNIT).exists()]
    if not junits:
        print("No notebook run recorded yet: run `make test` or `make smoke LAB=...` first.")
        return 1
    # junit classnames are paths with "/" turned into "."; folder names may contain dots themselves
    by_classname = {_rel(p).replace("/", "."): _rel(p) for p in find_notebooks([])}
    rows = [row for junit in junits for row in _junit_rows(junit, by_classname)]
    peaks: dict[str, GpuPeak] = {}
    for folder in folders:
        peaks.update(read_gpu_peaks(folder / GPU_PEAKS))
    note = _read_note(folders[0] / RUN_NOTE)
    table = render_table(rows, peaks)
    print(table)
    over = [r for r in rows if r.seconds > BUDGET_S]
    if over:
        print(f"⚠ {len(over)} notebook(s) over the {BUDGET_S:.0f} s smoke budget.")
    for row in rows:
        if row.failure:
            print(f"FAILED {row.notebook}: {row.failure}")
    if args.write:
        Path(args.write).write_text(_markdown(table, note, bool(peaks)), encoding="utf-8")
    return 0


def _read_note(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _markdown(table: str, note: dict, gpu: bool) -> str:
    workers = note.get("workers") or 1
    shared = (f" The run used {workers} parallel processes, so each notebook shared the CPU: its seconds are "
              "higher than when run alone." if workers > 1 else "")
    memory = (f" GPU columns: the kernel's `torch.cuda.max_memory_allocated()` / `max_memory_reserved()` on "
              f"{note.get('gpu') or 'the GPU'}, processes it started not included." if gpu else
              " GPU columns are `—`: the run had no CUDA.")
    return (f"# Notebook timings ({note.get('profile') or 'default'} profile)\n\n"
            "Rendered by `python scripts/notebooks.py report --write FILE` from the last notebook run, started "
            f"{str(note.get('started', 'unknown time'))[:16]} UTC on a machine with {note.get('cpu_count', '?')} "
            "CPU cores (junit XML, per-notebook wall seconds including kernel start). "
            f"Budget: {BUDGET_S:.0f} s per notebook (⚠ marks overruns).{shared}{memory}\n\n{table}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": run, "report": report}
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
