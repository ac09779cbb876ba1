"""The wheels the lent GPU machine lacks, downloaded here to travel with the working tree.

    bash scripts/gpu_wheels.sh            # download into .gpu-wheels/, measure, check the fit
    bash scripts/gpu_wheels.sh check      # only list what it would fetch, why, and the fit

The GPU machine (Python 3.12, x86-64, no internet) has torch, torchvision, timm and the
packages in ``benchmarks/gpu_machine_packages.txt``. What the project needs beyond them is the
closure of the dependencies declared in ``pyproject.toml`` and ``plugins/*/pyproject.toml``,
walked through the metadata of the packages installed here, minus what the GPU machine has:
each is pinned to the version installed here and downloaded as a cp312 manylinux (or pure
Python) wheel with ``--no-deps`` (so pip never pulls a second torch). ``EXCLUDED`` names what
is left out on purpose, with the reason. The device tool carries at most 64 MiB of ignored
files: the total of ``CARRY`` is measured and must fit.

``register-tree SITE`` runs on the GPU machine: it writes a ``.dist-info`` (name, version,
entry points) for vlm-core and each plugin into SITE, as an editable install does, so
``vlm.plugins`` and ``pytest11`` entry points resolve to the working tree on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import tomllib

if TYPE_CHECKING:  # packaging is imported where needed: register-tree runs without it
    from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".gpu-wheels"
PREINSTALLED = Path(__file__).with_name("gpu_machine_packages.txt")
#: ignored paths that must travel with the tree for the GPU check (the device tool's `carry`)
CARRY = (".gpu-wheels",)
CARRY_LIMIT = 64 * 2**20
#: the GPU machine's interpreter, for markers and wheel tags
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
#: never downloaded, whatever the closure says
NEVER = {"torch", "torchvision", "timm"}
#: left out on purpose: name -> why
#: optional dependencies a GPU line needs, carried although no distribution requires them
EXTRAS_CARRIED = {
    "captum": "vlm-core[explain] (the explain.time line: Integrated Gradients, Occlusion)",
}
EXCLUDED = {
    "av": "36 MB (PyAV bundles FFmpeg): with it the set is 70 MiB, over the 64 MiB that "
    "travels; only video input and MP4 export use it, no GPU line reads or writes a video",
}


def project_requirements() -> list[tuple[Requirement, str]]:
    from packaging.requirements import Requirement

    found = []
    for path in [REPO / "pyproject.toml", *sorted(REPO.glob("plugins/*/pyproject.toml"))]:
        project = tomllib.loads(path.read_text())["project"]
        found += [(Requirement(r), project["name"]) for r in project.get("dependencies", [])]
    found += [(Requirement(r), why) for r, why in EXTRAS_CARRIED.items()]
    return found


def preinstalled() -> set[str]:
    from packaging.utils import canonicalize_name

    names = PREINSTALLED.read_text().split("\n")
    return {canonicalize_name(n.strip()) for n in names if n.strip() and not n.startswith("#")}


def closure() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """``{name: (version here, wanted by)}`` to fetch, and ``{name: why}`` of what is not."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    have = preinstalled()
    fetch: dict[str, tuple[str, str]] = {}
    left: dict[str, str] = {}
    stack = project_requirements()
    while stack:
        req, by = stack.pop()
        name = canonicalize_name(req.name)
        if name.startswith("vlm-") or name in fetch or name in left:
            continue
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        if name in NEVER or name in have:
            left[name] = "on the GPU machine"
            continue
        if name in EXCLUDED:
            left[name] = "excluded: " + EXCLUDED[name]
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(
                f"{req.name} (wanted by {by}) is not installed here: install the project "
                "first (scripts/setup.sh), the wheel versions are taken from it"
            )
        fetch[name] = (dist.version, by)
        stack += [(Requirement(r), name) for r in dist.requires or []]
    return fetch, left


def tree_bytes() -> int:
    """What travels besides ``CARRY``: the tracked files and the untracked ones git does not
    ignore (the device tool's limit covers them and the carried paths together)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return 0  # not a git checkout (a test's temp folder): nothing beside the carry
    files = (REPO / os.fsdecode(name) for name in listed.split(b"\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file())


def carry_bytes() -> dict[str, int]:
    """The bytes of the working tree and of each carried path, which together must fit."""
    sizes = {"(working tree)": tree_bytes()}
    sizes.update(
        (p, sum(f.stat().st_size for f in (REPO / p).rglob("*") if f.is_file()))
        for p in CARRY
        if (REPO / p).exists()
    )
    return sizes


def download(fetch: dict[str, tuple[str, str]]) -> None:
    from packaging.utils import canonicalize_name

    WHEELS.mkdir(exist_ok=True)
    wanted = [f"{name}=={version}" for name, (version, _) in sorted(fetch.items())]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *[a for p in PLATFORMS for a in ("--platform", p)],
        "-d",
        str(WHEELS),
        *wanted,
    ]
    subprocess.run(cmd, check=True)
    keep = {canonicalize_name(n) for n in fetch}
    for wheel in WHEELS.glob("*.whl"):  # drop wheels of another version or no longer needed
        name, version = wheel.name.split("-")[:2]
        if canonicalize_name(name) not in keep or fetch[canonicalize_name(name)][0] != version:
            wheel.unlink()


def register_tree(site: Path) -> None:
    """A ``.dist-info`` with name, version and entry points for vlm-core and each plugin."""
    for path in [REPO / "pyproject.toml", *sorted(REPO.glob("plugins/*/pyproject.toml"))]:
        project = tomllib.loads(path.read_text())["project"]
        version = project.get("version")
        if version is None:  # vlm-core: dynamic, from vlm_core.__version__
            text = (REPO / "vlm_core" / "__init__.py").read_text()
            version = re.search(r'__version__ = "([^"]+)"', text).group(1)  # type: ignore[union-attr]
        name = project["name"]
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("gpu_check\n")
        groups = project.get("entry-points", {})
        if "scripts" in project:
            groups = {**groups, "console_scripts": project["scripts"]}
        (info / "entry_points.txt").write_text(
            "".join(
                f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
                for group, entries in groups.items()
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("download", help="download into .gpu-wheels/ (the default)")
    sub.add_parser("check", help="list what would be fetched and why, and the fit")
    reg = sub.add_parser("register-tree", help="(on the GPU machine) dist-infos into SITE")
    reg.add_argument("site", type=Path)
    args = parser.parse_args(sys.argv[1:] or ["download"])
    if args.command == "register-tree":
        register_tree(args.site)
        return 0
    fetch, left = closure()
    for name, (version, by) in sorted(fetch.items()):
        print(f"fetch  {name + '==' + version:40} wanted by {by}")
    for name, why in sorted(left.items()):
        if why.startswith("excluded"):
            print(f"skip   {name:30} {why}")
    if args.command == "download":
        download(fetch)
    sizes = carry_bytes()
    total = sum(sizes.values())
    wheels = len(list(WHEELS.glob("*.whl"))) if WHEELS.exists() else 0
    for path, size in sizes.items():
        what = f" ({wheels} wheels)" if path in CARRY else ""
        print(f"carry  {path:30} {size / 2**20:6.1f} MiB{what}")
    print(f"total  {total / 2**20:.1f} MiB of the {CARRY_LIMIT / 2**20:.0f} MiB that can travel")
    if args.command == "download" and wheels != len(fetch):
        print(f"error: {len(fetch)} wheels wanted, {wheels} in {WHEELS}", file=sys.stderr)
        return 1
    if total > CARRY_LIMIT:
        print("error: over the carry limit; exclude more (EXCLUDED)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
