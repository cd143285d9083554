from django.db import models
from django.utils import timezone

PUBLIC_ID_PREFIX = "LEAD-"


class Lead(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        QUALIFIED = "qualified", "Qualified"
        NURTURE = "nurture", "Nurture"
        DISQUALIFIED = "disqualified", "Disqualified"

    # Null until the row has a primary key to derive it from (see lead_create);
    # imported leads may bring their own legacy id such as "LEAD-001".
    # NULL rather than "" so the unique constraint allows several rows mid-creation.
    public_id = models.CharField(  # noqa: DJ001
        max_length=32, unique=True, null=True, editable=False
    )
    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=200, blank=True)
    company = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status, default=Status.NEW)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["email"], name="lead_email"),
            models.Index(fields=["-created_at"], name="lead_created"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} <{self.email}>"

    @staticmethod
    def format_public_id(pk: int) -> str:
        return f"{PUBLIC_ID_PREFIX}{pk:06d}"
