"""Artifacts: write them so an interrupted save never leaves a half-written folder behind, and
reuse them across stages with one mechanism, `ensure`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` only when the block finishes,
    so an interrupted write never leaves a truncated file (metrics, weights, run records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_pretrained_atomic(path: str | Path, *objects) -> Path:
    """`save_pretrained` of each object (model, adapter, tokenizer) into a temporary sibling folder,
    then swap it in, so an interrupted save never leaves a half-written artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def ensure(artifact: str | Path, build: Callable[[], Any], *, made_by: str) -> Path:
    """Stage independence in one place: reuse `artifact` when an earlier stage wrote it; otherwise say
    so and call `build`, the same recipe that stage ran, so every notebook also runs on its own.

    `artifact` is the file whose presence proves the build finished (write it last, atomically)."""
    artifact = Path(artifact)
    if artifact.exists():
        print(f"reusing {artifact} (made by {made_by})")
        return artifact
    print(f"{artifact} not found: rebuilding it with the same recipe ({made_by}) ...")
    build()
    if not artifact.exists():
        raise FileNotFoundError(f"the rebuild ({made_by}) finished but did not write {artifact}")
    return artifact
