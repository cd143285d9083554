from django.db import models


class CommandLock(models.Model):
    """A lease that keeps two runs of one scheduled command from overlapping.

    It lives in the database rather than in a file so that it also holds
    between machines sharing one database.
    """

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        # Created by the project app before locks moved here (state-only move).
        db_table = "orchestrator_commandlock"

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
