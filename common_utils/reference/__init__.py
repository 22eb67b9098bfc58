"""Reference code taught in the notebooks, exported for reuse (d2l's `#@save` style).

A notebook cell whose first line is `#@save <module>` is the single source of that code; the
command `python scripts/export_reference.py` copies every such cell, in course order, into
`common_utils/reference/<module>.py`, and tests/test_reference_export.py fails when a module and
its notebooks disagree. Edit the notebook, then re-export; never edit these files by hand.
"""
