"""Writing artifacts so that an interrupted save never leaves a half-written folder behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


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
