"""The kinds of alert rule and their parameters: JSON Schema, defaults, validation.

Kept apart from the evaluators (rules.py) so that the model and the admin
form can validate without importing the models the evaluators read: the
registry names each kind's evaluator by dotted path and imports it on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from core.registry import Registry

if TYPE_CHECKING:
    from orchestrator.monitoring.alerts.rules import Evaluator

MINUTES = {"type": "integer", "minimum": 1, "maximum": 60 * 24 * 30}
NAME = {"type": "string", "minLength": 1, "maxLength": 100}

SCHEMAS: dict[str, dict[str, Any]] = {
    "error_spike": {
        "properties": {
            "window_minutes": MINUTES,
            "baseline_days": {"type": "integer", "minimum": 1, "maximum": 90},
            "multiplier": {"type": "number", "exclusiveMinimum": 0},
            "min_count": {"type": "integer", "minimum": 0},
        },
    },
    "new_error_group": {
        "properties": {
            "window_minutes": MINUTES,
            # A flood of new groups (a deploy gone wrong) is one problem, not 500 alerts.
            "max_groups": {"type": "integer", "minimum": 1, "maximum": 500},
        },
    },
    "error_regressed": {
        # A bad deploy can bring back many resolved groups at once: one alert each, capped.
        "properties": {"max_groups": {"type": "integer", "minimum": 1, "maximum": 500}},
    },
    "crm_failures": {
        "properties": {
            "window_minutes": MINUTES,
            "threshold": {"type": "integer", "minimum": 1},
            "connection": NAME,
        },
    },
    "inbox_failing": {
        "properties": {
            "window_minutes": MINUTES,
            "min_failures": {"type": "integer", "minimum": 1},
            "source": NAME,
        },
    },
    "queue_stalled": {
        "properties": {"max_age_minutes": MINUTES, "queue": NAME},
    },
    "workflow_missed": {
        "properties": {"max_age_minutes": MINUTES, "workflow": NAME},
    },
    "unsealed_events": {
        # null: AUDIT_SEAL_MAX_AGE_SECONDS, read when the rule is evaluated.
        "properties": {"max_age_seconds": {"type": ["integer", "null"], "minimum": 1}},
    },
    "smtp_unreachable": {
        "properties": {
            "window_minutes": MINUTES,
            "min_failures": {"type": "integer", "minimum": 1},
        },
    },
    "emails_stuck_sending": {
        "properties": {"max_age_minutes": MINUTES},
    },
    "step_failures": {
        "properties": {
            "window_minutes": MINUTES,
            "threshold": {"type": "integer", "minimum": 1},
            # An error event's details.stage, matched exactly or as "<stage>:<detail>".
            "stages": {
                "type": "array",
                "items": {**NAME, "pattern": "^[a-z0-9_.-]+$"},
                "minItems": 1,
                "maxItems": 20,
                "uniqueItems": True,
            },
        },
    },
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "error_spike": {"window_minutes": 15, "baseline_days": 7, "multiplier": 3.0, "min_count": 10},
    "new_error_group": {"window_minutes": 60, "max_groups": 20},
    "error_regressed": {"max_groups": 20},
    "crm_failures": {"window_minutes": 60, "threshold": 5},
    "inbox_failing": {"window_minutes": 15, "min_failures": 1},
    "queue_stalled": {"max_age_minutes": 15},
    "workflow_missed": {"max_age_minutes": 60},
    "unsealed_events": {"max_age_seconds": None},
    "smtp_unreachable": {"window_minutes": 15, "min_failures": 1},
    # Above FOLLOWUPS_STUCK_SENDING_SECONDS (10 min) plus a pass, so an email a
    # dead sender left behind, which the next pass requeues, does not alarm.
    "emails_stuck_sending": {"max_age_minutes": 30},
    # send_followup: a follow-up given up on, or sent with an unknown outcome
    # (leads.followups.services.sending); enroll: enrolling a lead failed (leads.followups.steps).
    "step_failures": {
        "window_minutes": 60,
        "threshold": 1,
        "stages": ["send_followup", "enroll"],
    },
}

RULES = "orchestrator.monitoring.alerts.rules"
# kind -> (label, dotted path of its rules.Evaluator).
RULE_KINDS: Registry[Evaluator] = Registry(
    "alert rule kind",
    {
        "error_spike": ("Error spike", f"{RULES}.error_spike"),
        "new_error_group": ("New error group", f"{RULES}.new_error_group"),
        "error_regressed": ("Resolved error came back", f"{RULES}.error_regressed"),
        "crm_failures": ("CRM sync failures", f"{RULES}.crm_failures"),
        "inbox_failing": ("Inbox poll failing", f"{RULES}.inbox_failing"),
        "queue_stalled": ("Task queue not draining", f"{RULES}.queue_stalled"),
        "workflow_missed": ("Workflow missed its schedule", f"{RULES}.workflow_missed"),
        "unsealed_events": ("Audit events left unsealed", f"{RULES}.unsealed_events"),
        "smtp_unreachable": ("SMTP server unreachable", f"{RULES}.smtp_unreachable"),
        "emails_stuck_sending": (
            "Follow-up emails stuck in sending",
            f"{RULES}.emails_stuck_sending",
        ),
        "step_failures": ("Pipeline step failing (errors by stage)", f"{RULES}.step_failures"),
    },
)


def kind_choices() -> list[tuple[str, str]]:
    # Named in migrations (AlertRule.kind): keep the name.
    return RULE_KINDS.choices()


def register_rule_kind(
    kind: str, label: str, evaluator: str, *, schema: dict[str, Any], defaults: dict[str, Any]
) -> None:
    """A rule kind from another app: its evaluator's dotted path and its parameters."""
    SCHEMAS[kind] = schema
    DEFAULTS[kind] = defaults
    RULE_KINDS.register(kind, label, evaluator)


def evaluator(kind: str) -> Evaluator:
    """The rules.Evaluator for `kind`, imported on first use."""
    return RULE_KINDS.load(kind)


def _validator(kind: str) -> Draft202012Validator:
    schema = {"type": "object", "additionalProperties": False, **SCHEMAS[kind]}
    return Draft202012Validator(schema)


def errors(kind: str, params: Any) -> list[str]:
    """Messages naming each bad parameter; empty when the parameters are fine."""
    if kind not in SCHEMAS:
        return [f"unknown rule kind {kind!r}"]
    found = sorted(_validator(kind).iter_errors(params), key=lambda e: list(e.absolute_path))
    messages = []
    for error in found:
        where = "/".join(str(p) for p in error.absolute_path)
        messages.append(f"{where}: {error.message}" if where else error.message)
    return messages


def resolve(kind: str, params: Any) -> dict[str, Any]:
    """The defaults overlaid with `params`; ValueError if they do not validate."""
    problems = errors(kind, params)
    if problems:
        raise ValueError("; ".join(problems))
    return {**DEFAULTS[kind], **(params or {})}
