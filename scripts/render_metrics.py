"""Render each lab's measured numbers (outputs/metrics.json) into its README.

    python scripts/render_metrics.py [LAB_DIR ...]   (default: every lab with outputs/metrics.json)

The README block between `<!-- measured:start -->` and `<!-- measured:end -->` is replaced by a
table of every number the notebooks wrote, so README numbers are measurements, never hand-typed.
Run it after `make test` (or `make smoke LAB=...`) and commit the README.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- measured:start -->\n).*?(<!-- measured:end -->)", re.DOTALL)


def is_records(value: object) -> bool:
    """A non-empty list of dicts (e.g. one row per method): rendered as its own table."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, f"{name}.")
        elif not is_records(value):
            rows.append((name, value))
    return rows


def record_tables(data: dict, prefix: str = "") -> list[str]:
    """Markdown tables for every list of records in the metrics, columns in first-seen order."""
    lines: list[str] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += record_tables(value, f"{name}.")
        elif is_records(value):
            columns = list(dict.fromkeys(column for record in value for column in record))
            lines += ["", f"`{name}`:", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
            lines += ["| " + " | ".join(fmt(record.get(c)) for c in columns) + " |" for record in value]
    return lines


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "—" if value is None else str(value)


def render(lab: Path) -> bool:
    metrics_file, readme = lab / "outputs" / "metrics.json", lab / "README.md"
    if not metrics_file.exists() or not readme.exists():
        return False
    text = readme.read_text(encoding="utf-8")
    if not BLOCK.search(text):
        print(f"{readme}: no measured block, skipped")
        return False
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    lines = [f"`outputs/metrics.json` of a run on {date.today().isoformat()} ({machine}); "
             "regenerate with `python scripts/render_metrics.py`.", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| `{name}` | {fmt(value)} |" for name, value in flatten(metrics)]
    lines += record_tables(metrics)
    readme.write_text(BLOCK.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text), encoding="utf-8")
    print(f"{readme}: {len(flatten(metrics))} measured values, {len(record_tables(metrics)) and 'with' or 'no'} record tables")
    return True


def main(argv: list[str]) -> int:
    labs = [Path(p) for p in argv] or sorted(p.parents[1] for p in ROOT.glob("**/Lab-*/outputs/metrics.json")
                                              if ".venv" not in p.parts)
    rendered = sum(render(lab) for lab in labs)
    if not rendered:
        print("nothing rendered: run the notebooks first (make test / make smoke LAB=...)")
    return 0 if rendered else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
