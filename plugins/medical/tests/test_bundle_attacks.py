"""medical.bundle against hostile bundles: trust widens what may be built, never what may act.

Each attack is a real MONAI bundle (configs/metadata.json, configs/inference.json,
models/model.safetensors) whose config tries to delete, write, unpickle, import or run code.
Each is run twice: from an untrusted folder with ``trust=true``, and without it from one of
the trusted folders (VLM_TRUSTED_BUNDLES, trusted-bundles.txt, the MONAI bundle cache). Both
must end in the same one-line refusal, with the victim files untouched, no file written, no
marker created, and nothing new in site-packages, the home folder or the working folder.
Each payload is also shown to work under plain MONAI (``test_attack_is_live_under_plain_monai``),
so a refusal proves something.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from test_bundle import (
    NETWORK,
    _BundlePlugin,
    _Touch,
    base_config,
    make_bundle,
    make_volume,
    run_bundle,
)
from vlm_medical.bundle_safety import BundleRefused

TRUSTED_KINDS = ("VLM_TRUSTED_BUNDLES", "trusted-bundles.txt", "MONAI cache")
AS_DISCRETE = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
#: What plain MONAI is given to run a payload: it builds ``id`` or calls ``run(parser)``.
Live = Callable[[ConfigParser], Any]


@dataclass(frozen=True)
class Attack:
    """A config change that, under plain MONAI, does ``effect`` (see :class:`Scene`)."""

    route: str  # which route of the issue it is
    changes: dict[str, Any]
    key: str  # the config key the refusal must name ("" for refusals of the whole bundle)
    names: tuple[str, ...]  # one of these must be in the refusal
    effect: str  # marker | victim | victim_dir | out | site
    live: str | Live | None = None  # config id plain MONAI builds, or a function of the parser
    files: dict[str, str] = field(default_factory=dict)


def in_inferer(expr: str) -> dict[str, Any]:
    """``expr`` evaluated while building the inferer (a key the task builds)."""
    overlap = f"$[{expr}, 0.25][-1]"
    return {
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16] * 3, "overlap": overlap}
    }


def as_step(step: Any) -> dict[str, Any]:
    """``step`` as the last step of the postprocessing Compose."""
    return {"postprocessing": {"_target_": "Compose", "transforms": [AS_DISCRETE, step]}}


def postprocess(parser: ConfigParser) -> Any:
    """Build the postprocessing and run it on a prediction, as a bundle run would."""
    pred = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "case.nii.gz"})
    return parser.get_parsed_content("postprocessing")({"pred": pred})


def load_evil_npy(parser: ConfigParser) -> Any:
    """Build the preprocessing and load the bundle's evil.npy with it."""
    path = parser["bundle_root"] + "/evil.npy"
    return parser.get_parsed_content("preprocessing")({"image": path})


TOUCH = "touch {marker}"
SAVE = {"output_dir": "{out}", "separate_folder": False, "output_postfix": "pwned"}
INF = "inferer::overlap"
SCRIPTS = {
    "scripts/__init__.py": "import pathlib\npathlib.Path('{marker}').touch()\n",
    "scripts/net.py": "from monai.networks.nets import UNet as Net\n",
}

