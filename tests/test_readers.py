"""register_readers: plugins decode the formats the core sniffs but does not decode.

The reader here is a real one for a tiny test format that sniffs as DICOM (a 128-byte preamble
and ``DICM``, then a JSON header line and uint8 pixels), so these tests need no pydicom; the
medical plugin's own tests cover real DICOM.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from vlm_core import hookimpl
from vlm_core.config import settings
from vlm_core.errors import InputError, PluginError
from vlm_core.fileio import sha256_file
from vlm_core.io import load_input, probe_input
from vlm_core.io.core_readers import CORE_PLUGIN
from vlm_core.io.load import Probe, collect_inputs
from vlm_core.io.readers import InputReader, ReaderError
from vlm_core.kinds import Kind
from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.tasks import Sample, TaskSpec
from vlm_core.types import Metrics, Volume

PREAMBLE = b"\x00" * 128 + b"DICM"


def write_slice(path: Path, series: str, z: float, pixels: np.ndarray) -> Path:
    header = json.dumps({"series": series, "z": z, "rows": pixels.shape[0]}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PREAMBLE + header + b"\n" + pixels.astype(np.uint8).tobytes())
    return path


def read_slice(path: Path) -> tuple[dict, bytes]:
    head, _, body = path.read_bytes()[len(PREAMBLE) :].partition(b"\n")
    return json.loads(head), body


def probe(files: Sequence[Path]) -> tuple[int, ...]:
    header, body = read_slice(files[0])
    rows = header["rows"]
    shape = (len(body) // rows, rows, len(files))
    if math.prod(shape) > settings().max_volume_voxels:
        raise InputError(f"{files[0]}: too many voxels")
    return shape


def load(probe: Probe) -> Volume:
    planes, zs = [], []
    for f in probe.files:
        header, body = read_slice(f)
        planes.append(np.frombuffer(body, np.uint8).reshape(header["rows"], -1).T)
        zs.append(header["z"])
    step = (zs[-1] - zs[0]) / (len(zs) - 1) if len(zs) > 1 else 1.0
    affine = np.diag([1.0, 1.0, step, 1.0])
    return Volume(np.stack(planes, axis=-1), affine, name=probe.path.name, source=probe.path)


def group(files: Sequence[Path]) -> list[list[Path]]:
    series: dict[str, list[Path]] = {}
    for f in files:
        header, _ = read_slice(f)
        if header["series"] == "broken":
            raise InputError(f"{f.parent}: series 'broken' is inconsistent")
        if header["series"] != "skip":
            series.setdefault(header["series"], []).append(f)
    return [sorted(g, key=lambda f: read_slice(f)[0]["z"]) for g in series.values()]


READER = InputReader(format="dicom", probe=probe, load=load, group=group, description="test")


def plugin_readers(registry) -> dict[str, InputReader]:
    """The readers plugins registered (the registry always holds the core's own too)."""
    return {f: r for f, r in registry.readers.items() if r.plugin != CORE_PLUGIN}


def measure(inputs, params, ctx):
    return [{"shape": Metrics({"slices": float(v.array.shape[2])})} for v in inputs]


class ReaderPlugin:
    """A plugin with a volume task and a reader, like the medical plugin."""

    def __init__(
        self, reader: InputReader = READER, tasks: bool = True, samples: tuple[Sample, ...] = ()
    ) -> None:
        self.reader = reader
        self.tasks = tasks
        self.samples = samples

    @hookimpl
    def register_tasks(self, register):
        if not self.tasks:
            return
        register(
            TaskSpec(
                id="scan.measure",
                title="Measure",
                description="Slices per volume.",
                domain="medical",
                run=measure,
                inputs=(Kind.VOLUME,),
                outputs=(Kind.METRICS,),
                samples=self.samples,
            )
        )

    @hookimpl
    def register_readers(self, register):
        register(self.reader)


def series(folder: Path, name: str, zs: Sequence[float], value: int = 0) -> list[Path]:
    return [
        write_slice(folder / f"{name}-{i}.dcm", name, z, np.full((3, 4), value + i))
        for i, z in enumerate(zs)
    ]


def test_hook_register_readers(vlm_registry, tmp_path):
    """register_readers: the host keys readers by format and records them on the plugin."""
    registry = vlm_registry({"scan": ReaderPlugin()})
    assert registry.plugins["scan"].status == "healthy"
    assert registry.plugins["scan"].readers == ["dicom"]
    assert registry.plugins["scan"].to_json()["readers"] == ["dicom"]
    reader = registry.readers["dicom"]
    assert reader.plugin == "scan" and reader.probe is probe
    path = write_slice(tmp_path / "one.dcm", "a", 0.0, np.arange(12).reshape(3, 4))
    found = probe_input(path, [Kind.VOLUME], readers=registry.readers)
    assert (found.format, found.shape, found.members) == ("dicom", (4, 3, 1), ())
    assert found.files == (path,)
    volume = load_input(found, registry.readers)
    assert isinstance(volume, Volume) and volume.array[:, :, 0].T.tolist() == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]


