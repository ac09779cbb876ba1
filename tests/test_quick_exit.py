"""`vlm` ends without the interpreter's teardown, but with everything a normal exit does that
is seen outside the process (vlm_core.cli.quick_exit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from vlm_core.cli.quick_exit import quick_exit

out = Path(sys.argv[1])

class Teardown:
    def __del__(self):
        (out / "teardown").write_text("ran")

kept = Teardown()  # freed only by the interpreter's teardown
atexit.register(lambda: (out / "atexit").write_text("ran"))

def late():
    time.sleep(0.3)
    (out / "thread").write_text("ran")

threading.Thread(target=late).start()  # a non-daemon thread: exit waits for it
sys.stdout.write("buffered, no newline")
quick_exit(eval(sys.argv[2]))
"""


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("None", 0), ("3", 3), ("'bad'", 1)])
def test_quick_exit_keeps_what_an_exit_does_and_skips_the_teardown(tmp_path: Path, code, status):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), code], capture_output=True, text=True
    )
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "ran"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()  # the teardown was skipped
    assert proc.stderr == ("bad\n" if code == "'bad'" else "")


def test_the_console_script_exits_with_the_commands_status(vlm_bare):
    """`python -m vlm_core.cli` (main() without argv) ends through quick_exit: usage errors
    are still exit 2 with one line, and --version prints."""
    proc = vlm_bare("run")
    assert proc.returncode == 2 and "Missing argument 'TASK'" in proc.stderr
    proc = vlm_bare("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("vlm, version")
