"""One way of reading settings: settings.X, with its one default in orchestrator/settings.py."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "audit", "leads", "orchestrator")
SETTINGS_MODULE = ROOT / "orchestrator" / "settings.py"
REASON = (
    "read settings as settings.X and give X its one default, env-driven, in "
    "orchestrator/settings.py (pghistory/zulip style): a getattr default is a second "
    "default that drifts from the first and hides a setting missing from settings.py"
)


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != SETTINGS_MODULE and "migrations" not in path.parts:
                yield path


def _getattr_settings(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr")
        and node.args
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "settings"
    ]


def test_no_getattr_on_settings_outside_the_settings_module():
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources()
        for line in _getattr_settings(path)
    ]
    assert not found, f"getattr(settings, ...) at {', '.join(found)}: {REASON}"


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('x = getattr(settings, "FOO", 1)\ny = settings.FOO\n')
    assert _getattr_settings(bad) == [1]