def test_without_a_reader_dicom_is_refused_naming_the_readable_formats(tmp_path):
    """No reader for a sniffed format: refused at the header check, in words about the file
    (what its content is, which formats are readable), not about plugins."""
    path = write_slice(tmp_path / "one.dcm", "a", 0.0, np.zeros((3, 4)))
    expected = f"{path}: content is a DICOM file, not one of the readable formats (nifti, nifti-gz)"
    with pytest.raises(InputError) as info:
        probe_input(path, [Kind.VOLUME], readers={})
    assert str(info.value) == expected
    probe = Probe(path=path, format="dicom", kind=Kind.VOLUME, shape=(4, 3, 1), size_bytes=1)
    with pytest.raises(InputError) as info:
        load_input(probe)  # probed with a reader, loaded without one
    assert str(info.value) == expected
    with pytest.raises(InputError, match=r"none usable; first: .*content is a DICOM file, not"):
        collect_inputs([str(tmp_path)], [Kind.VOLUME])
    [found] = collect_inputs([str(tmp_path)], [Kind.VOLUME], readers={"dicom": READER})
    assert found.path == path and found.shape == (4, 3, 1)


def test_string_functions_are_imported_on_first_use(vlm_registry, tmp_path):
    lazy = InputReader(
        format="dicom",
        probe="tests_reader_lazy:probe",
        load="tests_reader_lazy:load",
    )
    registry = vlm_registry({"scan": ReaderPlugin(lazy)})  # registering imports nothing
    assert registry.plugins["scan"].status == "healthy"
    path = write_slice(tmp_path / "one.dcm", "a", 0.0, np.zeros((3, 4)))
    with pytest.raises(ReaderError, match=r"plugin 'scan': dicom reader failed in probe: "):
        probe_input(path, readers=registry.readers)  # the module does not exist


@pytest.mark.parametrize(
    "reader,problem",
    [
        (InputReader(format="png", probe=probe, load=load), "format 'png' is decoded by the core"),
        (
            InputReader(format="gif", probe=probe, load=load),
            "'gif' is not one of dicom, kitti-bin, las, laz, mp4, pcd",
        ),
        (InputReader(format="dicom", probe="no colon", load=load), "must be 'module:function'"),
        (InputReader(format="dicom", probe=probe, load=3), "load is neither callable"),
        ("dicom", "registered str, not an InputReader"),
    ],
)
def test_invalid_readers_fail_the_plugin_at_validation(vlm_registry, reader, problem):
    registry = vlm_registry({"scan": ReaderPlugin(reader), "other": Other()})
    record = registry.plugins["scan"]
    assert (record.status, record.stage) == ("failed", "validate")
    assert problem in record.error
    assert "scan.measure" not in registry.tasks and not record.tasks and not record.readers
    assert registry.plugins["other"].status == "healthy" and "other.ok" in registry.tasks


class Other:
    @hookimpl
    def register_tasks(self, register):
        register(
            TaskSpec(
                id="other.ok",
                title="Ok",
                description="Ok.",
                domain="d",
                run=measure,
                inputs=(Kind.VOLUME,),
                outputs=(Kind.METRICS,),
            )
        )


def test_a_second_reader_for_a_format_fails_its_plugin(vlm_registry):
    registry = vlm_registry({"scan": ReaderPlugin(), "again": ReaderPlugin(tasks=False)})
    assert registry.plugins["scan"].status == "healthy"
    record = registry.plugins["again"]
    assert record.status == "failed" and record.stage == "validate"
    assert "format 'dicom' already has a reader from plugin 'scan'" in record.error
    assert registry.readers["dicom"].plugin == "scan"

    class Twice(ReaderPlugin):
        @hookimpl
        def register_readers(self, register):
            register(READER)
            register(READER)

    registry = vlm_registry({"twice": Twice()})
    assert "format 'dicom' is registered twice" in registry.plugins["twice"].error
    assert plugin_readers(registry) == {}


