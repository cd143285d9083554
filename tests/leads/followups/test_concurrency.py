"""Four sender processes on one database never send an email twice."""

import os
import re
import subprocess
import sys

import pytest
from django.db.models import Count

from audit.models import AuditEvent
from leads.followups.models import OutboundEmail
from leads.followups.services import enroll
from tests.conftest import ROOT, database_url

N_EMAILS = 200
N_SENDERS = 4


def start_sender(port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
        "AUDIT_JSONL_PATH": "",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "send_followups", "--parallel"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_four_concurrent_senders_deliver_200_emails_exactly_once(smtp, make_lead, one_step):
    for _ in range(N_EMAILS):
        enroll(lead=make_lead(), sequence=one_step)

    # 200 x 20 ms keeps the first sender busy long enough for the others to start.
    smtp.recorder.data_delay = 0.02
    procs = [start_sender(smtp.port) for _ in range(N_SENDERS)]
    outs = [p.communicate(timeout=300) for p in procs]

    sent_by = []
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        match = re.search(r"sent (\d+)", out)
        sent_by.append(int(match[1]) if match else 0)
    assert sum(sent_by) == N_EMAILS, outs
    ids = smtp.recorder.message_ids()
    assert len(ids) == N_EMAILS
    assert len(set(ids)) == N_EMAILS
    assert set(ids) == set(OutboundEmail.objects.values_list("message_id", flat=True))
    assert OutboundEmail.objects.filter(status="sent").count() == N_EMAILS
    assert set(OutboundEmail.objects.values_list("attempts", flat=True)) == {1}
    per_email = (
        AuditEvent.objects.filter(event_type="email_sent")
        .values("details__message_id")
        .annotate(n=Count("id"))
    )
    assert len(per_email) == N_EMAILS
    assert {row["n"] for row in per_email} == {1}
    # Each process had its own claim token; more than one did real work.
    claimers = set(OutboundEmail.objects.values_list("claimed_by", flat=True))
    assert len(claimers) >= 2
