"""Who may see and do what in the dashboard.

Roles are Django groups (created by a migration): Auditors read, Operators
read and act on leads, superusers do everything. A logged-in user with no
role gets 403, not an empty dashboard: staff accounts are given roles on
purpose.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

AUDITOR = "Auditor"
OPERATOR = "Operator"
ROLES = (AUDITOR, OPERATOR)

View = Callable[..., HttpResponse]


def _roles(user: Any) -> set[str]:
    # Cached on the user object: a page checks the role once per widget.
    if not hasattr(user, "_dashboard_roles"):
        user._dashboard_roles = set(
            user.groups.filter(name__in=ROLES).values_list("name", flat=True)
        )
    return user._dashboard_roles


def can_view(user: Any) -> bool:
    return user.is_authenticated and user.is_active and (user.is_superuser or bool(_roles(user)))


def can_act(user: Any) -> bool:
    return (
        user.is_authenticated and user.is_active and (user.is_superuser or OPERATOR in _roles(user))
    )


def _guard(check: Callable[[Any], bool]) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                raise PermissionDenied("Your account has no dashboard role for this page.")
            return view(request, *args, **kwargs)

        wrapper.dashboard_guard = check.__name__
        return wrapper

    return decorator


# Every dashboard view wears one of these; tests walk the URL conf to check.
viewer_required = _guard(can_view)
operator_required = _guard(can_act)


def takes_posts(view: View) -> View:
    """Marks a viewer's view that answers a form's POST (a saved view), beside the
    operators' actions: the read-only method checks and the view benchmark, which
    walk the URL conf, leave it to its own tests."""
    view.takes_posts = True  # type: ignore[attr-defined]
    return view


def answers_posts(view: Any) -> bool:
    return getattr(view, "dashboard_guard", "") == "can_act" or getattr(view, "takes_posts", False)


def actor_for(request: HttpRequest) -> str:
    """The audit actor for what a dashboard user does."""
    return f"user:{request.user.get_username()}"
