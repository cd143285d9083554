import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k3#j9!vQ2@pL7$wX4^mR8&nT1*bY6(cZ5)dF0-gH_sJ=aK+eUiOoPlMnBvCxZqWe",
    "AUDIT_SIGNING_KEY": "2f1e9c7a5b3d8e6f4a2c0b9d7e5f3a1c8b6d4e2f0a9c7b5d",
    "ALLOWED_HOSTS": "orchestrator.example.com",
    "HTTPS": "true",
    "DATABASE_URL": "sqlite:////tmp/orchestrator-deploy-check.sqlite3",
}


def check_deploy(env):
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_values():
    result = check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("missing", "code"),
    [("SECRET_KEY", "security.W009"), ("AUDIT_SIGNING_KEY", "audit.W001"), ("HTTPS", "W008")],
)
def test_check_deploy_flags_missing_production_values(missing, code):
    env = {**PRODUCTION}
    env.pop(missing)
    env_clean = {k: v for k, v in os.environ.items() if k != missing}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**env_clean, "DJANGO_SETTINGS_MODULE": "orchestrator.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert code in result.stderr + result.stdout


def test_bad_boolean_in_the_environment_is_a_clear_error():
    result = check_deploy({**PRODUCTION, "HTTPS": "maybe"})
    assert result.returncode != 0
    assert "HTTPS='maybe' is not a boolean" in result.stderr


def test_the_built_package_leaves_the_development_tools_out():
    import tomllib
    from fnmatch import fnmatchcase

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    config = found["packages"]["find"]
    # What setuptools' find_packages does: dotted names of folders with an
    # __init__.py, kept by the include patterns, dropped by the exclude ones.
    names = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in ROOT.glob("**/__init__.py")
        if ".venv" not in init.parts
    }
    packages = {
        name
        for name in names
        if any(fnmatchcase(name, pattern) for pattern in config["include"])
        and not any(fnmatchcase(name, pattern) for pattern in config["exclude"])
    }
    assert {"core", "audit", "leads.workflows", "orchestrator.dashboard"} <= packages
    assert not {p for p in packages if p.startswith(("orchestrator.devtools", "tests"))}