@pytest.mark.parametrize("exc", [RuntimeError("reader hook broke"), SystemExit(3)])
def test_a_raising_reader_hook_fails_only_its_plugin(vlm_registry, exc, monkeypatch):
    class Raises(ReaderPlugin):
        @hookimpl
        def register_readers(self, register):
            raise exc

    registry = vlm_registry({"bad": Raises(), "other": Other()})
    record = registry.plugins["bad"]
    assert (record.status, record.stage) == ("failed", "register")
    assert record.error in ("RuntimeError: reader hook broke", "SystemExit(3)")
    assert plugin_readers(registry) == {} and "bad.measure" not in registry.tasks
    assert registry.plugins["other"].status == "healthy"
    monkeypatch.setenv("VLM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'bad': register: "):
        vlm_registry({"bad": Raises()})


def test_a_series_folder_is_one_input_whose_path_is_the_folder(vlm_registry, tmp_path):
    registry = vlm_registry({"scan": ReaderPlugin()})
    root = tmp_path / "study"
    first = series(root / "s1", "s1", [2.0, 0.0, 1.0])  # written out of slice order
    second = series(root / "s2", "s2", [5.0, 7.0])
    lone = series(root / "s3", "s3", [1.0])
    write_slice(root / "s1" / "DICOMDIR", "skip", 0.0, np.zeros((1, 1)))
    PILImage.fromarray(np.zeros((3, 3), np.uint8)).save(root / "photo.png")
    (root / "notes.zip").write_bytes(b"PK\x03\x04junk")
    probes = collect_inputs([str(root)], [Kind.VOLUME], readers=registry.readers)
    assert [p.path for p in probes] == [root / "s1", root / "s2", lone[0]]
    assert probes[0].members == (first[1], first[2], first[0])  # by z
    assert probes[0].shape == (4, 3, 3) and probes[1].members == tuple(second)
    assert probes[0].size_bytes == sum(f.stat().st_size for f in first)
    assert probes[2].members == () and probes[2].shape == (4, 3, 1)
    volume = load_input(probes[0], registry.readers)
    assert volume.name == "s1" and volume.array.shape == (4, 3, 3)
    assert volume.array[0, 0, :].tolist() == [1, 2, 0]  # the values written at z = 0, 1, 2
    # the series folder itself as the argument, and a glob, give the same one input
    [direct] = collect_inputs([str(root / "s1")], [Kind.VOLUME], readers=registry.readers)
    assert direct == probes[0]
    globbed = collect_inputs([str(root / "s2" / "*.dcm")], [Kind.VOLUME], readers=registry.readers)
    assert globbed == [probes[1]]
    # a file named on its own is never grouped
    [single] = collect_inputs([str(first[0])], [Kind.VOLUME], readers=registry.readers)
    assert single.path == first[0] and single.members == ()


def test_an_inconsistent_series_rejects_the_folder_in_one_line(vlm_registry, tmp_path):
    registry = vlm_registry({"scan": ReaderPlugin()})
    series(tmp_path / "ok", "ok", [0.0, 1.0])
    series(tmp_path / "bad", "broken", [0.0, 1.0])
    with pytest.raises(InputError) as info:
        collect_inputs([str(tmp_path)], [Kind.VOLUME], readers=registry.readers)
    assert str(info.value) == f"{tmp_path / 'bad'}: series 'broken' is inconsistent"


