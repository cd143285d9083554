"""Exports too large to stream: a job writes the file, the page offers it when ready."""

import csv
import io
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command
from django.db.models import F
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import record_event
from orchestrator.models import ExportJob
from tests.conftest import HTMX, _user_with_role

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def small_limit(settings, tmp_path):
    settings.EXPORT_STREAM_MAX_EVENTS = 5
    settings.EXPORT_DIR = str(tmp_path / "exports")
    # The task runs when the export's transaction commits (the callbacks below).
    settings.TASKS = {
        "default": {
            "BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
            "QUEUES": ["default"],
        }
    }


def events(n: int, **kwargs) -> list[AuditEvent]:
    return [
        record_event(
            event_type="lead_ingested",
            workflow="sales",
            timestamp=NOW - timedelta(minutes=i + 1),
            **kwargs,
        )
        for i in range(n)
    ]


PENDING: list = []


def export(client, capture, **params):
    """The export; its commit callbacks (enqueueing the task) wait for run_queued_tasks."""
    with capture() as callbacks:
        response = client.get(reverse("event-export"), params)
    PENDING[:] = callbacks
    return response


def run_queued_tasks() -> None:
    for callback in PENDING:
        callback()
    PENDING.clear()


def test_a_large_export_runs_as_a_job_and_is_offered_when_done(
    auditor_client, auditor, django_capture_on_commit_callbacks
):
    wanted = events(7, actor="user:alice")
    events(3, actor="user:bob")  # filtered out
    response = export(
        auditor_client, django_capture_on_commit_callbacks, format="jsonl", actor="user:alice"
    )
    # Not a truncated 200 stream: a redirect to the exports page.
    assert response.status_code == 302
    assert response["Location"] == reverse("event-exports")
    job = ExportJob.objects.get()
    assert (job.user, job.format, job.status) == (auditor, "jsonl", "queued")
    audits = AuditEvent.objects.filter(event_type="audit_exported")
    assert audits.count() == 1
    assert audits.get().details["job"] == job.pk
    assert audits.get().details["filters"] == {"actor": "user:alice"}
    page = auditor_client.get(reverse("event-exports"))
    assert b'data-status="queued"' in page.content
    assert b"export-download" not in page.content

    run_queued_tasks()

    job.refresh_from_db()
    assert job.status == "done", job.error
    assert job.row_count == 7
    with open(job.file_path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    # Exactly the filtered events, newest first, as the stream would have them.
    assert [line["event_id"] for line in lines] == [str(e.uuid) for e in wanted]
    page = auditor_client.get(reverse("event-exports"))
    download_url = reverse("event-export-download", kwargs={"job_id": job.pk})
    assert download_url.encode() in page.content
    download = auditor_client.get(download_url)
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    assert b"".join(download.streaming_content).decode().count("\n") == 7
    # Still one audit event for the export: the task and the download add none.
    assert AuditEvent.objects.filter(event_type="audit_exported").count() == 1


def test_a_csv_job_holds_a_header_and_every_row(auditor_client, django_capture_on_commit_callbacks):
    wanted = events(6)
    export(auditor_client, django_capture_on_commit_callbacks, format="csv")
    run_queued_tasks()
    job = ExportJob.objects.get()
    assert (job.status, job.row_count) == ("done", 6)
    with open(job.file_path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["event_id"] for r in rows] == [str(e.uuid) for e in wanted]


def test_another_auditor_gets_404_but_a_superuser_may_download(
    client, auditor_client, django_user_model, django_capture_on_commit_callbacks
):
    events(6)
    export(auditor_client, django_capture_on_commit_callbacks, format="jsonl")
    run_queued_tasks()
    job = ExportJob.objects.get()
    url = reverse("event-export-download", kwargs={"job_id": job.pk})

    other = _user_with_role(django_user_model, "other-auditor", "Auditor")
    client.force_login(other)
    assert client.get(url).status_code == 404
    assert f'data-job-id="{job.pk}"'.encode() not in client.get(reverse("event-exports")).content

    admin = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(admin)
    assert client.get(url).status_code == 200


def test_htmx_export_redirects_the_page_and_the_list_polls_while_pending(
    auditor_client, django_capture_on_commit_callbacks
):
    events(6)
    with django_capture_on_commit_callbacks():  # the task stays queued
        response = auditor_client.get(reverse("event-export"), {"format": "csv"}, **HTMX)
    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("event-exports")
    fragment = auditor_client.get(reverse("event-exports"), **HTMX, HTTP_HX_TARGET="export-jobs")
    assert fragment.content.lstrip().startswith(b'<section class="panel" id="export-jobs"')
    assert b'hx-trigger="every 5s"' in fragment.content


def test_at_the_limit_the_export_still_streams(auditor_client, django_capture_on_commit_callbacks):
    events(5)
    response = export(auditor_client, django_capture_on_commit_callbacks, format="jsonl")
    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content).decode().count("\n") == 5
    assert not ExportJob.objects.exists()
    audit = AuditEvent.objects.get(event_type="audit_exported")
    assert "job" not in audit.details


