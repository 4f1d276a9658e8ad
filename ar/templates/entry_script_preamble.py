
# The loop edits this file only (see program.md for the scope). What follows is the host's code,
# copied from __ENTRY_SHOWN__ with the knobs above put in place; it runs as that file would.
import os as _ar_os  # noqa: E402
import sys as _ar_sys  # noqa: E402


def _ar_project_root():
    here = _ar_os.path.dirname(_ar_os.path.abspath(__file__))
    while _ar_os.path.basename(here) != ".autoresearch":
        if _ar_os.path.dirname(here) == here:
            return _ar_os.getcwd()
        here = _ar_os.path.dirname(here)
    return _ar_os.path.dirname(here)


__file__ = _ar_os.path.join(_ar_project_root(), __ENTRY__)  # paths built from the host's own file still resolve
_ar_sys.path[:1] = [_ar_os.path.dirname(__file__), _ar_project_root()]  # and so do its imports

