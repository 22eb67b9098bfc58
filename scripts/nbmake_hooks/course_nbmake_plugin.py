"""pytest plugin that scripts/notebooks.py loads (`-p course_nbmake_plugin`) for its nbmake runs.

A notebook's kernel is a separate process, so only the kernel can read its own CUDA peak. The
kernel cannot know which notebook it executes, though: it is started by nbmake inside the test of
that notebook, inheriting this process's environment at that moment. Setting $COURSE_NOTEBOOK
just before each test is therefore enough for the IPython startup file (ipython_startup.py) to
label its record. The same path is attached to the test's junit record (property `notebook`),
so the report never has to guess a notebook from pytest's rootdir-relative classname.

Executed snapshots: when $COURSE_SNAPSHOT_DIR is set, the notebook as nbmake executed it (outputs,
errors and all) is written to `$COURSE_SNAPSHOT_DIR/<path relative to the repository>` and the
committed notebook is left untouched (nbmake's own `--overwrite` would write the outputs into it).
nbmake runs a notebook with an nbclient `NotebookClient` it creates in `nbmake.nb_run`; this plugin
gives that module a subclass whose `execute` writes its notebook when it returns or raises, so a
failed, timed-out or crashed notebook still leaves a snapshot showing where it stopped. No second
execution: the snapshot is the very notebook the test ran. scripts/build_site.py renders them.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

NOTEBOOK_ENV = "COURSE_NOTEBOOK"
SNAPSHOT_DIR_ENV = "COURSE_SNAPSHOT_DIR"
SNAPSHOT_ROOT_ENV = "COURSE_SNAPSHOT_ROOT"  # the repository: snapshot paths are relative to it
SNAPSHOT_DEVICE_ENV = "COURSE_SNAPSHOT_DEVICE"  # what the kernels ran on, as the runner saw it
SNAPSHOT_KEY = "course_snapshot"  # notebook metadata key: how and when the snapshot was executed

_running: dict[str, Path] = {}  # the notebook of the test in progress (one at a time per process)


def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get(SNAPSHOT_DIR_ENV)
    if folder:
        install_snapshots(Path(folder), Path(os.environ.get(SNAPSHOT_ROOT_ENV) or str(config.rootpath)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    notebook = str(Path(str(item.path)).resolve())
    os.environ[NOTEBOOK_ENV] = notebook
    _running["notebook"] = Path(notebook)
    item.user_properties.append(("notebook", notebook))


def pytest_runtest_teardown(item: pytest.Item) -> None:
    os.environ.pop(NOTEBOOK_ENV, None)
    _running.pop("notebook", None)


def snapshot_path(notebook: Path, folder: Path, root: Path) -> Path:
    """Where a notebook's executed snapshot goes: its repository-relative path under `folder`."""
    try:
        relative = notebook.resolve().relative_to(root.resolve())
    except ValueError:  # a notebook outside the repository (a test's temporary one)
        relative = Path(notebook.name)
    return folder / relative


def install_snapshots(folder: Path, root: Path) -> None:
    """Make nbmake's notebook client write each executed notebook under `folder`."""
    try:
        from nbmake import nb_run
        base = nb_run.NotebookClient
    except (ImportError, AttributeError) as error:  # nbmake changed its internals: say so, run anyway
        print(f"[course] executed snapshots disabled: nbmake has no nb_run.NotebookClient ({error!r})",
              file=sys.stderr)
        return
    if getattr(base, "course_snapshots", False):
        return

    class SnapshotClient(base):  # type: ignore[misc, valid-type]
        """nbmake's NotebookClient, writing the executed notebook when execution ends, however it ends."""

        course_snapshots = True

        def execute(self, *args, **kwargs):  # noqa: ANN002, ANN003 - same signature as nbclient's
            problem: BaseException | None = None
            try:
                return super().execute(*args, **kwargs)
            except BaseException as error:
                problem = error
                raise
            finally:
                notebook = _running.get("notebook")
                if notebook is not None:
                    write_snapshot(self.nb, snapshot_path(notebook, folder, root), problem)

    nb_run.NotebookClient = SnapshotClient


def _status(problem: BaseException | None) -> str:
    if problem is None:
        return "passed"
    name = type(problem).__name__
    if name == "CellExecutionError":
        return "failed"
    if name == "CellTimeoutError":
        return "timed out"
    return "crashed"


def write_snapshot(nb, target: Path, problem: BaseException | None) -> None:  # noqa: ANN001 - a NotebookNode
    """Write a copy of the executed notebook, with how it ran in its metadata; never raises."""
    try:
        import copy

        import nbformat

        snapshot = copy.deepcopy(nb)
        failing = next((index for index, cell in enumerate(snapshot.cells) if cell.cell_type == "code"
                        and any(out.get("output_type") == "error" for out in cell.get("outputs", []))), None)
        summary = str(problem).strip().splitlines()[-1][:300] if problem is not None and str(problem).strip() else ""
        snapshot.metadata[SNAPSHOT_KEY] = {
            "executed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": _status(problem),
            "error": summary or (type(problem).__name__ if problem is not None else ""),
            "failing_cell": failing,
            "profile": os.environ.get("COURSE_PROFILE") or "default",
            "device": os.environ.get(SNAPSHOT_DEVICE_ENV) or "",
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        nbformat.write(snapshot, str(partial))
        os.replace(partial, target)
    except Exception as error:  # a snapshot must never change the notebook test's outcome
        print(f"[course] executed snapshot not written to {target}: {error!r}", file=sys.stderr)