def test_groups_are_checked_and_caps_apply_to_the_whole_group(vlm_registry, tmp_path, monkeypatch):
    def foreign(files):
        return [[*files, tmp_path / "elsewhere.dcm"]]

    bad = InputReader(format="dicom", probe=probe, load=load, group=foreign)
    registry = vlm_registry({"scan": ReaderPlugin(bad)})
    files = series(tmp_path / "s", "s", [0.0, 1.0, 2.0])
    with pytest.raises(ReaderError, match="returned a file it was not given"):
        collect_inputs([str(tmp_path / "s")], [Kind.VOLUME], readers=registry.readers)

    registry = vlm_registry({"scan": ReaderPlugin()})
    monkeypatch.setenv("VLM_MAX_INPUT_BYTES", str(files[0].stat().st_size * 2))
    with pytest.raises(InputError, match=r"3 dicom files of one input total .*VLM_MAX_INPUT_BYTES"):
        collect_inputs([str(tmp_path / "s")], [Kind.VOLUME], readers=registry.readers)
    monkeypatch.delenv("VLM_MAX_INPUT_BYTES")

    def careless(files):  # a reader that forgets the voxel cap: the core checks it again
        return (1000, 1000, len(files))

    registry = vlm_registry({"scan": ReaderPlugin(InputReader("dicom", careless, load))})
    monkeypatch.setenv("VLM_MAX_VOLUME_VOXELS", "1000")
    with pytest.raises(InputError, match=r"1,000,000 voxels .*VLM_MAX_VOLUME_VOXELS"):
        probe_input(files[0], readers=registry.readers, s=settings())


def test_a_crashing_reader_is_reported_against_its_plugin_and_quarantined(
    vlm_registry, vlm_home, tmp_path
):
    def crash(probe):
        raise ZeroDivisionError("reader bug")

    # the plugin's own sample crashes in the reader too: it is broken, and quarantined
    sample = Sample("s", tuple(series(tmp_path / "s", "s", [0.0, 1.0])))
    reader = InputReader("dicom", probe, crash, group)
    registry = vlm_registry({"scan": ReaderPlugin(reader, samples=(sample,))})
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(ReaderError) as info:
        run_task(RunRequest("scan.measure", [str(tmp_path / "s")]), registry=registry, store=store)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "plugin 'scan': dicom reader failed in load: ZeroDivisionError: reader bug"
    )
    assert message.endswith("plugin disabled until `vlm plugins enable scan`")
    assert registry.plugins["scan"].status == "failed" and plugin_readers(registry) == {}
    assert store.list(limit=1)[0].status == "failed"

    def wrong(probe):
        return "not a volume"

    # the quarantine above is persisted: "scan" stays failed until `vlm plugins enable scan`
    assert vlm_registry({"scan": ReaderPlugin()}).plugins["scan"].status == "failed"
    lenient = ReaderPlugin(InputReader("dicom", probe, wrong), tasks=False)
    registry = vlm_registry({"wrongload": lenient})
    found = probe_input(tmp_path / "s" / "s-0.dcm", readers=registry.readers)
    with pytest.raises(ReaderError, match="load: returned str, not a Volume"):
        load_input(found, registry.readers)


def test_a_reader_crash_on_one_input_fails_that_input_only(vlm_registry, vlm_home, tmp_path):
    def picky(probe):  # a reader bug that only one series meets
        if probe.path.name == "odd":
            raise IndexError("slice index out of range")
        return load(probe)

    sample = Sample("s", tuple(series(tmp_path / "sample", "s", [0.0, 1.0])))
    reader = InputReader("dicom", probe, picky, group)
    registry = vlm_registry({"scan": ReaderPlugin(reader, samples=(sample,))})
    series(tmp_path / "in" / "odd", "odd", [0.0, 1.0])
    series(tmp_path / "in" / "fine", "fine", [0.0, 1.0, 2.0])
    store = RunStore(tmp_path / "runs.sqlite")
    outcome = run_task(
        RunRequest("scan.measure", [str(tmp_path / "in")], batch_size=2),
        registry=registry,
        store=store,
    )
    assert [s["input"] for s in outcome.summaries] == [str(tmp_path / "in" / "fine")]
    [failure] = outcome.failures
    assert failure.input == str(tmp_path / "in" / "odd")
    assert failure.error == (
        "plugin 'scan': dicom reader failed in load: IndexError: slice index out of range"
    )
    assert store.list(limit=1)[0].status == "partial"
    assert registry.plugins["scan"].status == "healthy"  # its own sample reads: not broken
    assert not (vlm_home / "config.json").exists()


