"""System: devices, memory, the model cache, the device queue, limits and versions."""

from __future__ import annotations

import streamlit as st
from vlm_dashboard.errors import debug_mode
from vlm_dashboard.serving import device_queue, devices
from vlm_dashboard.state import cuda_memory, host_memory, versions
from vlm_dashboard.uploads import upload_limit_bytes

from vlm_core.config import settings
from vlm_core.runtime.cache import model_cache


def _devices() -> None:
    st.subheader("Devices")
    dev = devices()
    col1, col2, col3 = st.columns(3)
    col1.metric("Default device", dev["default"])
    col2.metric("torch", dev["torch"] or "not installed")
    col3.metric("CUDA runtime", dev.get("cuda_runtime") or "none")
    if dev["cuda"]:
        held = {row["device"]: row for row in cuda_memory()}
        rows = [{**gpu, **held.get(f"cuda:{gpu['index']}", {})} for gpu in dev["cuda"]]
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.caption("No CUDA device." + (" Apple MPS is available." if dev["mps"] else ""))
    if st.button("Refresh devices"):
        devices.clear()
        st.rerun()


def _memory() -> None:
    st.subheader("Memory")
    mem = host_memory()
    col1, col2, col3 = st.columns(3)
    col1.metric("Host memory", f"{mem['total_gb']} GiB")
    col2.metric("Available", f"{mem['available_gb']} GiB", help=f"{mem['used_percent']}% in use")
    col3.metric("This server", f"{mem['process_gb']} GiB")


def _cache_and_queue() -> None:
    st.subheader("Model cache and device queue")
    stats = model_cache().stats()
    queue = device_queue()
    col1, col2, col3, col4 = st.columns(4)
    col1.metric("Cached models", stats.entries, help=f"{stats.leased} in use now")
    col2.metric(
        "Cache size",
        f"{stats.bytes / 2**20:,.0f} MB",
        help=f"budget {stats.budget_bytes / 2**20:,.0f} MB",
    )
    col3.metric(
        "Hits / misses", f"{stats.hits} / {stats.misses}", help=f"{stats.evictions} evictions"
    )
    col4.metric("Queued runs", queue.pending(), help=f"{queue.completed} finished since start")


def _limits() -> None:
    st.subheader("Limits and settings")
    s = settings()
    st.dataframe(
        [
            {"setting": "upload limit", "value": f"{upload_limit_bytes() / 2**20:,.0f} MB"},
            {"setting": "largest input file", "value": f"{s.max_input_bytes:,} bytes"},
            {"setting": "largest image", "value": f"{s.max_image_pixels:,} pixels"},
            {"setting": "largest volume", "value": f"{s.max_volume_voxels:,} voxels"},
            {"setting": "run store", "value": str(s.run_store)},
            {"setting": "config file", "value": str(s.config_file)},
            {"setting": "debug mode", "value": "on" if debug_mode() else "off"},
        ],
        hide_index=True,
        width="stretch",
    )


def main() -> None:
    """Draw the page."""
    st.title("System")
    _devices()
    _memory()
    _cache_and_queue()
    _limits()
    st.subheader("Versions")
    st.dataframe(
        [{"package": k, "version": v} for k, v in versions().items()],
        hide_index=True,
        width="stretch",
    )


main()
