"""Login throttling for the dashboard and the admin (django-ratelimit counters).

Failed logins are counted per account and per client IP (core.http.client_ip,
so behind the proxy each visitor has their own count). Once either count is
spent, the login form refuses to check the password at all until the window
ends, so guessing stays slow whatever the attacker's address or target.
Refused attempts are logged, not audited: a script would flood the trail;
every failure that was checked is audited (audit.services.record_login_failed).
"""

import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest
from django_ratelimit.core import get_usage

from core.http import client_ip

log = logging.getLogger(__name__)

THROTTLED = (
    "Too many failed logins for this account or from this address; "
    "try again in %(minutes)s minutes."
)


def _account(username: object) -> str:
    return str(username or "").strip().lower()[:150]


def _usages(request: HttpRequest, username: object, *, increment: bool) -> list[dict[str, Any]]:
    account = _account(username)
    usages = [
        get_usage(
            request,
            group="login-account",
            key=lambda group, req: account,
            rate=settings.LOGIN_FAILURES_PER_ACCOUNT,
            increment=increment,
        ),
        get_usage(
            request,
            group="login-ip",
            key=lambda group, req: client_ip(req),
            rate=settings.LOGIN_FAILURES_PER_IP,
            increment=increment,
        ),
    ]
    return [usage for usage in usages if usage]


def throttled_for(request: HttpRequest, username: object) -> int:
    """Seconds until this account and address may try again; 0 when they may now."""
    # A count equal to the limit is spent: the next failure would go over it.
    spent = [u for u in _usages(request, username, increment=False) if u["count"] >= u["limit"]]
    return max((u["time_left"] + 1 for u in spent), default=0)


def count_failure(
    sender: Any = None,
    *,
    credentials: dict[str, Any],
    request: HttpRequest | None = None,
    **kwargs: Any,
) -> None:
    """Receiver of user_login_failed: one more failure for the account and the address."""
    if request is not None:
        _usages(request, credentials.get("username"), increment=True)


class ThrottleMixin(forms.Form):
    request: HttpRequest | None
    # Set when this submission was refused unchecked (the template says so).
    throttled = False

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if self.request is not None and username:
            wait = throttled_for(self.request, username)
            if wait:
                self.throttled = True
                log.warning(
                    "login refused unchecked: %r from %s, %ss left",
                    _account(username),
                    client_ip(self.request),
                    wait,
                )
                raise forms.ValidationError(
                    THROTTLED, code="throttled", params={"minutes": max(1, -(-wait // 60))}
                )
        return super().clean()


class ThrottledAuthenticationForm(ThrottleMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottleMixin, AdminAuthenticationForm):
    pass
