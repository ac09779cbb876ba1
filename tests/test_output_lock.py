"""The output folder of a run: one run at a time (a lock naming its holder, stale locks taken
over), a finished run kept (the next one writes beside it unless --overwrite), a full disk said
as such with nothing half-written, and no control character reaching a name or the terminal."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import cli, one_line_error

from vlm_core import hookimpl
from vlm_core.errors import OutputInUseError
from vlm_core.kinds import Kind
from vlm_core.lockfile import Holder, LockFile, LockHeld
from vlm_core.outdir import claim_output, lock_path, printable, safe_name, safe_path
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.tasks import TaskSpec


class HoldPlugin:
    """A task that stays inside its run until the test lets it go (or raises ``crash``)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.crash: BaseException | None = None

    @hookimpl
    def register_tasks(self, register):
        register(
            TaskSpec(
                id="hold.wait",
                title="Hold",
                description="Waits for the test.",
                domain="test",
                run=self.run,
                outputs=(Kind.METRICS,),
            )
        )

    def run(self, inputs, params, ctx):
        from vlm_core.types import Metrics

        self.entered.set()
        if self.crash is not None:
            raise self.crash
        assert self.go.wait(30)
        return [{"held": Metrics({"height": float(image.height)})} for image in inputs]


@pytest.fixture
def hold(vlm_home):
    plugin = HoldPlugin()
    return plugin, load_registry(extra={"hold": plugin}, use_entry_points=False)


@pytest.fixture
def sample(fixture_site: Path) -> Path:
    return fixture_site / "vlm_fixture_good" / "square.png"


def run_in_thread(request: RunRequest, registry) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def work() -> None:
        try:
            box["outcome"] = run_task(request, registry=registry)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, box


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_second_run_into_the_same_out_is_refused_with_the_first_runs_id(
    hold, vlm, sample, tmp_path
):
    plugin, registry = hold
    out = tmp_path / "out"
    thread, box = run_in_thread(RunRequest("hold.wait", [sample], out_dir=out), registry)
    try:
        assert plugin.entered.wait(30)
        lock = json.loads(lock_path(out).read_text())
        assert lock["pid"] == os.getpid() and lock["host"]
        proc = vlm("run", "good.invert", str(sample), "--out", str(out))  # another process
        with pytest.raises(OutputInUseError) as same_process:  # the dashboard's way in
            run_task(RunRequest("hold.wait", [sample], out_dir=out), registry=registry)
    finally:
        plugin.go.set()
        thread.join(30)
    first = box["outcome"]
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert f"is in use by run {first.run_id[:12]} (pid {os.getpid()}, started " in line
    assert line.endswith("wait for it or choose another folder")
    assert same_process.value.run_id == first.run_id and same_process.value.exit_code == 2
    assert json.loads((out / "run.json").read_text())["run_id"] == first.run_id
    assert tree(out) == ["run.json", "square", "square/held.json", "square/result.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out", "vlm-home"]
    assert sorted(r.status for r in RunStore.default().list(limit=5)) == ["ok", "rejected"]


