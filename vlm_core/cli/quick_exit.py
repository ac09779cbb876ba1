"""End the `vlm` process without the interpreter's teardown.

When a Python process exits, the interpreter finalises: it frees every module, class and object
one by one. After a run has imported torch, torchvision and MONAI that takes 0.5 s to 2 s of
CPU on the development machine (measured in benchmarks/cold_start.py; docs/benchmarks.md), for
memory the operating system reclaims at once anyway. mypy ends its command line the same way
(``mypy.util.hard_exit``).

:func:`quick_exit` does everything a normal exit does that has an effect outside the process —
in the interpreter's own order: wait for non-daemon threads and the ``threading`` exit hooks
(``concurrent.futures`` pools), run the ``atexit`` callbacks (logging handlers flushed,
multiprocessing children stopped, temporary folders removed), flush stdout and stderr — and
then ends the process with ``os._exit``. Files the commands write are written atomically and
closed before the command returns; nothing is left in a Python buffer.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

#: The status Python itself exits with when flushing stdout or stderr fails at exit.
FLUSH_FAILED = 120


def exit_status(code: object) -> int:
    """The process status ``sys.exit(code)`` gives: None is 0, an int is itself, anything else
    is printed to stderr and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def quick_exit(code: object = 0) -> NoReturn:
    """Exit with ``code`` as ``sys.exit(code)`` would, skipping the interpreter's teardown."""
    status = exit_status(code)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:  # not CPython: exit the ordinary way
        sys.exit(status)
    shutdown()  # joins non-daemon threads and runs threading's exit hooks, as at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`vlm ... | head`), a closed stream
            status = status or FLUSH_FAILED
    os._exit(status)