ATTACKS: dict[str, Attack] = {
    # 1. deleting files, through any callable
    "delete-filebaton": Attack(
        "1 delete",
        {"imports": ["$import torch.utils.file_baton"],
         **in_inferer("torch.utils.file_baton.FileBaton('{victim}').release()")},
        INF, ("file_baton",), "victim", "inferer",
    ),
    "delete-os-remove-via-dunder-import": Attack(
        "1 delete", in_inferer("__import__('os').remove('{victim}')"),
        INF, ("__import__",), "victim", "inferer",
    ),
    "delete-shutil-rmtree": Attack(
        "1 delete",
        {"imports": ["$import shutil"], **in_inferer("shutil.rmtree('{victim_dir}')")},
        "imports::0", ("shutil",), "victim_dir", "inferer",
    ),
    "delete-pathlib-unlink": Attack(
        "1 delete",
        {"imports": ["$import pathlib"], **in_inferer("pathlib.Path('{victim}').unlink()")},
        "imports::0", ("pathlib",), "victim", "inferer",
    ),
    "delete-target-os-remove": Attack(
        "1 delete", as_step({"_target_": "os.remove", "path": "{victim}"}),
        "postprocessing::transforms::1", ("os.remove",), "victim", "postprocessing",
    ),
    # 2. writing files: savers, writers nested in Lambdad / Compose / a $lambda, handlers
    "write-csvsaver-component": Attack(
        "2 write",
        {
            "saver": {"_target_": "monai.data.CSVSaver", "output_dir": "{out}"},
            **in_inferer("@saver"),
        },
        "saver", ("CSVSaver",), "out",
        lambda p: p.get_parsed_content("saver").finalize(),
    ),
    "write-csvsaver-expression": Attack(
        "2 write", in_inferer("monai.data.CSVSaver(output_dir='{out}').finalize()"),
        INF, ("CSVSaver",), "out", "inferer",
    ),
    "write-saveimaged-as-the-pipeline": Attack(
        "2 write", {"postprocessing": {"_target_": "SaveImaged", "keys": "pred", **SAVE}},
        "postprocessing", ("SaveImaged",), "out", postprocess,
    ),
    "write-saveimage-in-lambdad": Attack(
        "2 write",
        as_step({"_target_": "Lambdad", "keys": "pred", "func": {"_target_": "SaveImage", **SAVE}}),
        "postprocessing::transforms::1::func", ("SaveImage",), "out", postprocess,
    ),
    "write-saveimaged-in-nested-compose": Attack(
        "2 write",
        as_step({"_target_": "Compose", "transforms": [{"_target_": "SaveImaged", "keys": "pred",
                                                          **SAVE}]}),
        "postprocessing::transforms::1::transforms::0", ("SaveImaged",), "out", postprocess,
    ),
    "write-saveimage-in-a-lambda": Attack(
        "2 write",
        as_step({
            "_target_": "Lambdad", "keys": "pred",
            "func": "$lambda x: [monai.transforms.SaveImage(output_dir='{out}', "
            "separate_folder=False)(x), x][-1]",
        }),
        "postprocessing::transforms::1::func", ("SaveImage",), "out", postprocess,
    ),
    "write-saveimaged-by-reference": Attack(
        "2 write",
        {"writer": {"_target_": "SaveImaged", "keys": "pred", **SAVE}, **as_step("@writer")},
        "writer", ("SaveImaged",), "out", postprocess,
    ),
    "write-reference-to-a-dropped-writer": Attack(
        "2 write", in_inferer("@postprocessing::transforms::1"),
        INF, ("result writer", "SaveImaged"), "out", None,
    ),
    "write-handler-checkpoint-saver": Attack(
        "2 write",
        {
            "saver": {"_target_": "monai.handlers.CheckpointSaver", "save_dir": "{out}",
                      "save_dict": {"net": "@network_def"}, "save_final": True},
            **in_inferer("@saver"),
        },
        "saver", ("CheckpointSaver",), "out", None,  # needs an ignite engine to act
    ),
    "write-torch-save": Attack(
        "2 write", in_inferer("torch.save(@network_def.state_dict(), '{out}/w.pt')"),
        INF, ("torch.save", "state_dict"), "out", "inferer",
    ),
    # 3. readers that unpickle
    "unpickle-numpyreader-read": Attack(
        "3 unpickle",
        in_inferer("monai.data.NumpyReader(allow_pickle=True).read(@bundle_root + '/evil.npy')"),
        INF, ("NumpyReader",), "marker", "inferer",
    ),
    "unpickle-loadimaged-numpyreader": Attack(
        "3 unpickle",
        {"preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "NumpyReader",
             "allow_pickle": True}]}},
        "preprocessing::transforms::0", ("allow_pickle", "NumpyReader"), "marker",
        load_evil_npy,
    ),
    "unpickle-loadimage-default-readers": Attack(
        "3 unpickle",
        {"preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "allow_pickle": True}]}},
        "preprocessing::transforms::0", ("allow_pickle",), "marker", load_evil_npy,
    ),
    "unpickle-torch-load": Attack(
        "3 unpickle", in_inferer("torch.load(@bundle_root + '/evil.pt', weights_only=False)"),
        INF, ("torch.load",), "marker", "inferer",
    ),
    # 4. data-list and report writers
    "datalist-export-config-file": Attack(
        "4 data list",
        in_inferer("monai.bundle.ConfigParser.export_config_file({'test': []}, '{out}/d.json')"),
        INF, ("ConfigParser",), "out", "inferer",
    ),
    "datalist-write-metrics-reports": Attack(
        "4 data list",
        in_inferer("monai.handlers.utils.write_metrics_reports('{out}', None, {'dice': 1.0}, "
                   "None, None)"),
        INF, ("write_metrics_reports",), "out", "inferer",
    ),
    "datalist-create-file-basename": Attack(
        "4 data list",
        in_inferer("monai.data.utils.create_file_basename('seg', 'x.nii', '{out}/made')"),
        INF, ("create_file_basename",), "out", "inferer",
    ),
    # 5. imports, getattr chains and class-hierarchy escapes
    "escape-importlib": Attack(
        "5 escape",
        {"imports": ["$import importlib"],
         **in_inferer(f"importlib.import_module('os').system('{TOUCH}')")},
        "imports::0", ("importlib",), "marker", "inferer",
    ),
    "escape-getattr-chain": Attack(
        "5 escape", in_inferer(f"getattr(__import__('o' + 's'), 'sys' + 'tem')('{TOUCH}')"),
        INF, ("getattr", "__import__"), "marker", "inferer",
    ),
    "escape-subclasses": Attack(
        "5 escape",
        in_inferer("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "
                   f"'Popen'][0]('{TOUCH}'.split()).wait()"),
        INF, ("__class__",), "marker", "inferer",
    ),
    "escape-format-string": Attack(
        "5 escape", in_inferer("'{{0.__class__}}'.format(1)"),
        INF, ("dunder", "format"), "marker", None,
    ),
    "escape-optional-import": Attack(
        "5 escape", in_inferer(f"monai.utils.optional_import('os')[0].system('{TOUCH}')"),
        INF, ("optional_import",), "marker", "inferer",
    ),
    "escape-alias-of-an-allowed-module": Attack(
        "5 escape", in_inferer(f"torch.os.system('{TOUCH}')"),
        INF, ("torch.os.system",), "marker", "inferer",
    ),
    "escape-target-through-an-alias": Attack(
        "5 escape", as_step({"_target_": "torch.os.system", "command": TOUCH}),
        "postprocessing::transforms::1", ("torch.os.system",), "marker", "postprocessing",
    ),
    "escape-monai-run-cmd": Attack(
        "5 escape", as_step({"_target_": "monai.utils.run_cmd", "cmd_list": TOUCH.split()}),
        "postprocessing::transforms::1", ("run_cmd",), "marker", "postprocessing",
    ),
    "escape-lambda-argument-shadows-a-module": Attack(
        "5 escape", in_inferer(f"(lambda torch: torch.system('{TOUCH}'))(__import__('os'))"),
        INF, ("__import__", "system"), "marker", "inferer",
    ),
    # 6. '%' macros reaching other files
    "macro-absolute-path-outside": Attack(
        "6 macro", {"network_def": "%{outside}::net"},
        "network_def", ("outside the bundle folder",), "marker", "network_def",
    ),
    "macro-relative-path-outside": Attack(
        "6 macro", {"network_def": "%../outside.json::net"},
        "network_def", ("outside the bundle folder",), "marker", "network_def",
    ),
    "macro-included-file-holding-code": Attack(
        "6 macro", {"network_def": "%configs/extra.json::net"},
        "network_def", ("os.system",), "marker", "network_def",
        files={"configs/extra.json": json.dumps(
            {"net": {"_target_": "os.system", "command": TOUCH}})},
    ),
    # 7. '@' references to forbidden ids
    "reference-to-forbidden-expression": Attack(
        "7 reference", {"evil": f"$__import__('os').system('{TOUCH}')", **in_inferer("@evil")},
        "evil", ("__import__",), "marker", "inferer",
    ),
    "reference-to-forbidden-component": Attack(
        "7 reference",
        {"evil": {"_target_": "monai.utils.run_cmd", "cmd_list": TOUCH.split()},
         **as_step("@evil")},
        "evil", ("run_cmd",), "marker", "evil",
    ),
    # 8. .pth files dropped into site-packages (code on every later Python start)
    "pth-numpy-savetxt": Attack(
        "8 pth",
        in_inferer("numpy.savetxt('{site}/vlm-pwned.pth', "
                   "['import os; os.system(\"touch {marker}\")'], fmt='%s')"),
        INF, ("savetxt",), "site", "inferer",
    ),
    "pth-csvsaver-line": Attack(
        "8 pth",
        {
            "saver": {"_target_": "monai.data.CSVSaver", "output_dir": "{site}",
                      "filename": "vlm-pwned.pth"},
            # (MONAI's parser fails on an expression holding both '@' and the word 'import')
            **in_inferer("@saver.save(torch.zeros(1), {'filename_or_obj': "
                         "'imp' + 'ort os; os.system(\"touch {marker}\")'}), @saver.finalize()"),
        },
        INF, ("save", "CSVSaver"), "site", "inferer",
    ),
    # 9. Python code shipped in the bundle, without trust_code
    "code-scripts-network": Attack(
        "9 code", {"network_def": {**NETWORK, "_target_": "scripts.net.Net"}},
        "", ("ships Python code", "scripts/__init__.py"), "marker", "network_def",
        files=SCRIPTS,
    ),
    "code-import-scripts": Attack(
        "9 code", {"imports": ["$import scripts"], **in_inferer("scripts")},
        "", ("ships Python code",), "marker", "inferer", files=SCRIPTS,
    ),
    "code-native-library": Attack(
        "9 code", {}, "", ("ships Python code", "models/helper.so"), "marker", None,
        files={"models/helper.so": "\x7fELF not really"},
    ),
}  # fmt: skip

