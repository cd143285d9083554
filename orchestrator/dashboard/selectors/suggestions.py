"""What the event browser's free-text filters suggest: the names that exist.

Workflow and actor match exactly (an index each), so `sales` finds nothing when
the workflow is `sales_lead_management`; a datalist shows the real names. Taken
from the small tables that name them, never from the events (a DISTINCT over
tens of millions of rows per page view).
"""

from django.contrib.auth import get_user_model

from leads.models import ApiKey
from leads.workflows.models import Workflow

MAX_SUGGESTIONS = 200


def workflow_names() -> list[str]:
    return list(Workflow.objects.order_by("name").values_list("name", flat=True)[:MAX_SUGGESTIONS])


def actor_names() -> list[str]:
    """The actors events name: system, user:<username>, api:<key name>."""
    User = get_user_model()
    users = User.objects.filter(is_active=True).order_by(User.USERNAME_FIELD)
    usernames = users.values_list(User.USERNAME_FIELD, flat=True)[:MAX_SUGGESTIONS]
    keys = (
        ApiKey.objects.filter(revoked_at__isnull=True)
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()[:MAX_SUGGESTIONS]
    )
    return ["system", *(f"user:{u}" for u in usernames), *(f"api:{k}" for k in keys)]
