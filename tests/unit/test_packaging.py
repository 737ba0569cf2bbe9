"""A non-editable install ships conf/ and recipes/ inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_config_group_and_recipe(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("mpcli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (REPO / "conf").rglob("*.yaml"):
        assert f"mpcli/_conf/{path.relative_to(REPO / 'conf')}" in names
    for path in (REPO / "recipes").glob("*.yaml"):
        assert f"mpcli/_recipes/{path.name}" in names
    assert "mpcli/cli/app.py" in names and "mpcli/checkpoint/__init__.py" in names
