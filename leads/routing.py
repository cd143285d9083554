"""Routing: which team and owner a lead goes to (config "routing")."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F

from leads.conditions import matches
from leads.models import Lead, Team


@dataclass
class Route:
    rule: str
    team: Team | None
    owner: AbstractBaseUser | None

    @property
    def destination(self) -> str:
        if self.owner is not None:
            return self.owner.get_username()
        return "unassigned"


def smooth_cycle(weights: list[int]) -> list[int]:
    """One full round of smooth weighted round robin: indexes, interleaved by weight.

    Weights 2, 1, 1 give [0, 1, 2, 0] rather than [0, 0, 1, 2], so a heavy
    owner's leads are spread out instead of arriving in bursts.
    """
    current = [0] * len(weights)
    total = sum(weights)
    order = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def next_owner(team: Team) -> AbstractBaseUser | None:
    """The owner whose turn it is in the team, skipping inactive members and users.

    The team row is locked while the turn is taken (SQLite serializes writers
    anyway), so two workers never hand out the same turn.
    """
    with transaction.atomic():
        locked = Team.objects.select_for_update().filter(pk=team.pk, active=True).first()
        if locked is None:
            return None
        members = list(
            locked.members.filter(active=True, weight__gt=0, user__is_active=True)
            .select_related("user")
            .order_by("id")
        )
        if not members:
            return None
        cycle = smooth_cycle([m.weight for m in members])
        pick = members[cycle[locked.rr_counter % len(cycle)]]
        Team.objects.filter(pk=locked.pk).update(rr_counter=F("rr_counter") + 1)
        return pick.user


def _active_user(username: str) -> AbstractBaseUser | None:
    User = get_user_model()
    return User.objects.filter(**{User.USERNAME_FIELD: username, "is_active": True}).first()


def choose_route(lead: Lead, config: Mapping[str, Any]) -> Route:
    """The first rule that matches and can deliver wins; then the default team, then the
    fallback owner. A rule whose owner is inactive or whose team has nobody active is
    passed over rather than leaving the lead with nobody."""
    for rule in config.get("rules", []):
        if not matches(rule.get("when"), lead):
            continue
        team = Team.objects.filter(slug=rule["team"]).first() if rule.get("team") else None
        if rule.get("owner"):
            owner = _active_user(rule["owner"])
            if owner is not None:
                return Route(rule["name"], team, owner)
            continue
        if team is not None and (owner := next_owner(team)) is not None:
            return Route(rule["name"], team, owner)
    if config.get("default_team"):
        team = Team.objects.filter(slug=config["default_team"]).first()
        if team is not None and (owner := next_owner(team)) is not None:
            return Route("default team", team, owner)
    if config.get("fallback_owner"):
        owner = _active_user(config["fallback_owner"])
        if owner is not None:
            return Route("fallback owner", None, owner)
    return Route("no route", None, None)
