"""MetaSchedule imports tvm.s_tir.tensor_intrin when it makes a TuneContext: ~500 TVMScript
functions, each parse calling inspect.stack(), and for every frame of the import machinery
(files such as "<frozen importlib._bootstrap>") inspect.getmodule scans all of sys.modules again.
That costs ~25 s per tuning process on this machine; with getmodule's answer for frames cached by
file name while the package imports (for a frame it depends on the file name alone), ~2.5 s."""

from __future__ import annotations

import contextlib
import inspect
import sys


@contextlib.contextmanager
def _frames_modules_cached():
    real = inspect.getmodule
    by_file: dict[str, object] = {}

    def getmodule(obj, _filename=None):
        if _filename is None or not inspect.isframe(obj):
            return real(obj, _filename)
        if _filename not in by_file:
            by_file[_filename] = real(obj, _filename)
        return by_file[_filename]

    inspect.getmodule = getmodule
    try:
        yield
    finally:
        inspect.getmodule = real


def import_tensor_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (once per process) the fast way."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    with _frames_modules_cached():
        import tvm.s_tir.tensor_intrin  # noqa: F401 - imported for its registrations
