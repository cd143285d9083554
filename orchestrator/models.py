from django.db import models


class WorkerHeartbeat(models.Model):
    """Proof of life of one task worker (`manage.py run_worker`), read by /healthz.

    db_worker records nothing while idle, so without this a stopped worker
    looks the same as one with nothing to do.
    """

    worker_id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"worker {self.worker_id} on {self.hostname} seen {self.seen_at:%Y-%m-%d %H:%M:%S}"