CASES = [
    pytest.param(name, placement, id=f"{name}-{placement.replace(' ', '-').replace('=', '-')}")
    for i, name in enumerate(sorted(ATTACKS))
    for placement in ("trust=true", TRUSTED_KINDS[i % len(TRUSTED_KINDS)])
]


class Scene:
    """The files an attack goes for, and the folders that must not change."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.marker = root / "pwned"
        self.victim = root / "victim.txt"
        self.victim_dir = root / "victim-dir"
        self.out = root / "written"
        self.site = root / "site-packages"  # a site folder the .pth attacks aim at
        self.home = root / "home"
        self.cwd = root / "cwd"
        self.outside = root / "outside.json"
        self.volume = root / "input.nii.gz"
        for folder in (self.victim_dir, self.out, self.site, self.home / ".config", self.cwd):
            folder.mkdir(parents=True)
        self.victim.write_text("keep me")
        (self.victim_dir / "data.txt").write_text("keep me too")
        (self.home / ".bashrc").write_text("# the user's shell settings\n")
        net = {"_target_": "os.system", "command": f"touch {self.marker}"}
        self.outside.write_text(json.dumps({"net": net}))
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
        monkeypatch.chdir(self.cwd)
        make_volume(self.volume)
        self.purelib = Path(sysconfig.get_paths()["purelib"])
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        def tree(folder: Path) -> dict[str, bytes]:
            return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                    if p.is_file()}  # fmt: skip

        return {
            "home": tree(self.home),
            "cwd": tree(self.cwd),
            "out": tree(self.out),
            "site": tree(self.site),
            "victim_dir": tree(self.victim_dir),
            "purelib": sorted(os.listdir(self.purelib)),
        }

    def names(self, bundle: Path) -> dict[str, str]:
        return {
            "marker": str(self.marker), "victim": str(self.victim),
            "victim_dir": str(self.victim_dir), "out": str(self.out), "site": str(self.site),
            "outside": str(self.outside), "bundle": str(bundle),
        }  # fmt: skip

    def happened(self, effect: str) -> bool:
        return {
            "marker": self.marker.exists(),
            "victim": not self.victim.exists(),
            "victim_dir": not self.victim_dir.exists(),
            "out": any(self.out.rglob("*")),
            "site": any(self.site.iterdir()),
        }[effect]

    def assert_untouched(self) -> None:
        assert not self.marker.exists(), "the payload ran"
        assert self.victim.read_text() == "keep me"
        assert not any(self.out.rglob("*")), "a file was written"
        assert self.snapshot() == self.before, "a watched folder changed"


def _format(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _format(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_format(v, names) for v in value]
    return value


def build_attack(scene: Scene, attack: Attack, folder: Path) -> tuple[Path, dict[str, Any]]:
    names = scene.names(folder)
    config = base_config(**_format(attack.changes, names))
    files = {k: _format(v, names) for k, v in attack.files.items()}
    bundle = make_bundle(folder, config, files=files)
    np.save(bundle / "evil.npy", np.array([_Touch(scene.marker)], dtype=object))
    torch.save({"w": _Touch(scene.marker)}, bundle / "evil.pt")
    return bundle, config


def place(scene: Scene, placement: str, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the bundle goes, and the setting that trusts that folder."""
    monkeypatch.delenv("VLM_TRUSTED_BUNDLES", raising=False)
    if placement == "trust=true":
        return scene.root / "downloads" / name
    if placement == "VLM_TRUSTED_BUNDLES":
        monkeypatch.setenv("VLM_TRUSTED_BUNDLES", str(scene.root / "lab"))
        return scene.root / "lab" / name
    if placement == "trusted-bundles.txt":
        listing = Path(os.environ["VLM_HOME"]) / "trusted-bundles.txt"
        listing.write_text(f"{scene.root / 'reviewed'}\n")
        return scene.root / "reviewed" / name
    return scene.root / "torch" / "hub" / "bundle" / name  # MONAI's bundle cache


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vlm_home: Path) -> Scene:
    return Scene(tmp_path / "scene", monkeypatch)


