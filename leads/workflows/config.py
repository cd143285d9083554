"""Workflow configuration: validate against config/workflow.schema.json and upsert."""

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from jsonschema import Draft202012Validator

from core.credentials import credential_env_allowed
from leads.models import LeadSource, Team, TeamMember
from leads.workflows.models import Workflow
from leads.workflows.steps import STEP_KINDS

SCHEMA_PATH = Path(settings.BASE_DIR) / "config" / "workflow.schema.json"


class ConfigError(ValueError):
    """The config is not valid; `errors` lists "JSON pointer: message" lines."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@cache
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _validate(document: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        # For oneOf/anyOf the most specific sub-error says more than "is not valid under any".
        best = (
            min(error.context, key=lambda e: len(e.message), default=error)
            if error.context
            else error
        )
        path = list(error.absolute_path) + list(best.relative_path if best is not error else [])
        out.append(f"{prefix}{_pointer(path) if path else '/'}: {best.message}")
    return out


def _semantic_errors(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """What the schema cannot say: regexes compile, step kinds exist, names are unique."""
    errors = []
    for wi, wf in enumerate(data.get("workflows", [])):
        base = f"{prefix}/workflows/{wi}"
        for ri, rule in enumerate(wf.get("qualification", {}).get("rules", [])):
            conditions = rule["when"] if isinstance(rule["when"], list) else [rule["when"]]
            for ci, cond in enumerate(conditions):
                if cond.get("op") == "regex":
                    try:
                        re.compile(cond.get("value", ""))
                    except re.error as exc:
                        errors.append(
                            f"{base}/qualification/rules/{ri}/when/{ci}/value: bad regex ({exc})"
                        )
        for si, step in enumerate(wf.get("steps", [])):
            if step.get("kind") not in STEP_KINDS:
                known = "known: " + (", ".join(sorted(STEP_KINDS)) or "none registered")
                kind = step.get("kind")
                errors.append(f"{base}/steps/{si}/kind: unknown step kind {kind!r} ({known})")
        for si, src in enumerate(wf.get("sources", [])):
            # The schema checks the shape of a variable name; the credential
            # rule (core.credentials) says which names may be read at all.
            for key in ("username_env", "password_env"):
                name = (src.get("inbox") or {}).get(key)
                problem = credential_env_allowed(name) if name is not None else None
                if problem is not None:
                    errors.append(f"{base}/sources/{si}/inbox/{key}: {problem}")
    names = [wf.get("name") for wf in data.get("workflows", [])]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"{prefix}/workflows: workflow name {dup!r} appears twice")
    slugs = [s.get("slug") for wf in data.get("workflows", []) for s in wf.get("sources", [])]
    for dup in sorted({s for s in slugs if slugs.count(s) > 1}):
        errors.append(f"{prefix}/workflows: source slug {dup!r} appears twice")
    return errors


def validate_config(data: Any) -> None:
    """Raise ConfigError listing every problem with the JSON pointer of the bad field."""
    errors = _validate(data, _schema())
    if not errors:
        errors = _semantic_errors(data)
    if errors:
        raise ConfigError(errors)


def validate_workflow_config(config: Any) -> None:
    """One workflow's config (as stored on Workflow.config, without its sources)."""
    schema = {**_schema(), **_schema()["$defs"]["workflow"]}
    schema.pop("required", None)
    errors = _validate(config, schema)
    if not errors:
        errors = _semantic_errors({"workflows": [{"name": "x", **config}]})
    if errors:
        raise ConfigError(errors)


def read_config(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}"]) from None


@transaction.atomic
def apply_config(data: Mapping[str, Any], *, create_users: bool = False) -> dict[str, Any]:
    """Upsert teams, workflows and their sources; returns counts of what changed.

    Team members must exist as users; create_users makes the missing ones,
    with no usable password (an admin sets one, or they use password reset)."""
    validate_config(data)
    User = get_user_model()
    counts: dict[str, Any] = {"teams": 0, "members": 0, "workflows": 0, "sources": 0}
    missing = sorted(
        {
            m["username"]
            for t in data.get("teams", [])
            for m in t.get("members", [])
            if not User.objects.filter(**{User.USERNAME_FIELD: m["username"]}).exists()
        }
    )
    if missing and not create_users:
        raise ConfigError(
            [
                f"/teams: no such user(s): {', '.join(missing)} (create them first, or "
                "pass --create-users to create them without a password)"
            ]
        )
    for username in missing:
        User.objects.create_user(**{User.USERNAME_FIELD: username}, password=None)
    counts["users_created"] = missing
    for team_data in data.get("teams", []):
        team, _ = Team.objects.update_or_create(
            slug=team_data["slug"],
            defaults={
                "name": team_data.get("name", team_data["slug"]),
                "active": team_data.get("active", True),
            },
        )
        counts["teams"] += 1
        for member in team_data.get("members", []):
            user = User.objects.get(**{User.USERNAME_FIELD: member["username"]})
            TeamMember.objects.update_or_create(
                team=team,
                user=user,
                defaults={"weight": member.get("weight", 1), "active": member.get("active", True)},
            )
            counts["members"] += 1
    for wf in data["workflows"]:
        config = {k: v for k, v in wf.items() if k not in ("name", "enabled", "sources")}
        workflow, _ = Workflow.objects.update_or_create(
            name=wf["name"], defaults={"config": config, "enabled": wf.get("enabled", True)}
        )
        counts["workflows"] += 1
        for src in wf.get("sources", []):
            options = {"inbox": src["inbox"]} if "inbox" in src else {}
            LeadSource.objects.update_or_create(
                slug=src["slug"],
                defaults={
                    "name": src.get("name", src["slug"]),
                    "kind": src["kind"],
                    "workflow": workflow,
                    "field_mapping": src.get("field_mapping", {}),
                    "schema": src.get("schema", {}),
                    "dedupe_window_hours": src.get("dedupe_window_hours", 24 * 30),
                    "options": options,
                    "active": src.get("active", True),
                },
            )
            counts["sources"] += 1
    return counts
