"""`vlm weights list|fetch|verify|import`, run in-process through `vlm_core.cli.main`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vlm_core import hookimpl
from vlm_core.cli import app, main
from vlm_core.cli.weights_cmd import weights
from vlm_core.fileio import sha256_file
from vlm_core.kinds import Kind
from vlm_core.tasks import TaskSpec, WeightsRef
from vlm_core.weights import OFFLINE_FLAGS

MISSING_SHA = "ab" * 32


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network disabled in tests")


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "files" / "tiny.safetensors"
    path.parent.mkdir()
    save_file({"w": torch.arange(4, dtype=torch.float32)}, str(path))
    return path


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_file: Path) -> tuple[Path, object]:
    """`vlm` with the weights group mounted, a private home and caches, and one plugin whose
    task declares two weights: a shipped file (present) and a hub file (missing)."""
    from vlm_core import plugins

    home = tmp_path / "home"
    monkeypatch.setenv("VLM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in (*OFFLINE_FLAGS, "VLM_PLUGINS", "VLM_STRICT_PLUGINS", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setitem(app.cli.commands, "weights", weights)

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(
                TaskSpec(
                    id="wt.classify",
                    title="Classify",
                    description="A task that declares weights.",
                    domain="test",
                    run="vlm_core.tasks:package_file",
                    outputs=(Kind.METRICS,),
                    weights=(
                        WeightsRef(
                            name="shipped",
                            filename=str(weights_file),
                            sha256=sha256_file(weights_file),
                        ),
                        WeightsRef(
                            name="hub",
                            filename="model.safetensors",
                            source="hf-hub:org/repo",
                            sha256=MISSING_SHA,
                        ),
                    ),
                )
            )

    registry = plugins.load_registry(extra={"wt": Plugin()}, use_entry_points=False)
    assert "wt.classify" in registry.tasks, registry.plugins["wt"].error
    monkeypatch.setattr(plugins, "_cached", registry)
    return home, registry


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["weights", *args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_list_shows_declared_weights_present_and_missing(cli, capsys, weights_file):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["shipped"]["status"] == "present"
    assert rows["shipped"]["path"] == str(weights_file)
    assert rows["hub"]["status"] == "missing" and rows["hub"]["source"] == "hf-hub:org/repo"
    assert rows["hub"]["task"] == "wt.classify" and rows["hub"]["sha256"] == MISSING_SHA
    code, out, _ = run(capsys, "list")
    assert code == 0 and "shipped" in out and "missing" in out and "present" in out


def test_import_then_list_and_verify_the_store(cli, capsys, weights_file):
    home, _ = cli
    digest = sha256_file(weights_file)
    other = weights_file.with_name("other.safetensors")
    save_file({"v": torch.zeros(3)}, str(other))
    code, out, _ = run(capsys, "import", str(weights_file), "--sha256", digest)
    assert code == 0 and digest in out
    assert run(capsys, "import", str(other))[0] == 0
    stored = home / "weights" / "sha256" / digest / "tiny.safetensors"
    assert stored.read_bytes() == weights_file.read_bytes()
    rows = {r["name"]: r for r in json.loads(run(capsys, "list", "--json")[1])}
    assert rows["shipped"]["path"] == str(stored)  # the store comes first when a sha256 is known
    assert rows["other.safetensors"]["task"] is None  # in the store, declared by no task
    assert rows["other.safetensors"]["status"] == "present"
    code, out, _ = run(capsys, "verify", "--json")
    assert code == 0
    statuses = {r["weights"]: r["status"] for r in json.loads(out)}
    assert statuses == {
        "(store) other.safetensors": "ok",
        "(store) tiny.safetensors": "ok",
        "wt.classify: shipped": "ok",
        "wt.classify: hub": "missing",
    }


def test_verify_detects_a_corrupted_store_file(cli, capsys, weights_file):
    home, _ = cli
    assert run(capsys, "import", str(weights_file))[0] == 0
    (stored,) = (home / "weights" / "sha256").rglob("tiny.safetensors")
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    code, out, err = run(capsys, "verify")
    assert code == 1
    assert "mismatch" in out
    assert "sha256 mismatch" in one_line_error(err)


def test_verify_a_path_against_a_given_sha256(cli, capsys, weights_file):
    digest = sha256_file(weights_file)
    code, out, _ = run(capsys, "verify", str(weights_file), "--sha256", digest, "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "ok"
    code, out, err = run(capsys, "verify", str(weights_file), "--sha256", MISSING_SHA)
    assert code == 1 and f"expected sha256 {MISSING_SHA}" in one_line_error(err)
    code, _, err = run(capsys, "verify", str(weights_file.with_name("gone.safetensors")))
    assert code == 1 and "not on this machine" in one_line_error(err)


def test_import_with_the_wrong_sha256_fails_and_stores_nothing(cli, capsys, weights_file):
    home, _ = cli
    code, _, err = run(capsys, "import", str(weights_file), "--sha256", MISSING_SHA)
    assert code == 1
    assert "refusing to import" in one_line_error(err)
    assert not list((home / "weights").rglob("*.safetensors"))


def test_fetch_offline_fails_in_one_line_naming_plugin_file_and_sha(cli, capsys, monkeypatch):
    monkeypatch.setenv("VLM_OFFLINE", "1")
    code, out, err = run(capsys, "fetch", "--task", "wt.classify")
    assert code == 1
    line = one_line_error(err)
    assert "plugin 'wt'" in line and "model.safetensors" in line
    assert f"expected sha256 {MISSING_SHA}" in line and "VLM_OFFLINE=1" in line
    assert "tiny.safetensors" in out  # the present one is still reported


def test_fetch_a_local_path_prints_its_sha256(cli, capsys, weights_file):
    code, out, _ = run(capsys, "fetch", str(weights_file), "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["status"] == "ok" and row["sha256"] == sha256_file(weights_file)
    code, _, err = run(capsys, "fetch", "a", "b", "--sha256", MISSING_SHA)
    assert code == 2 and "--sha256 needs exactly one REF" in one_line_error(err)


def test_vlm_weights_in_a_fresh_process_with_hf_hub_offline(tmp_path):
    """The real command line in a fresh process: one line on stderr, exit code 1."""
    env = {
        "VLM_HOME": str(tmp_path / "home"),
        "VLM_PLUGINS": "",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "HF_HUB_OFFLINE": "1",
    }
    code = (
        "import sys; from vlm_core.cli import app, main; "
        "from vlm_core.cli.weights_cmd import weights; "
        "app.cli.commands.setdefault('weights', weights); main(sys.argv[1:])"
    )
    ref = "hf-hub:org/repo/w.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", code, "weights", "fetch", ref, "--sha256", MISSING_SHA],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    line = one_line_error(proc.stderr)
    assert "plugin 'core'" in line and "'w.safetensors'" in line
    assert f"expected sha256 {MISSING_SHA}" in line and "unset HF_HUB_OFFLINE" in line


def test_ship_copies_a_training_run_into_a_weights_folder(cli, capsys, tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from vlm_core.weights.trained import load_trained

    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000004"
    checkpoint.mkdir(parents=True)
    save_file({"g_ema.w": torch.ones(2, dtype=torch.bfloat16), "d.w": torch.ones(3)},
              str(checkpoint / "model.safetensors"))  # fmt: skip
    (checkpoint / "model.json").write_text(json.dumps({"task": "t", "card": {"a": 1}}))
    (tmp_path / "run" / "checkpoints.json").write_text(
        json.dumps({"best": "step-00000004", "last": "step-00000004"})
    )
    target = tmp_path / "pkg" / "weights" / "gen"
    code, out, _ = run(
        capsys, "ship", str(tmp_path / "run"), "--to", str(target), "--keep", "g_ema."
    )
    assert code == 0 and "1 tensors" in out
    shipped = load_trained(str(target / "model.safetensors"))
    assert set(shipped.state_dict) == {"g_ema.w"}
    assert shipped.state_dict["g_ema.w"].dtype == torch.float32 and shipped.card == {"a": 1}
    code, _, err = run(capsys, "ship", str(tmp_path / "nothing"), "--to", str(target))
    assert code != 0 and "neither a training nor a checkpoint folder" in one_line_error(err)


def test_ship_leaves_no_path_of_the_training_machine_and_writes_readable_files(capsys, tmp_path):
    """The packaged model.json names no absolute path of the machine that trained (data folder,
    command line, init weights), and the files are world-readable whatever the umask."""
    import os
    import stat

    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    checkpoint.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(checkpoint / "model.safetensors"))
    sidecar = {
        "task": "t",
        "card": {"architecture": {"n": 2}},
        "data": {"path": "/home/ann/data/train", "sha256": "0" * 64},
        "params": {"init_weights": "/tmp/capB/checkpoints/step-6", "source": "hf-hub:o/r"},
        "command": ["vlm", "train", "--data", "/home/ann/data/train", "-p",
                    "init_weights=/tmp/capB/checkpoints/step-6", "--out", "~/runs/x"],
        "note": "see https://example.org/a/b and C:\\Users\\ann\\data",
    }  # fmt: skip
    (checkpoint / "model.json").write_text(json.dumps(sidecar))
    target = tmp_path / "pkg" / "vlm_x" / "weights" / "gen"
    old = os.umask(0o077)
    try:
        code, _, err = run(capsys, "ship", str(checkpoint), "--to", str(target))
    finally:
        os.umask(old)
    assert code == 0, err
    shipped = (target / "model.json").read_text()
    assert "/home/ann" not in shipped and "/tmp/" not in shipped and "~/" not in shipped
    assert "C:\\\\Users" not in shipped
    data = json.loads(shipped)
    assert data["data"]["path"] == "train" and data["params"]["init_weights"] == "step-6"
    assert data["command"][3] == "train" and data["command"][5] == "init_weights=step-6"
    assert data["params"]["source"] == "hf-hub:o/r" and "https://example.org/a/b" in data["note"]
    assert (
        data["card"] == sidecar["card"] and data["shipped_from"] == "run/checkpoints/step-00000002"
    )
    for path in (target / "model.json", target / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for folder in (target, target.parent, target.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    assert not list(target.glob(".*.tmp"))  # written atomically, nothing left behind
