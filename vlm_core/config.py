"""Settings from the environment and the user config file.

Environment variables (all optional):

``VLM_HOME``               folder for the config file and the run store (default: the user's
                           platform config and data folders)
``VLM_PLUGINS``            comma-separated allow-list of plugins to load; empty loads none
``VLM_STRICT_PLUGINS``     ``1`` makes plugin failures fatal (for plugin developers)
``VLM_MAX_IMAGE_PIXELS``   largest image accepted, in pixels, read from the header (100 M)
``VLM_MAX_VOLUME_VOXELS``  largest volume accepted, in voxels (1 G)
``VLM_MAX_INPUT_BYTES``    largest input file accepted, in bytes (4 GiB)
``VLM_MODEL_CACHE_MB``     memory budget of the process-wide model cache (vlm_core.runtime)
``VLM_OFFLINE``            ``1``: never download weights (vlm_core.weights)
``VLM_PROBE_TIMEOUT``      seconds to find out whether a weights host answers (0.5)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from vlm_core.errors import UsageError
from vlm_core.fileio import atomic_write_text

_TRUE = {"1", "true", "yes", "on"}


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Process-wide settings, read once from the environment by :func:`settings`."""

    config_dir: Path
    data_dir: Path
    plugin_allow_list: frozenset[str] | None  # None: load every installed plugin
    strict_plugins: bool
    max_image_pixels: int
    max_volume_voxels: int
    max_input_bytes: int
    max_cloud_points: int  # points in one LiDAR sweep of a scene

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    @property
    def run_store(self) -> Path:
        return self.data_dir / "runs.sqlite"


def settings() -> Settings:
    """Read the settings from the environment (cheap; call it where they are needed)."""
    home = os.environ.get("VLM_HOME", "").strip()
    if home:
        config_dir = data_dir = Path(home).expanduser()
    else:
        import platformdirs

        config_dir = Path(platformdirs.user_config_dir("vlm"))
        data_dir = Path(platformdirs.user_data_dir("vlm"))
    allow = os.environ.get("VLM_PLUGINS")
    allow_list = (
        None if allow is None else frozenset(p.strip() for p in allow.split(",") if p.strip())
    )
    return Settings(
        config_dir=config_dir,
        data_dir=data_dir,
        plugin_allow_list=allow_list,
        strict_plugins=os.environ.get("VLM_STRICT_PLUGINS", "").strip().lower() in _TRUE,
        max_image_pixels=_int_env("VLM_MAX_IMAGE_PIXELS", 100_000_000),
        max_volume_voxels=_int_env("VLM_MAX_VOLUME_VOXELS", 1_000_000_000),
        max_input_bytes=_int_env("VLM_MAX_INPUT_BYTES", 4 * 1024**3),
        # a 128-beam sensor's sweep is about 0.3 M points; KITTI's 64-beam one 0.12 M
        max_cloud_points=_int_env("VLM_MAX_CLOUD_POINTS", 5_000_000),
    )


@dataclass(frozen=True)
class Quarantine:
    """Why a plugin was quarantined, when, and by which run (shown on the dashboard's Plugins
    page and by `vlm plugins list`)."""

    reason: str
    at: str = ""  # ISO 8601 time, UTC
    by: str = ""  # what started the run: "cli", "dashboard", "python"
    run_id: str = ""

    @classmethod
    def from_json(cls, value: Any) -> Quarantine:
        if isinstance(value, dict):
            return cls(**{k: str(value.get(k) or "") for k in ("reason", "at", "by", "run_id")})
        return cls(reason=str(value))  # an older config file: the reason alone

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "at": self.at, "by": self.by, "run_id": self.run_id}


@dataclass
class UserConfig:
    """The user config file: plugins switched off by the user, and plugins quarantined after
    they crashed in a run and on their own samples (cleared by ``vlm plugins enable``)."""

    disabled: set[str]
    quarantined: dict[str, Quarantine]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserConfig:
        quarantined = data.get("quarantined", {})
        return cls(
            disabled=set(data.get("disabled", [])),
            quarantined={
                str(name): Quarantine.from_json(value)
                for name, value in (quarantined.items() if isinstance(quarantined, dict) else ())
            },
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "disabled": sorted(self.disabled),
            "quarantined": {k: v.to_json() for k, v in sorted(self.quarantined.items())},
        }


def read_user_config(s: Settings | None = None) -> UserConfig:
    path = (s or settings()).config_file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return UserConfig(set(), {})
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the vlm config file {path}: {exc}; fix or delete it"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"the vlm config file {path} must hold a JSON object; fix or delete it")
    return UserConfig.from_json(data)


@contextlib.contextmanager
def edit_user_config(s: Settings | None = None) -> Iterator[UserConfig]:
    """Read, modify and atomically write the config file under an exclusive lock."""
    s = s or settings()
    s.config_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(s.config_dir / ".config.lock"):
        config = read_user_config(s)
        yield config
        atomic_write_text(s.config_file, json.dumps(config.to_json(), indent=2) + "\n")
