"""Rewrite the example section of docs/plugin-author-guide.md from the scaffold template.

    python scripts/sync_author_guide.py

tests/test_scaffold.py fails when the guide and the template differ.
"""

from __future__ import annotations

from pathlib import Path

from vlm_core.scaffold import render

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugin-author-guide.md"
MARKER = "## The complete example plugin\n"
ORDER = ["pyproject.toml", "vlm_hello/__init__.py", "vlm_hello/plugin.py",
         "vlm_hello/threshold.py", "tests/test_hello.py", "README.md"]  # fmt: skip
LANG = {"toml": "toml", "py": "python", "md": "markdown"}


def main() -> None:
    files = render("hello")
    if set(files) != set(ORDER):
        raise SystemExit(f"template files changed: {sorted(files)}; update ORDER")
    text = GUIDE.read_text()
    head, _, rest = text.partition(MARKER)
    intro = rest.split("### `", 1)[0]
    blocks = []
    for rel in ORDER:
        fence = "````" if rel.endswith(".md") else "```"
        lang = LANG[rel.rsplit(".", 1)[1]]
        blocks.append(f"### `{rel}`\n\n{fence}{lang}\n{files[rel].rstrip()}\n{fence}\n")
    GUIDE.write_text(head + MARKER + intro + "\n".join(blocks))


if __name__ == "__main__":
    main()