def test_a_download_of_an_unfinished_job_is_404(auditor_client, django_capture_on_commit_callbacks):
    events(6)
    with django_capture_on_commit_callbacks():
        auditor_client.get(reverse("event-export"), {"format": "csv"})
    job = ExportJob.objects.get()
    url = reverse("event-export-download", kwargs={"job_id": job.pk})
    assert auditor_client.get(url).status_code == 404


def test_a_path_or_format_planted_in_the_database_never_serves_another_file(
    auditor_client, django_capture_on_commit_callbacks, tmp_path
):
    from django.db import connection

    secret = tmp_path / "orchestrator.env"
    secret.write_text("AUDIT_SIGNING_KEY=stolen\n")
    events(6)
    export(auditor_client, django_capture_on_commit_callbacks, format="jsonl")
    run_queued_tasks()
    job = ExportJob.objects.get()
    url = reverse("event-export-download", kwargs={"job_id": job.pk})
    table = ExportJob._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET file_path = %s WHERE id = %s", [str(secret), job.pk])
    body = b"".join(auditor_client.get(url).streaming_content)
    assert b"stolen" not in body and body.count(b"\n") == 6  # still the export itself
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET format = %s WHERE id = %s", ["../../x", job.pk])
    assert auditor_client.get(url).status_code == 404


# --- Jobs left behind, and retention (cleanup_exports) --------------------------------


def queued_job(auditor_client, capture) -> ExportJob:
    """An export job whose task was never run (as if the enqueue was lost)."""
    events(6)
    export(auditor_client, capture, format="jsonl")
    PENDING.clear()
    return ExportJob.objects.get()


def cleanup() -> str:
    out = io.StringIO()
    call_command("cleanup_exports", stdout=out)
    return out.getvalue()


def test_a_job_whose_worker_was_killed_is_handed_to_another_and_finishes(
    auditor_client, django_capture_on_commit_callbacks, clock, settings
):
    job = queued_job(auditor_client, django_capture_on_commit_callbacks)
    # What a worker killed mid-write leaves: the job claimed, a half-written file.
    ExportJob.objects.filter(pk=job.pk).update(status="running", attempts=1, progress_at=NOW)
    exports = Path(settings.EXPORT_DIR)
    exports.mkdir(parents=True)
    part = exports / "tmpabc123.part"
    part.write_text('{"event_id": "half')
    os.utime(part, (NOW.timestamp(), NOW.timestamp()))

    # Not yet stale: a slow writer is left alone.
    clock.move_to(NOW + timedelta(seconds=settings.EXPORT_STALE_SECONDS - 1))
    assert "0 queued again" in cleanup()
    assert ExportJob.objects.get().status == "running"
    assert part.exists()

    clock.move_to(NOW + timedelta(seconds=settings.EXPORT_STALE_SECONDS + 1))
    assert "1 queued again" in cleanup()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.row_count) == ("done", 2, 6), job.error
    assert not part.exists()
    assert sorted(p.name for p in exports.iterdir()) == [f"audit-events-{job.pk}.jsonl"]


def test_a_job_whose_enqueue_was_lost_is_enqueued_again(
    auditor_client, django_capture_on_commit_callbacks, clock, settings
):
    job = queued_job(auditor_client, django_capture_on_commit_callbacks)
    assert cleanup().startswith("Exports: 0 queued again")
    clock.shift(timedelta(seconds=settings.EXPORT_STALE_SECONDS + 1))
    cleanup()
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("done", 1)


def test_a_job_abandoned_max_attempts_times_fails_with_the_reason(
    auditor_client, django_capture_on_commit_callbacks, clock, settings
):
    job = queued_job(auditor_client, django_capture_on_commit_callbacks)
    ExportJob.objects.filter(pk=job.pk).update(
        status="running", attempts=settings.EXPORT_MAX_ATTEMPTS, progress_at=NOW
    )
    clock.shift(timedelta(seconds=settings.EXPORT_STALE_SECONDS + 1))
    assert "1 failed after 3 attempts" in cleanup()
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "abandoned: its worker stopped 3 times while writing it"
    page = auditor_client.get(reverse("event-exports"))
    assert b'data-status="failed"' in page.content and b"abandoned" in page.content
    assert b'hx-trigger="every 5s"' not in page.content  # nothing pending to poll for


