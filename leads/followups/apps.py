from django.apps import AppConfig


class FollowupsConfig(AppConfig):
    name = "leads.followups"
    label = "followups"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Email follow-ups"

    def ready(self) -> None:
        from leads.intake.inbox import register_handler
        from leads.workflows.steps import register_step

        register_step("email_sequence", "leads.followups.steps.EmailSequenceStep")
        # In this order, ahead of the lead parser: a bounce may quote our
        # Message-ID, and neither a bounce nor a reply may become a lead.
        register_handler("leads.followups.inbox.handle_bounce")
        register_handler("leads.followups.inbox.handle_reply")
        register_handler("leads.followups.inbox.handle_unsubscribe_mail")
