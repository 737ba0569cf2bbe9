"""The `mpcli` program's entry point: settings of the process made before torch is imported."""

from __future__ import annotations

import os
from pathlib import Path


def use_user_compile_cache() -> None:
    """Inductor keeps its compile cache in the temp directory unless told otherwise, and importing
    torch's compiler creates it there. mpcli keeps it per user under the user's cache directory, where
    it survives reboots and leaves the temp directory alone; TORCHINDUCTOR_CACHE_DIR still wins."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_home) / "mpcli" / "inductor")


def main() -> None:
    use_user_compile_cache()  # this process and the workers it starts inherit it
    from mpcli.cli.app import app

    app()
