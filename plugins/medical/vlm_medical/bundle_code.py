"""Python code that a bundle ships, and running it only on the operator's explicit word.

A bundle may carry Python (MONAI zoo bundles put custom networks, transforms and inferers in
a ``scripts/`` package and name them in their config: ``"_target_": "scripts.net.MyNet"``).
Nothing the allow-list can check stops that code from doing anything once imported, so:

* a bundle holding any Python source, bytecode or native library (:data:`CODE_SUFFIXES`,
  anywhere in its folder) is refused unless the run passes ``trust_code=true``, whatever its
  location and whatever ``trust`` says (:func:`check_code`);
* with ``trust_code=true`` the bundle's top-level packages and modules become importable for
  the run (:func:`bundle_importable`), and the objects defined in them may be named in its
  config; everything else in the config still goes through the allow-list, so MONAI's
  writers, unpicklers and the rest stay refused. The bundle's own code, once imported, runs
  with the user's rights and is not limited by vlm.

``.pth`` files are PyTorch weights in a bundle (loaded only by the core's safe loader); they are
code only inside a site-packages folder, which nothing in a bundle can write to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vlm_medical.bundle_allowlist import IMPORT_ROOTS, IMPORT_STDLIB
from vlm_medical.bundle_safety import BundleRefused

#: Files that are Python code or native libraries Python can load.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".pyz", ".so", ".dylib", ".dll")
#: Files looked at before giving up (a bundle is a few dozen files).
MAX_FILES = 50_000


def shipped_code(folder: Path) -> list[str]:
    """The bundle's code files, as paths relative to ``folder`` (symbolic links not followed)."""
    found: list[str] = []
    seen = 0
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            seen += 1
            if seen > MAX_FILES:
                return found or [f"(more than {MAX_FILES} files)"]
            lower = name.lower()
            if lower.endswith(CODE_SUFFIXES) or ".so." in lower:
                found.append(str((Path(top) / name).relative_to(folder)))
    return found


def code_packages(folder: Path) -> frozenset[str]:
    """The names the bundle's code imports under: its top-level packages and modules."""
    names = set()
    for path in folder.iterdir():
        if path.is_dir() and any(
            p.suffix == ".py" for p in path.rglob("*.py") if not p.is_symlink()
        ):
            names.add(path.name)
        elif path.suffix == ".py":
            names.add(path.stem)
    return frozenset(n for n in names if n.isidentifier())


def check_code(folder: Path, *, trust_code: bool, label: str) -> frozenset[str]:
    """The bundle's importable packages when it ships code and ``trust_code`` is set; refuse
    a bundle with code otherwise. Returns an empty set for a bundle without code."""
    code = shipped_code(folder)
    if not code:
        return frozenset()
    if not trust_code:
        shown = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
        raise BundleRefused(
            f"bundle '{label}' refused: it ships Python code ({shown}); vlm runs a bundle's own "
            "code only with trust_code=true, which runs it with your rights, unchecked "
            "(trust=true never does; see BUNDLE.md)"
        )
    packages = code_packages(folder)
    for name in sorted(packages):
        if name in IMPORT_ROOTS or name in IMPORT_STDLIB or name in sys.stdlib_module_names:
            raise BundleRefused(
                f"bundle '{label}' refused: its code has a package named '{name}', which would "
                "stand in for the library of that name"
            )
    return packages


@contextmanager
def bundle_importable(folder: Path, packages: frozenset[str]) -> Iterator[None]:
    """Make the bundle's ``packages`` importable while the block runs (the bundle folder
    first on ``sys.path``, and no earlier bundle's modules of the same names cached)."""
    if not packages:
        yield
        return
    root = str(folder.resolve())
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            where = getattr(sys.modules[name], "__file__", None) or ""
            if not where.startswith(root + os.sep):
                del sys.modules[name]
    sys.path.insert(0, root)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(root)