def test_runs_hash_the_member_files_of_a_series(vlm_registry, tmp_path):
    registry = vlm_registry({"scan": ReaderPlugin()})
    files = series(tmp_path / "in" / "s1", "s1", [0.0, 2.0, 4.0])
    png = tmp_path / "in" / "photo.png"
    PILImage.fromarray(np.zeros((3, 3), np.uint8)).save(png)
    single = write_slice(tmp_path / "single.dcm", "x", 0.0, np.zeros((3, 4)))
    store = RunStore(tmp_path / "runs.sqlite")
    request = RunRequest(
        "scan.measure", [str(tmp_path / "in"), str(single)], out_dir=tmp_path / "o"
    )
    outcome = run_task(request, registry=registry, store=store)
    records = [r.provenance.inputs[0] for r in outcome.results]
    assert [r.path for r in records] == [str(tmp_path / "in" / "s1"), str(single)]
    digests = "\n".join(sha256_file(f) for f in files)
    assert records[0].sha256 == hashlib.sha256(digests.encode()).hexdigest()
    assert records[1].sha256 == sha256_file(single)  # one file: its own sha256, as before
    assert (records[0].format, records[0].kind) == ("dicom", "volume")
    assert [s["outputs"]["shape"]["values"]["slices"] for s in outcome.summaries] == [3.0, 1.0]
    assert store.get(outcome.run_id).inputs == [str(tmp_path / "in" / "s1"), str(single)]
    written = json.loads((tmp_path / "o" / "s1" / "result.json").read_text())
    assert written["provenance"]["inputs"][0]["sha256"] == records[0].sha256
    # changing one slice changes the series' hash
    write_slice(files[1], "s1", 2.0, np.full((3, 4), 9))
    [again] = collect_inputs([str(tmp_path / "in")], [Kind.VOLUME], readers=registry.readers)
    assert again.sha256() != records[0].sha256


def test_a_failed_plugin_loses_its_readers(vlm_registry):
    registry = vlm_registry({"scan": ReaderPlugin()})
    registry.mark_failed("scan", "run", "crashed")
    assert plugin_readers(registry) == {} and registry.plugins["scan"].status == "failed"


def test_the_core_reads_its_formats_through_register_readers(vlm_registry):
    """The core's readers are a built-in plugin: registered through the same hook, first,
    not an entry point and not listed among the installed plugins."""
    from vlm_core.io import core_readers
    from vlm_core.io.readers import CORE_DECODED

    registry = vlm_registry({"scan": ReaderPlugin()})
    assert registry.manager.get_plugin("vlm_core.io.core_readers") is core_readers
    owners = {fmt: reader.plugin for fmt, reader in registry.readers.items()}
    assert owners == {**dict.fromkeys(CORE_DECODED, CORE_PLUGIN), "dicom": "scan"}
    assert set(registry.plugins) == {"scan"}
    for reader in (registry.readers[f] for f in CORE_DECODED):
        assert isinstance(reader.probe, str) and isinstance(reader.load, str)  # lazy
        assert reader.resolve_probe() and reader.resolve_load() and reader.description


def test_the_core_readers_come_first(tmp_path):
    """A mapping handed to the io functions cannot replace a core reader, as a plugin cannot
    register one (test_invalid_readers_fail_the_plugin_at_validation)."""
    path = tmp_path / "a.png"
    PILImage.fromarray(np.zeros((2, 3), np.uint8)).save(path)
    called: list[str] = []
    impostor = InputReader(format="png", probe=lambda files: called.append("probe") or (9,),
                           load=lambda p: called.append("load"))  # fmt: skip
    found = probe_input(path, [Kind.IMAGE], readers={"png": impostor})
    assert found.shape == (2, 3, 1) and load_input(found, {"png": impostor}).pixels.shape == (2, 3)
    assert called == []


def test_a_crash_in_a_core_reader_is_reported_against_the_core(tmp_path, monkeypatch):
    import vlm_core.io.images

    path = tmp_path / "a.png"
    PILImage.fromarray(np.zeros((2, 3), np.uint8)).save(path)

    def broken(files):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(vlm_core.io.images, "probe_image", broken)
    with pytest.raises(ReaderError) as info:
        probe_input(path)
    assert (
        str(info.value) == "plugin 'vlm_core': png reader failed in probe: ZeroDivisionError: bug"
    )


def test_importing_the_core_readers_imports_no_decoder():
    import subprocess
    import sys

    code = (
        "import sys, vlm_core.io.core_readers, vlm_core.io.readers\n"
        "print(sorted(m for m in ('PIL', 'nibabel', 'numpy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
