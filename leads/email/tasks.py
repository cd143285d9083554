from django.tasks import task

from audit.services import audit_context


@task()
def send_due_emails(limit: int = 100) -> dict[str, int]:
    """Send up to `limit` due follow-ups (the same work as `manage.py send_followups`)."""
    from leads.email.services import send_due

    with audit_context(actor="system"):
        summary = send_due(limit=limit)
    return dict(summary.counts)
