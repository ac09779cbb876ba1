"""Safe input loading: formats by content through an allow-list, size caps from headers."""

from vlm_core.io.load import load_input, probe_input
from vlm_core.io.sniff import sniff_format

__all__ = ["load_input", "probe_input", "sniff_format"]