@pytest.mark.parametrize(("case", "placement"), CASES)
def test_attack_is_refused_and_nothing_happens(case, placement, scene, registry, monkeypatch):
    attack = ATTACKS[case]
    folder = place(scene, placement, case, monkeypatch)
    bundle, _ = build_attack(scene, attack, folder)
    with pytest.raises(BundleRefused) as refused:
        run_bundle(registry, bundle, scene.volume, trust=placement == "trust=true")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"bundle '{case}' refused: ")
    if attack.key:
        assert f"config key '{attack.key}'" in message, message
    assert any(name in message for name in attack.names), message
    scene.assert_untouched()
    assert registry.plugins["medical"].status == "healthy"


def test_refusal_is_the_same_wherever_the_bundle_is_trusted(scene, registry, monkeypatch):
    attack = ATTACKS["unpickle-loadimaged-numpyreader"]
    messages = set()
    for placement in ("trust=true", *TRUSTED_KINDS):
        folder = place(scene, placement, "same", monkeypatch)
        bundle, _ = build_attack(scene, attack, folder)
        with pytest.raises(BundleRefused) as refused:
            run_bundle(registry, bundle, scene.volume, trust=placement == "trust=true")
        messages.add(str(refused.value))
    assert len(messages) == 1, messages
    scene.assert_untouched()


