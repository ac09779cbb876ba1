"""Text-query time of `caption.search` (captioner engine) with and without the image tokens kept
beside the index, on a catalogue of generated product photos.

    python plugins/caption/benchmarks/search_speed.py [--images 500] [--queries 5] [--json OUT]

Writes the catalogue to a temporary folder, builds the index once (tokens kept), times each
query with the tokens, deletes them and times the same queries decoding every image again. The
rankings of both paths are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

QUERIES = (
    "a red mug",
    "a cracked blue bottle",
    "a white vase with a stain",
    "a green box",
    "a dented teapot",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--queries", type=int, default=len(QUERIES))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VLM_HOME"] = str(Path(tmp) / "home")
        import vlm_caption.search as search_module
        from PIL import Image
        from vlm_caption.model import load_captioner
        from vlm_caption.params import SearchParams
        from vlm_caption.products import render_photo

        folder = Path(tmp) / "catalogue"
        folder.mkdir()
        for i in range(args.images):
            Image.fromarray(render_photo(96, 77_000_000 + i).pixels).save(folder / f"{i:05d}.png")
        engine = search_module._CaptionerEngine(load_captioner("", "cpu"))
        queries = QUERIES[: args.queries]

        def timed(query: str) -> tuple[float, list[str]]:
            params = SearchParams(folder=str(folder), query=query, k=5)
            start = time.perf_counter()
            hits = search_module.search(engine, params)
            return time.perf_counter() - start, [name for name, _ in hits]

        start = time.perf_counter()
        _, _, where = search_module.open_index(engine, SearchParams(folder=str(folder), query="x"))
        build_s = time.perf_counter() - start
        kept = [timed(q) for q in queries]
        (where / search_module.TOKENS).unlink()
        decoded = [timed(q) for q in queries]
    report = {
        "images": args.images,
        "index_build_s": round(build_s, 3),
        "query_s_with_tokens": round(statistics.median(t for t, _ in kept), 3),
        "query_s_decoding": round(statistics.median(t for t, _ in decoded), 3),
        "same_top5": sum(a == b for (_, a), (_, b) in zip(kept, decoded, strict=True)),
        "queries": len(queries),
    }
    report["speedup"] = round(report["query_s_decoding"] / report["query_s_with_tokens"], 2)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