def test_the_lock_is_released_on_error_and_on_ctrl_c(hold, sample, tmp_path, monkeypatch):
    from vlm_core import export

    plugin, registry = hold
    out = tmp_path / "out"
    request = RunRequest("hold.wait", [sample], out_dir=out)
    plugin.crash = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run_task(request, registry=registry)
    assert not lock_path(out).exists() and not out.exists()

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    plugin.crash = None
    plugin.go.set()
    monkeypatch.setattr(export, "export_results", broken)
    with pytest.raises(RuntimeError, match="exporter broke"):
        run_task(request, registry=registry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vlm-home"]
    monkeypatch.undo()
    assert run_task(request, registry=registry).out_dir == out


def test_a_stale_lock_of_a_dead_process_is_taken_over(vlm, sample, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    record = {"run_id": "d" * 32, "pid": dead.pid, "host": socket.gethostname()}
    lock_path(out).write_text(json.dumps({**record, "started": "2026-01-01T00:00:00+00:00"}))
    left = tmp_path / ".out.vlm-staging-dddddddd" / "x"  # what the dead run had half-written
    left.mkdir(parents=True)
    (left / "half.png").write_bytes(b"\x89PNG")
    proc = vlm("run", "good.invert", str(sample), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "square" / "inverted.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]


def test_a_run_killed_while_replacing_a_folder_gets_it_back(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    parked = tmp_path / ".out.vlm-replaced-eeeeeeee"  # killed between the two renames
    parked.mkdir()
    (parked / "run.json").write_text(json.dumps({"task": "t.x", "items": [], "run_id": "e"}))
    record = {"run_id": "e" * 32, "pid": dead.pid, "host": socket.gethostname()}
    lock_path(out).write_text(json.dumps({**record, "started": "2026-01-01T00:00:00+00:00"}))
    claim = claim_output(out, "f" * 32)
    assert (out / "run.json").is_file() and not parked.exists()
    assert claim.target == tmp_path / "out-2"  # the run it holds is kept
    claim.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_lock_kept_by_a_forked_child_of_a_killed_run_is_taken_over(tmp_path):
    """A DataLoader worker forked by a run must not keep the run's lock after the run dies."""
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from vlm_core.lockfile import Holder, LockFile
        LockFile.acquire(Path({str(tmp_path / "x.lock")!r}), Holder.this_process("a" * 32))
        child = os.fork()
        if child == 0:  # os.fork has run the at-fork hooks in here before returning
            os.write(1, b"child forked\\n")  # one write each: the two lines cannot interleave
            time.sleep(20)
            os._exit(0)
        os.write(1, f"{{child}}\\n".encode())
        os._exit(0)  # the run dies without releasing its lock
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    # both lines, in either order: on a busy machine the child may not have been scheduled
    # (and closed its copy of the lock) when its parent has already died
    lines = {proc.stdout.readline().strip() for _ in range(2)}
    (child,) = (int(line) for line in lines if line != "child forked")
    assert "child forked" in lines
    try:
        proc.wait(10)
        os.kill(child, 0)  # the child still runs
        with LockFile.acquire(tmp_path / "x.lock", Holder.this_process("b" * 32)) as lock:
            assert json.loads(lock.path.read_text())["run_id"] == "b" * 32
    finally:
        os.kill(child, 9)


def test_without_os_locks_the_pid_decides(tmp_path, monkeypatch):
    from vlm_core import lockfile

    monkeypatch.setattr(lockfile, "_os_lock", lambda fd: None)  # e.g. a file system without
    path = tmp_path / "x.lock"
    alive = Holder.this_process("a" * 32)
    path.write_text(json.dumps(alive.__dict__))
    with pytest.raises(LockHeld) as held:
        LockFile.acquire(path, Holder.this_process("b" * 32))
    assert held.value.holder == alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({**alive.__dict__, "pid": dead.pid}))
    with LockFile.acquire(path, Holder.this_process("c" * 32)) as lock:
        assert lock.holder.run_id == "c" * 32
    assert not path.exists()


def test_two_claims_in_one_process_exclude_each_other(tmp_path):
    first = claim_output(tmp_path / "out", "1" * 32)
    with pytest.raises(OutputInUseError, match="in use by run 111111111111"):
        claim_output(tmp_path / "out", "2" * 32)
    first.release()
    claim_output(tmp_path / "out", "3" * 32).release()
    assert list(tmp_path.iterdir()) == []


def invert(vlm, out: Path, *inputs: Path, extra: tuple[str, ...] = ()):
    proc = vlm("run", "good.invert", *map(str, inputs), "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def run_id(folder: Path) -> str:
    return json.loads((folder / "run.json").read_text())["run_id"]


def test_a_finished_run_is_kept_and_the_next_writes_beside_it(vlm, sample, tmp_path):
    out = tmp_path / "out"
    invert(vlm, out, sample)
    first = run_id(out)
    second = invert(vlm, out, sample)
    assert f"outputs in {out}-2 (beside {out}, which holds a finished run" in second.stdout
    invert(vlm, out, sample)
    assert run_id(out) == first
    assert len({first, run_id(tmp_path / "out-2"), run_id(tmp_path / "out-3")}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out", "out-2", "out-3"]
    as_json = json.loads(vlm("run", "good.invert", str(sample), "-o", str(out), "--json").stdout)
    assert as_json["out_dir"] == f"{out}-4" and as_json["requested_out"] == str(out)


def test_overwrite_replaces_the_finished_run_as_a_whole(vlm, sample, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(sample, inputs / name)
    out = tmp_path / "out"
    invert(vlm, out, inputs)
    assert (out / "b" / "inverted.png").is_file()
    proc = invert(vlm, out, inputs / "a.png", extra=("--overwrite",))
    assert f"outputs in {out}\n" in proc.stdout
    assert tree(out) == ["a", "a/inverted.png", "a/result.json", "a/stats.json", "run.json"]
    assert proc.stdout.splitlines()[-1].startswith(f"run {run_id(out)[:12]}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "in", "out"]


def test_a_folder_without_a_vlm_run_is_written_into(vlm, sample, tmp_path):
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    invert(vlm, empty, sample)
    invert(vlm, notes, sample)
    assert (empty / "run.json").is_file() and (notes / "run.json").is_file()
    assert (notes / "notes.txt").read_text() == "mine"


def test_a_held_beside_folder_is_skipped(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"task": "t.x", "items": [], "run_id": "0"}))
    other = claim_output(tmp_path / "out-2", "2" * 32)  # a run asked for out-2 itself
    claim = claim_output(out, "3" * 32)
    assert claim.target == tmp_path / "out-3" and claim.beside
    with pytest.raises(OutputInUseError, match="in use by run 333333333333"):
        claim_output(out, "4" * 32)  # the run writing beside out still holds out
    claim.release()
    other.release()
    replacing = claim_output(out, "5" * 32, overwrite=True)
    assert replacing.target == out and replacing.replace and not replacing.beside
    replacing.release()


# ---- a full disk -------------------------------------------------------------------------


@pytest.fixture
def in_process(vlm_home, fixture_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "good")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_said_with_the_file_and_leaves_nothing(
    code, in_process, sample, tmp_path, monkeypatch, capsys
):
    from vlm_core.export import writer

    real = writer.atomic_write_text

    def full(path: Path, text: str) -> None:
        if path.name == "result.json":
            raise OSError(code, os.strerror(code), str(path))
        real(path, text)

    monkeypatch.setattr(writer, "atomic_write_text", full)
    out = tmp_path / "out"
    rc, _, stderr = cli(["run", "good.invert", str(sample), "--out", str(out)], capsys)
    assert rc == 1
    assert stderr.count("\n") == 1 and "internal error" not in stderr
    assert stderr.startswith("error: no space left on device")
    assert f"while writing {out}/square/result.json; nothing of this run was written" in stderr
    assert ("quota" in stderr) == (code == errno.EDQUOT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vlm-home"]  # no staging, no lock
    assert RunStore.default().list(limit=1)[0].status == "failed"


def test_a_full_disk_anywhere_is_not_an_internal_error(in_process, monkeypatch, capsys):
    from vlm_core import runner

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x.bin")

    monkeypatch.setattr(runner, "run_task", full)
    rc, _, stderr = cli(["run", "good.invert"], capsys)
    assert (rc, stderr) == (1, "error: no space left on device while writing /data/x.bin\n")


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    from vlm_core import fileio

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() says it: no name

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
    assert info.value.filename == str(tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


# ---- control characters ------------------------------------------------------------------


def test_names_are_made_safe():
    assert safe_name("a\x1b[31mb") == "a_[31mb"
    assert safe_name("c\nd\te\x7f\u202ef") == "c_d_e__f"
    assert safe_name("../up") == ".._up" and safe_name("..") == "__" and safe_name(".") == "_"
    assert safe_name("") == "result" and safe_name("déjà vu 写真") == "déjà vu 写真"
    assert printable("a\x1b[31mb\nc") == "a\\x1b[31mb\\nc"
    assert safe_path(Path("new\x1b/sub\nx")) == Path("new_/sub_x")


def test_control_characters_reach_neither_the_file_system_nor_the_terminal(vlm, sample, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a\x1b[31mb.png", "c\nd.png", "...png"):
        shutil.copy(sample, inputs / name)
    out = tmp_path / "out\x1b]0;pwned\x07"
    proc = vlm("run", "good.invert", str(inputs), str(inputs / "...png"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    made = tmp_path / "out_]0;pwned_"
    assert sorted(p.name for p in made.iterdir()) == ["__", "a_[31mb", "c_d", "run.json"]
    assert not any("\x1b" in str(p) or "\n" in str(p) for p in made.rglob("*"))
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert len(proc.stdout.splitlines()) == 4  # one line per result, one summary line
    assert "a\\x1b[31mb.png: inverted" in proc.stdout and "c\\nd.png: inverted" in proc.stdout
    assert f"outputs in {made}" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "in", made.name]


def test_an_error_line_escapes_control_characters(vlm, tmp_path):
    proc = vlm("run", "good.invert", str(tmp_path / "gone\x1b[2J\nx.png"))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "\x1b" not in line and "gone\\x1b[2J\\nx.png" in line
