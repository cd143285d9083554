"""Email follow-up sequences: enrollment, sending, stopping, engagement tracking."""
