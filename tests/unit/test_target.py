"""`model._target_`: an nn.Module class is built; anything else only when the user trusts it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mpcli.config.target import TRUST_ENV, resolve_target, trusted_patterns, trusting
from mpcli.errors import ConfigError
from tests.fixtures import byo


def test_an_nn_module_class_is_accepted() -> None:
    assert resolve_target("tests.fixtures.byo.TeamNet") is byo.TeamNet
    assert resolve_target("torch.nn.Linear").__name__ == "Linear"


@pytest.mark.parametrize("target", ["tests.fixtures.byo.write_marker", "tests.fixtures.byo.marker_writer"])
def test_a_factory_is_refused_unless_trusted(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=f"--trust-target '{target}'"):
        resolve_target(target)
    monkeypatch.setenv(TRUST_ENV, "other.*, tests.fixtures.byo.*")
    assert resolve_target(target) is byo.write_marker


def test_trust_patterns_match_the_whole_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUST_ENV, "tests.fixtures.by")
    with pytest.raises(ConfigError, match="not an nn.Module class"):
        resolve_target("tests.fixtures.byo.write_marker")


def test_trusting_adds_patterns_for_one_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUST_ENV, "a.*")
    with trusting(["b.*", "c.d"]):
        assert trusted_patterns() == ["a.*", "b.*", "c.d"]
    assert trusted_patterns() == ["a.*"]
    monkeypatch.delenv(TRUST_ENV)
    with trusting(["b.*"]):
        assert trusted_patterns() == ["b.*"]
    assert trusted_patterns() == []


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("os.system", "standard library"),
        ("subprocess.Popen", "standard library"),
        ("builtins.eval", "standard library"),
        ("this.Zen", "standard library"),  # importing `this` prints; refused before any import
        ("__main__.Net", "dunder"),
        ("tests.fixtures.byo.TeamNet.__init__.__globals__", "dunder"),
        ("tests.fixtures.byo.__builtins__.eval", "dunder"),
        ("tests.fixtures.byo.nothing_here", "has no attribute nothing_here"),
        ("no_such_pkg_for_mpcli.models.Net", "no module no_such_pkg_for_mpcli is importable"),
        ("tests.fixtures.byo.TeamNet.forward", "not an nn.Module class"),
        ("tests.fixtures.byo", "not callable"),
        ("Net", "dotted name"),
        ("a..b", "dotted name"),
        ("a.b;rm -rf x", "dotted name"),
        ("", "dotted name"),
    ],
)
def test_refusals_are_one_line_naming_the_key(target: str, fragment: str) -> None:
    imported = set(sys.modules)
    with pytest.raises(ConfigError) as exc:
        resolve_target(target)
    message = str(exc.value)
    assert message.startswith(f"model._target_={target}: ") and fragment in message
    assert "\n" not in message
    if fragment == "standard library":
        assert set(sys.modules) == imported


def test_a_module_that_fails_to_import_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_team_pkg.py").write_text("raise RuntimeError('no GPU driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing broken_team_pkg failed: RuntimeError: no GPU driver"):
        resolve_target("broken_team_pkg.Net")
    sys.modules.pop("broken_team_pkg", None)


def test_a_trusted_stdlib_callable_is_the_users_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUST_ENV, "collections.OrderedDict")
    assert resolve_target("collections.OrderedDict").__name__ == "OrderedDict"