def test_a_writer_taken_for_dead_stops_without_touching_the_new_owners_file(
    auditor_client, django_capture_on_commit_callbacks, monkeypatch, settings
):
    from orchestrator.dashboard import exports

    job = queued_job(auditor_client, django_capture_on_commit_callbacks)
    real = exports.matching_events

    def taken_over_midway(*args, **kwargs):
        for n, event in enumerate(real(*args, **kwargs)):
            if n == 2:
                # cleanup_exports requeued it and another worker claimed it.
                ExportJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1)
            yield event

    monkeypatch.setattr(exports, "matching_events", taken_over_midway)
    monkeypatch.setattr(exports, "PROGRESS_EVERY_ROWS", 1)
    exports.write_export_file.call(job.pk)
    job.refresh_from_db()
    # Still the new owner's: running, attempt 2, no file from the old writer.
    assert (job.status, job.attempts, job.finished_at) == ("running", 2, None)
    assert list(Path(settings.EXPORT_DIR).iterdir()) == []


def test_finished_exports_are_deleted_after_the_retention_with_their_files(
    auditor_client, django_capture_on_commit_callbacks, clock, settings
):
    events(6)
    export(auditor_client, django_capture_on_commit_callbacks, format="jsonl")
    run_queued_tasks()
    old = ExportJob.objects.get()
    clock.shift(timedelta(days=2))
    export(auditor_client, django_capture_on_commit_callbacks, format="csv")
    run_queued_tasks()
    recent = ExportJob.objects.latest("pk")
    exports = Path(settings.EXPORT_DIR)
    stranger = exports / "README.txt"  # not this code's file: never touched
    stranger.write_text("kept")
    orphan = exports / "audit-events-999.csv"  # a file whose row someone deleted
    orphan.write_text("x")
    os.utime(orphan, (NOW.timestamp(), NOW.timestamp()))

    page = auditor_client.get(reverse("event-exports"))
    assert b"deleted after 7 days" in page.content
    assert (old.finished_at + timedelta(days=7)).strftime("%Y-%m-%d %H:%M").encode() in page.content

    clock.move_to(old.finished_at + timedelta(days=settings.EXPORT_RETENTION_DAYS, seconds=1))
    assert "1 expired, 2 files removed" in cleanup()
    assert list(ExportJob.objects.values_list("pk", flat=True)) == [recent.pk]
    assert sorted(p.name for p in exports.iterdir()) == [
        "README.txt",
        f"audit-events-{recent.pk}.csv",
    ]
    url = reverse("event-export-download", kwargs={"job_id": old.pk})
    assert auditor_client.get(url).status_code == 404


def test_cleanup_exports_without_an_export_folder_does_nothing(settings):
    assert (
        cleanup()
        == "Exports: 0 queued again, 0 failed after 3 attempts, 0 expired, 0 files removed.\n"
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_writes_the_export_and_takes_over_one_abandoned(
    auditor_client, settings, clock
):
    """Through the database queue and `manage.py run_worker`, not the immediate backend."""
    from tests.conftest import worker_process

    settings.TASKS = {
        "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}
    }
    events(6)
    with worker_process("export-test", env={"EXPORT_DIR": settings.EXPORT_DIR}) as worker:
        response = auditor_client.get(reverse("event-export"), {"format": "csv"})
        assert response.status_code == 302
        first = ExportJob.objects.get()
        # An export whose worker was killed mid-write, long ago.
        abandoned = ExportJob.objects.create(
            user=first.user,
            format="jsonl",
            filters=first.filters,
            status="running",
            attempts=1,
            progress_at=NOW - timedelta(hours=1),
        )
        cleanup()
        deadline = time.monotonic() + 60
        while ExportJob.objects.exclude(status="done").exists():
            assert time.monotonic() < deadline, list(ExportJob.objects.values())
            time.sleep(0.2)
        assert worker.stop() == 0
    first.refresh_from_db()
    abandoned.refresh_from_db()
    assert (first.row_count, first.attempts) == (6, 1)
    assert (abandoned.row_count, abandoned.attempts) == (6, 2)
    with open(abandoned.file_path, encoding="utf-8") as handle:
        assert len(handle.readlines()) == 6


def test_the_task_handed_back_after_its_worker_died_takes_the_running_job_over(
    auditor_client, django_capture_on_commit_callbacks, clock, settings
):
    """reclaim_abandoned runs the task again; the job it finds is still "running"."""
    from orchestrator.dashboard.exports import write_export_file

    job = queued_job(auditor_client, django_capture_on_commit_callbacks)
    ExportJob.objects.filter(pk=job.pk).update(status="running", attempts=1, progress_at=NOW)
    # Within a heartbeat's grace its writer may be alive: left alone.
    clock.shift(timedelta(seconds=settings.HEALTHZ_WORKER_MAX_AGE_SECONDS - 1))
    write_export_file.call(job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("running", 1)
    clock.shift(timedelta(seconds=2))
    write_export_file.call(job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.row_count) == ("done", 2, 6)
