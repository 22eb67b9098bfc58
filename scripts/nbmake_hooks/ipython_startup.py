"""IPython startup file: record this kernel's peak CUDA memory, for scripts/notebooks.py.

scripts/notebooks.py copies this file to `$IPYTHONDIR/profile_default/startup/00-course.py` of a
temporary IPYTHONDIR for its nbmake runs, so course notebooks need no measuring code of their own.
After every cell (and at exit) it appends one JSON line to $COURSE_GPU_REPORT when the notebook
has initialised CUDA and its peak changed:
    {"notebook": ..., "max_allocated": bytes, "max_reserved": bytes, "model": GPU name, "pid": ...}
Appending after each cell, not only at exit, keeps the peak of a kernel that is killed on timeout
or by the out-of-memory killer. It never imports torch itself (a notebook that does not use torch
pays nothing) and never raises: measuring must not break the notebook it measures.
Only the kernel is measured: processes a notebook starts (torchrun workers) are not included.
"""


def _course_register_gpu_report() -> None:
    """Register the recorder; a function so no helper name leaks into the notebook's namespace."""
    import atexit
    import json
    import os
    import sys

    path = os.environ.get("COURSE_GPU_REPORT")
    if not path:
        return
    last: list[tuple[int, int]] = []

    def record(*_: object) -> None:
        torch = sys.modules.get("torch")
        try:
            if torch is None or not torch.cuda.is_initialized():
                return
            peak = (int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved()))
            if last and last[-1] == peak:
                return
            last[:] = [peak]
            line = {"notebook": os.environ.get("COURSE_NOTEBOOK", ""), "max_allocated": peak[0],
                    "max_reserved": peak[1], "model": torch.cuda.get_device_name(), "pid": os.getpid()}
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        except Exception as error:  # a broken measurement must not fail the notebook
            print(f"[course] GPU peak not recorded: {error!r}", file=sys.stderr)

    atexit.register(record)
    shell = get_ipython()  # noqa: F821 - defined by IPython when it runs startup files
    if shell is not None:
        shell.events.register("post_run_cell", record)


_course_register_gpu_report()
del _course_register_gpu_report
