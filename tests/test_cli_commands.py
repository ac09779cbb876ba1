"""The rest of the command tree: tasks, info, run, runs, doctor, --help, --version."""

from __future__ import annotations

import json
import shutil
from functools import partial

from conftest import FIXTURE_PLUGIN_NAMES


def test_tasks_and_info(vlm):
    tasks = json.loads(vlm("tasks", "--json", VLM_PLUGINS=",".join(FIXTURE_PLUGIN_NAMES)).stdout)
    assert [t["id"] for t in tasks] == ["exits.boom", "good.invert", "good.shapes"]
    info = json.loads(vlm("info", "good.invert", "--json").stdout)
    params = {p["name"]: p for p in info["parameters"]}
    assert params["gain"]["type"] == "float"
    assert params["gain"]["bounds"] == {"ge": 0.0, "le": 4.0}
    assert params["gain"]["default"] == 1.0
    assert params["mode"]["choices"] == ["rgb", "gray"]
    assert info["samples"][0]["name"] == "square"
    text = vlm("info", "good.invert")
    assert text.returncode == 0 and "ge 0.0, le 4.0" in text.stdout


def test_run_folder_writes_outputs_provenance_and_run_store(vlm, tmp_path):
    sample = vlm.paths[0] / "vlm_fixture_good" / "square.png"
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(sample, folder / "a.png")
    shutil.copy(sample, folder / "nested" / "b.png")
    (folder / "notes.txt").write_text("not an image")  # skipped: wrong kind for this task
    out = tmp_path / "out"
    proc = vlm(
        "run",
        "good.invert",
        str(folder),
        "-p",
        "mode=gray",
        "--out",
        str(out),
        "--json",
        "--batch-size",
        "2",
        "--seed",
        "7",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["results"]) == 2
    result = json.loads((out / "a" / "result.json").read_text())
    prov = result["provenance"]
    assert prov["task"] == "good.invert" and prov["plugin"] == "good"
    assert prov["plugin_version"] == "1.2.3" and prov["core_version"]
    assert prov["params"] == {"gain": 1.0, "steps": 1, "mode": "gray"}
    assert prov["seed"] == 7 and prov["device"] == "cpu" and prov["dtype"] == "float32"
    assert len(prov["inputs"][0]["sha256"]) == 64 and prov["inputs"][0]["format"] == "png"
    assert set(prov["timings_ms"]) == {"load", "run"}
    assert (out / "a" / "inverted.png").is_file() and (out / "b" / "stats.json").is_file()
    assert json.loads((out / "run.json").read_text())["run_id"] == data["run_id"]
    show = json.loads(vlm("runs", "show", data["run_id"][:8], "--json").stdout)
    assert show["status"] == "ok" and show["task"] == "good.invert"
    assert len(show["inputs"]) == 2 and show["params"]["mode"] == "gray"
    assert show["provenance"]["seed"] == 7
    assert any(f.endswith("inverted.png") for f in show["outputs"])
    listed = json.loads(vlm("runs", "list", "--json").stdout)
    assert listed[0]["id"] == data["run_id"]


def test_run_twice_into_the_same_folder_keeps_the_first_unless_overwrite(vlm, tmp_path):
    sample = vlm.paths[0] / "vlm_fixture_good" / "square.png"
    out = tmp_path / "out"

    def mean(folder):
        return json.loads((folder / "square" / "stats.json").read_text())["values"]["mean"]

    for gain, extra in (("1", ()), ("0", ()), ("0", ("--overwrite",))):
        args = ("run", "good.invert", str(sample), "-p", f"gain={gain}", "--out", str(out))
        assert vlm(*args, *extra).returncode == 0
    assert mean(out) == 0.0  # replaced by the third run
    assert mean(tmp_path / "out-2") == 0.0  # the second wrote beside the first


def test_unknown_device_is_a_usage_error(vlm, tmp_path):
    sample = vlm.paths[0] / "vlm_fixture_good" / "square.png"
    proc = vlm("run", "good.invert", str(sample), "--device", "tpu")
    assert proc.returncode == 2 and "device" in proc.stderr


