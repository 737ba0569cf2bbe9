"""Checks of the paths a run writes to (run directory, checkpoints), made before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

from mpcli.config.schema import RunConfig
from mpcli.errors import ConfigError

NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems


def check_run_name(name: str) -> None:
    """`name` becomes one directory name under run_root."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(f"name={name!r}: must be one directory name (no /, not . or ..)")
    if len(name.encode()) > NAME_MAX - 16:  # room for the files mpcli names after the run
        raise ConfigError(f"name: {len(name.encode())} bytes is too long for a directory name; shorten it")


def check_writable_dir(path: Path, key: str) -> None:
    """`path` is a directory, or can be made: its nearest existing ancestor is a writable directory."""
    long = next((part for part in path.parts if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        raise ConfigError(f"{key}: the path part '{long[:24]}...' is longer than {NAME_MAX} bytes")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path}: exists and is not a directory; give a directory")
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={path}: {existing} is a file, so no directory can be made below it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {existing} is not writable; choose a directory you can write to")


def check_run_paths(run: RunConfig, run_dir: Path, *, run_dir_key: str) -> None:
    """Everything `mpcli train` will write: the run directory and, when set apart, the checkpoints."""
    check_run_name(run.name)
    check_writable_dir(Path(run.run_root).expanduser(), "run_root")
    check_writable_dir(run_dir, run_dir_key)
    if run.checkpoint.dir:
        check_writable_dir(Path(run.checkpoint.dir).expanduser(), "checkpoint.dir")
