from django.apps import AppConfig


class FollowupsConfig(AppConfig):
    name = "leads.followups"
    label = "followups"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Email follow-ups"

    def ready(self) -> None:
        from leads.followups import events
        from leads.intake.inbox import register_handler
        from leads.workflows.steps import register_step

        register_step(
            "email_sequence",
            "leads.followups.steps.EmailSequenceStep",
            "Enroll in a follow-up sequence",
        )
        # In this order, ahead of the lead parser: a bounce may quote our
        # Message-ID, and neither a bounce nor a reply may become a lead.
        register_handler("bounce", "Bounce", "leads.followups.inbox.handle_bounce")
        register_handler("reply", "Reply", "leads.followups.inbox.handle_reply")
        register_handler(
            "unsubscribe", "Unsubscribe by mail", "leads.followups.inbox.handle_unsubscribe_mail"
        )
        events.register()
