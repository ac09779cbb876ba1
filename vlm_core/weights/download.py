"""Network access for weights: the offline switches, a time-bounded reachability probe and a
verified, atomic download of a URL.

Nothing here waits on the network for longer than :func:`probe_timeout` before the first byte
is known to be reachable: a machine without a network (no route, no DNS, a firewall that drops
packets) gets an answer within a second instead of a TCP time-out minutes later.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from vlm_core import __version__
from vlm_core.fileio import copy_and_hash
from vlm_core.weights.errors import ChecksumError, WeightsError

log = logging.getLogger(__name__)

#: Environment switches that forbid downloads (any of them set to 1/true/yes/on).
OFFLINE_FLAGS: tuple[str, ...] = ("VLM_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Seconds a download may stall between two reads once the server answered.
READ_TIMEOUT_S = 30.0
_DEFAULT_PROBE_S = 0.5
_TRUE = {"1", "true", "yes", "on"}


def offline_reason() -> str | None:
    """``"VLM_OFFLINE=1"`` (the first offline switch that is on), or None when downloads are
    allowed."""
    for name in OFFLINE_FLAGS:
        value = os.environ.get(name, "").strip()
        if value.lower() in _TRUE:
            return f"{name}={value}"
    return None


def probe_timeout() -> float:
    """Seconds the reachability probe may take in all (``VLM_PROBE_TIMEOUT``, default 0.5)."""
    raw = os.environ.get("VLM_PROBE_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else _DEFAULT_PROBE_S
    except ValueError:
        log.warning("VLM_PROBE_TIMEOUT=%r is not a number; using %s s", raw, _DEFAULT_PROBE_S)
        return _DEFAULT_PROBE_S
    return value if value > 0 else _DEFAULT_PROBE_S


def _endpoint(url: str) -> tuple[str, int]:
    """The host and port a request for ``url`` connects to first (its proxy, when one is set)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname or host, proxy_parts.port or 80
    return host, port


def unreachable_reason(url: str, timeout: float) -> str | None:
    """Try a TCP connection to the host (or proxy) serving ``url`` for at most ``timeout``
    seconds, name resolution included; return why it failed, or None when it connected.

    The attempt runs in a daemon thread, because the system's name resolver has no time-out
    of its own; a thread still waiting after ``timeout`` is abandoned.
    """
    host, port = _endpoint(url)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=attempt, name="vlm-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:.2g} s"
    error = outcome[0]
    return None if error is None else f"cannot reach {host}:{port} ({error})"


class Prober:
    """Probes several URLs against one shared time budget (:func:`probe_timeout` in all).

    A probe that times out means the network is down, so later probes fail at once instead of
    waiting again; a fast failure (unknown host, connection refused) leaves the rest of the
    budget to the next host.
    """

    def __init__(self, budget_s: float | None = None) -> None:
        self.deadline = time.monotonic() + (probe_timeout() if budget_s is None else budget_s)
        self.timed_out: str | None = None

    def check(self, url: str) -> str | None:
        """Why ``url``'s host cannot be reached, or None when it can."""
        if self.timed_out:
            return self.timed_out
        left = self.deadline - time.monotonic()
        if left <= 0.01:
            self.timed_out = "no network answer within the probe time"
            return self.timed_out
        reason = unreachable_reason(url, left)
        if reason and reason.startswith("no answer"):
            self.timed_out = reason
        return reason


def download_url(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    plugin: str = "core",
    filename: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, verifying ``sha256``.

    ``dest`` appears only complete and verified (rename into place). The connection and every
    read time out after :data:`READ_TIMEOUT_S` seconds.

    Raises:
        WeightsError: the server refused, the connection failed or the sha256 differs.
    """
    label = filename or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    request = urllib.request.Request(url, headers={"User-Agent": f"vlm/{__version__}"})
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response,
        ):
            found = copy_and_hash(response, out)
        if sha256 is not None and found != sha256:
            raise ChecksumError(
                f"downloaded {url} but its sha256 is {found}; the download was discarded",
                found=found,
                plugin=plugin,
                filename=label,
                sha256=sha256,
                hint="the URL serves a different file than the spec names; correct the spec",
            )
        os.replace(tmp, dest)
        log.info("downloaded %s to %s", url, dest)
        return dest
    except urllib.error.HTTPError as exc:
        raise WeightsError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}",
            plugin=plugin,
            filename=label,
            sha256=sha256,
            mention_sha=True,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"download of {url} failed: {reason}",
            plugin=plugin,
            filename=label,
            sha256=sha256,
            mention_sha=True,
            hint="retry when the network is back, or copy the file here and run "
            "`vlm weights import PATH`",
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