def test_doctor_reports_versions_devices_plugins(vlm):
    data = json.loads(vlm("doctor", "--json").stdout)
    assert data["core_version"] and data["python"]
    assert data["devices"]["default"] in ("cpu", "cuda", "mps")
    names = {p["name"]: p["status"] for p in data["plugins"]}
    assert names["good"] == "healthy" and names["broken_hook"] == "failed"
    assert "offline" in data["offline"]
    human = vlm("doctor")
    assert human.returncode == 0 and "broken_hook" in human.stdout


def test_help_and_version(vlm_bare):
    help_ = vlm_bare("--help")
    assert help_.returncode == 0
    for command in ("plugins", "tasks", "info", "run", "runs", "doctor", "dashboard"):
        assert command in help_.stdout
    assert vlm_bare("--version").stdout.startswith("vlm, version ")
    assert vlm_bare("nonsense").returncode == 2


def test_core_works_with_zero_plugins(vlm_bare, monkeypatch):
    monkeypatch.setattr(vlm_bare, "env", partial(vlm_bare.env, VLM_PLUGINS=""))  # no built-ins
    assert json.loads(vlm_bare("plugins", "list", "--json").stdout) == []
    assert json.loads(vlm_bare("tasks", "--json").stdout) == []
    proc = vlm_bare("run", "x.y")
    assert proc.returncode == 2 and "no tasks are installed" in proc.stderr
    assert vlm_bare("doctor").returncode == 0


def test_doctor_reports_declared_weights_present_or_missing(vlm_registry, tmp_path):
    from safetensors.numpy import save_file

    from vlm_core import hookimpl
    from vlm_core.doctor import weights_status
    from vlm_core.kinds import Kind
    from vlm_core.tasks import TaskSpec, WeightsRef

    shipped = tmp_path / "head.safetensors"
    save_file({"w": __import__("numpy").zeros(3, "float32")}, str(shipped))

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(TaskSpec(
                id="w.t", title="T", description="D", domain="d", run=lambda i, p, c: [{}],
                outputs=(Kind.METRICS,),
                weights=(WeightsRef("head", str(shipped)),
                         WeightsRef("gone", str(tmp_path / "missing.safetensors"))),
            ))  # fmt: skip

    rows = {r["name"]: r for r in weights_status(vlm_registry({"w": Plugin()}))}
    assert rows["head"]["status"] == "present" and rows["head"]["path"] == str(shipped)
    assert rows["gone"]["status"] == "missing" and rows["gone"]["path"] is None


def test_runs_stream_results_to_disk_without_keeping_them(vlm_registry, tmp_path):
    """keep_results=False (the CLI's mode): every result exported, only summaries kept."""
    import shutil

    from conftest import FIXTURE_PLUGINS

    from vlm_core import hookimpl
    from vlm_core.kinds import Kind
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runstore import RunStore
    from vlm_core.tasks import TaskSpec
    from vlm_core.types import Metrics

    def run(inputs, params, ctx):
        return [{"size": Metrics({"pixels": float(x.pixels.size)})} for x in inputs]

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(TaskSpec(id="s.size", title="Size", description="Pixel count.", domain="d",
                              run=run, outputs=(Kind.METRICS,)))  # fmt: skip

    sample = FIXTURE_PLUGINS / "vlm-fixture-good" / "vlm_fixture_good" / "square.png"
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        shutil.copy(sample, folder / f"img{i}.png")
    registry = vlm_registry({"s": Plugin()})
    store = RunStore(tmp_path / "runs.sqlite")
    for keep in (False, True):
        out = tmp_path / f"out-{keep}"
        request = RunRequest("s.size", [str(folder)], out_dir=out, batch_size=2)
        outcome = run_task(request, registry=registry, store=store, keep_results=keep)
        assert len(outcome.results) == (5 if keep else 0)
        assert [s["outputs"]["size"]["values"]["pixels"] for s in outcome.summaries] == [4608.0] * 5
        assert len(list(out.glob("*/result.json"))) == 5
        assert json.loads((out / "run.json").read_text())["task"] == "s.size"
