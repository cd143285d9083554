"""A full disk, for real: the lead API answers JSON 503 and keeps nothing it did
not acknowledge, and /healthz says the database refuses writes, not "ok".

SQLite: the connection's max_page_count pinned at the file's size, which makes
SQLite fail exactly as on a full disk (SQLITE_FULL). PostgreSQL: the leads table
moved to a tablespace on a 1 MB tmpfs filled to the brim (mounting needs root,
as the CI machines run).
"""

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from leads.intake.apikeys import api_key_create
from leads.models import Lead
from orchestrator.monitoring.heartbeat import beat

API_URL = reverse("leads:api-leads")
TOKEN = "monitor-token-for-tests"


@contextlib.contextmanager
def sqlite_full() -> Iterator[None]:
    with connection.cursor() as cursor:
        # Pages freed by earlier tests would be reused without growing the
        # file: give them back first, so that the pinned size is really full.
        cursor.execute("VACUUM")
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute("PRAGMA max_page_count")
        before = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA max_page_count = {before}")


@contextlib.contextmanager
def postgresql_full() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the CI machines run as root)")
    mount = tempfile.mkdtemp(prefix="full-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], check=True)
    space = f"full_disk_{os.getpid()}"
    table = Lead._meta.db_table
    try:
        # The server process owns its tablespaces (the test cluster runs as postgres).
        subprocess.run(["chown", "postgres", mount], check=True)
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLESPACE {space} LOCATION %s", [mount])
            cursor.execute(f"ALTER TABLE {table} SET TABLESPACE {space}")
            # Fill the disk: a throwaway table in the same tablespace, grown
            # until the server says the disk is full. The failed INSERT rolls
            # back, but the pages it took stay allocated: the disk stays full.
            cursor.execute(f"CREATE TABLE filler (x text) TABLESPACE {space}")
            with contextlib.suppress(Exception):
                cursor.execute(
                    "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 100000)"
                )
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS filler")
            cursor.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
            cursor.execute(f"DROP TABLESPACE IF EXISTS {space}")
        subprocess.run(["umount", mount], check=True)
        os.rmdir(mount)


def healthz(client) -> dict:
    response = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    return {**response.json(), "code": response.status_code}


@pytest.mark.django_db(transaction=True)
def test_a_full_disk_is_a_json_503_nothing_half_kept_and_healthz_says_so(
    client, settings, web_source
):
    settings.HEALTHZ_TOKEN = TOKEN
    settings.LEADS_API_RATE = "100000/m"  # the posts below fill the disk, not the quota
    cache.clear()
    beat(worker_id="w1", started_at=timezone.now())
    _, raw_key = api_key_create(source=web_source, name="form")

    def post(n: int):
        return client.post(
            API_URL,
            json.dumps({"email": f"lead{n}@example.com", "notes": "x" * 2000}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {raw_key}"},
        )

    assert post(0).status_code == 201
    assert healthz(client)["code"] == 200
    full = sqlite_full if connection.vendor == "sqlite" else postgresql_full
    with full():
        # Writes that still fit in a page succeed; keep going until one does not.
        for n in range(1, 200):
            response = post(n)
            if response.status_code != 201:
                break
        assert response.status_code == 503, response.content
        assert response["Content-Type"] == "application/json"
        assert response.headers["Retry-After"] == str(settings.LEADS_RETRY_AFTER_SECONDS)
        assert "nothing was kept" in response.json()["errors"]["non_field_errors"][0]
        # Everything acknowledged is there, and nothing of the refused one.
        emails = set(Lead.objects.values_list("email", flat=True))
        assert emails == {f"lead{i}@example.com" for i in range(n)}

        health = healthz(client)
        assert health["code"] == 503
        database = health["checks"]["database"]
        assert database["ok"] is False and database["writable"] is False
        if connection.vendor == "sqlite":
            assert database["error"] == "database refuses writes (database full (max_page_count))"
        else:
            assert database["error"].startswith("the last write was refused ")
            assert database["error"].endswith(" s ago (disk full)")

    # Space again: the sender's retry is stored once, and health comes back.
    assert post(n).status_code == 201
    assert Lead.objects.filter(email=f"lead{n}@example.com").count() == 1
    assert healthz(client)["code"] == 200


@pytest.mark.django_db
def test_sqlite_with_too_little_free_space_is_unwritable(client, settings):
    if connection.vendor != "sqlite":
        pytest.skip("free space is measured for SQLite only (PostgreSQL's disk is the server's)")
    settings.HEALTHZ_TOKEN = TOKEN
    beat(worker_id="w1", started_at=timezone.now())
    disk = os.statvfs(os.path.dirname(str(connection.settings_dict["NAME"])) or ".")
    free_mb = disk.f_bavail * disk.f_frsize // 2**20
    settings.HEALTHZ_MIN_FREE_MB = free_mb + 1024
    database = healthz(client)["checks"]["database"]
    assert database["writable"] is False
    assert database["error"].startswith("database refuses writes (disk nearly full (")
    settings.HEALTHZ_MIN_FREE_MB = max(free_mb - 1024, 0)
    assert healthz(client)["checks"]["database"] == {"ok": True, "writable": True}
