"""`python -m vlm_core.cli` runs the `vlm` command."""

from vlm_core.cli import main

main()