@pytest.mark.parametrize("case", sorted(n for n, a in ATTACKS.items() if a.live))
def test_attack_is_live_under_plain_monai(case, scene):
    """Plain MONAI runs each payload: the refusals above are not of harmless configs."""
    attack = ATTACKS[case]
    bundle, config = build_attack(scene, attack, scene.root / "bundle")
    if attack.key == "" or attack.route.startswith("6"):  # MONAI's own loader reads the files
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        os.chdir(bundle)
    else:
        parser = ConfigParser(config=json.loads(json.dumps(config)))
    parser["bundle_root"] = str(bundle)
    forget_scripts()  # another test's bundle may have left its own 'scripts' imported
    sys.path.insert(0, str(bundle))
    try:
        with contextlib.suppress(Exception):  # after doing its work, a payload builds no network
            if isinstance(attack.live, str):
                parser.get_parsed_content(attack.live)
            elif attack.live is not None:
                attack.live(parser)
    finally:
        sys.path.remove(str(bundle))
        forget_scripts()
    assert scene.happened(attack.effect), f"{case} did nothing under plain MONAI"
    if attack.effect == "site":  # a .pth in a site folder runs at the next interpreter start
        subprocess.run(
            [sys.executable, "-c", f"import site; site.addsitedir({str(scene.site)!r})"],
            check=True,
            timeout=60,
        )
        if any(p.suffix == ".pth" and b"import" in p.read_bytes() for p in scene.site.iterdir()):
            assert scene.marker.exists()


def forget_scripts() -> None:
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]


@pytest.fixture
def registry(vlm_registry: Any) -> Any:
    return vlm_registry({"medical": _BundlePlugin()})


def run_cli(args: list[str], registry: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any):
    """``vlm run medical.bundle ARGS`` in-process; (exit code, stdout, stderr)."""
    from vlm_core import plugins
    from vlm_core.cli import main

    monkeypatch.setattr(plugins, "_cached", registry)
    with pytest.raises(SystemExit) as info:
        main(["run", "medical.bundle", *args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize(
    ("case", "placement"),
    [("delete-filebaton", "trust=true"), ("unpickle-loadimaged-numpyreader", "MONAI cache")],
)
def test_cli_refuses_with_one_line_and_exit_2(
    case, placement, scene, registry, monkeypatch, capsys
):
    bundle, _ = build_attack(scene, ATTACKS[case], place(scene, placement, case, monkeypatch))
    trust = ["-p", "trust=true"] if placement == "trust=true" else []
    code, _, err = run_cli(
        [str(scene.volume), "-p", f"bundle={bundle}", *trust, "--out", str(scene.root / "o")],
        registry, monkeypatch, capsys,
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: bundle '{case}' refused: config key '")
    scene.assert_untouched()


def test_cli_runs_the_demo_sample(registry, monkeypatch, capsys, tmp_path, vlm_home):
    from vlm_medical.bundle import DEMO_INPUT

    code, out, err = run_cli([str(DEMO_INPUT), "--out", str(tmp_path / "o")], registry,
                             monkeypatch, capsys)  # fmt: skip
    assert code == 0, err
    assert "mask: background=" in out and "sphere=" in out
