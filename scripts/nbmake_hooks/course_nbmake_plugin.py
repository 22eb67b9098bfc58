"""pytest plugin that scripts/notebooks.py loads (`-p course_nbmake_plugin`) for its nbmake runs.

A notebook's kernel is a separate process, so only the kernel can read its own CUDA peak. The
kernel cannot know which notebook it executes, though: it is started by nbmake inside the test of
that notebook, inheriting this process's environment at that moment. Setting $COURSE_NOTEBOOK
just before each test is therefore enough for the IPython startup file (ipython_startup.py) to
label its record. The same path is attached to the test's junit record (property `notebook`),
so the report never has to guess a notebook from pytest's rootdir-relative classname.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK_ENV = "COURSE_NOTEBOOK"


def pytest_runtest_setup(item: pytest.Item) -> None:
    notebook = str(Path(str(item.path)).resolve())
    os.environ[NOTEBOOK_ENV] = notebook
    item.user_properties.append(("notebook", notebook))


def pytest_runtest_teardown(item: pytest.Item) -> None:
    os.environ.pop(NOTEBOOK_ENV, None)
