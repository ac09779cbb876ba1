"""Regenerate the user guide's dashboard screenshots (docs/images/dashboard-*.png) from the
browser walk (tests/test_browser_walk.py).

    python scripts/dashboard_screenshots.py            # run the walk, then convert its shots
    python scripts/dashboard_screenshots.py --from DIR # convert shots a walk already left in DIR
    python scripts/dashboard_screenshots.py --from DIR --only run-flagged  # just these shots

The walk runs the samples as shipped (``VLM_WALK_TINY=0``), so each picture shows what an
operator who picks the sample sees, not the walk's cheaper settings.

Every page of the walk becomes ``dashboard-PAGE.png``, the runs named in ``RUNS`` become
``dashboard-run-TASK.png`` and the shots named in ``SHOTS`` ``dashboard-SHOT.png``: scaled to
``WIDTH`` pixels, cut at ``MAX_HEIGHT``, reduced to a palette of at most 256 colours and
optimised, so that each stays under ``MAX_BYTES``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
PAGES = ("home", "run", "history", "train", "plugins", "system")
#: one run per built-in plugin: what each kind of result looks like on the Run page
RUNS = ("art.generate", "caption.answer", "driving.detect", "medical.segment")
#: other shots of the walk: a result warned about as unlike the training data
SHOTS = ("run-flagged",)
WIDTH = 1100  # px
MAX_HEIGHT = 3000  # px, after scaling
MAX_BYTES = 300_000


def compress(source: Path, target: Path) -> int:
    """Write ``source`` as a small palette PNG at ``target``; its size in bytes."""
    with Image.open(source) as shot:
        image = shot.convert("RGB")
    if image.width > WIDTH:
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image = image.crop((0, 0, image.width, min(image.height, MAX_HEIGHT)))
    for colours in (256, 128, 64, 32):
        image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True
        )
        if target.stat().st_size <= MAX_BYTES:
            break
    return target.stat().st_size


def run_walk(shots: Path) -> None:
    # the samples as shipped, not made cheap: the pictures show what an operator sees
    env = {**os.environ, "VLM_TEST_ARTIFACTS": str(shots), "VLM_WALK_TINY": "0"}
    walk = subprocess.run(["bash", str(REPO / "scripts" / "browser_walk.sh")], env=env)
    if walk.returncode != 0:
        sys.exit(f"the browser walk failed (exit {walk.returncode}); no screenshot was changed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="shots", type=Path, help="A folder of the walk's shots.")
    parser.add_argument(
        "--only", nargs="+", metavar="SHOT", help="Convert only these shots (names without .png)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlm-walk-") as tmp:
        shots = args.shots or Path(tmp)
        if args.shots is None:
            run_walk(shots)
        wanted = {f"{p}.png": f"dashboard-{p}.png" for p in PAGES}
        wanted |= {f"run-{t}.png": f"dashboard-run-{t.replace('.', '-')}.png" for t in RUNS}
        wanted |= {f"{s}.png": f"dashboard-{s}.png" for s in SHOTS}
        if args.only:
            unknown = [s for s in args.only if f"{s}.png" not in wanted]
            if unknown:
                sys.exit(f"--only: no shot named {', '.join(unknown)}")
            wanted = {f"{s}.png": wanted[f"{s}.png"] for s in args.only}
        missing = [name for name in wanted if not (shots / name).is_file()]
        if missing:
            sys.exit(f"{shots} lacks {', '.join(missing)} (did the walk run or skip?)")
        for name, target in wanted.items():
            size = compress(shots / name, IMAGES / target)
            print(f"{target}: {size / 1000:.0f} kB")


if __name__ == "__main__":
    main()
