"""import_audit_log --follow: a legacy log still being written, through its rotations,
with nothing lost and nothing doubled, across restarts and SIGKILL."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.follow import Follower
from audit.models import AuditEvent, ImportPosition
from audit.transfer import legacy_event_uuid

ROOT = Path(__file__).resolve().parents[2]


class LegacyLog:
    """A log as the legacy logger writes it: one JSON line per event, appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written: list[dict] = []

    def write(self, n: int, *, newline: bool = True) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            for _ in range(n):
                i = len(self.written)
                line = {
                    "timestamp": f"2026-02-04T10:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z",
                    "event_type": "lead_ingested",
                    "actor": "system",
                    "lead_id": f"LEAD-{i:04d}",
                    "workflow": "sales",
                    "details": {"n": i},
                }
                self.written.append(line)
                out.write(json.dumps(line) + "\n")

    def rename_rotate(self, *, gzip_it: bool = False) -> None:
        """logrotate's default: rename to .1 (older ones shifted), a new empty file."""
        for old in sorted(self.path.parent.glob(self.path.name + ".*"), reverse=True):
            n = int(old.name.split(".")[-2 if old.suffix == ".gz" else -1])
            old.rename(old.with_name(old.name.replace(f".{n}", f".{n + 1}", 1)))
        rotated = self.path.with_name(self.path.name + ".1")
        self.path.rename(rotated)
        if gzip_it:
            with open(rotated, "rb") as src, gzip.open(str(rotated) + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            rotated.unlink()
        self.path.touch()

    def copytruncate(self) -> None:
        shutil.copy(self.path, self.path.with_name(self.path.name + ".1"))
        with open(self.path, "r+b") as f:
            f.truncate(0)

    def expected_ids(self) -> set:
        return {legacy_event_uuid(line) for line in self.written}


def imported_events():
    return AuditEvent.objects.exclude(event_type="audit_imported")


def stored_ids() -> set:
    return set(imported_events().values_list("uuid", flat=True))


def assert_exactly_once(log: LegacyLog) -> None:
    stored = stored_ids()
    assert stored == log.expected_ids(), (
        f"missing {len(log.expected_ids() - stored)}, extra {len(stored - log.expected_ids())}"
    )
    assert imported_events().count() == len(log.written)


@pytest.fixture
def legacy(tmp_path) -> LegacyLog:
    return LegacyLog(tmp_path / "audit.log")


@pytest.mark.django_db
def test_appends_are_imported_and_a_line_being_written_waits(legacy):
    legacy.write(3)
    follower = Follower(legacy.path)
    assert follower.poll() == 3
    assert follower.poll() == 0
    with open(legacy.path, "a") as out:
        out.write('{"timestamp": "2026-02-04T11:00:00Z", "event_type": "email_')
    assert follower.poll() == 0  # half a line is not a line yet
    with open(legacy.path, "a") as out:
        out.write('sent", "lead_id": "LEAD-9"}\n')
    assert follower.poll() == 1
    assert AuditEvent.objects.filter(event_type="email_sent", lead_public_id="LEAD-9").exists()
    assert ImportPosition.objects.get().offset == legacy.path.stat().st_size


@pytest.mark.django_db
@pytest.mark.parametrize("gzip_it", [False, True])
def test_rename_rotation_loses_nothing(legacy, gzip_it):
    legacy.write(5)
    follower = Follower(legacy.path)
    follower.poll()
    legacy.write(4)  # written before the rotation, not yet read
    legacy.rename_rotate(gzip_it=gzip_it)
    legacy.write(3)
    follower.poll()
    follower.poll()
    assert_exactly_once(legacy)


@pytest.mark.django_db
def test_copytruncate_loses_nothing_even_when_the_file_regrew_past_the_offset(legacy):
    legacy.write(5)
    follower = Follower(legacy.path)
    follower.poll()
    legacy.write(4)  # only in the copy after the truncation
    legacy.copytruncate()
    legacy.write(12)  # longer than what was read: the size alone would not tell
    follower.poll()
    follower.poll()
    assert_exactly_once(legacy)


@pytest.mark.django_db
def test_a_follower_stopped_across_two_rotations_and_gzip_catches_up(legacy):
    legacy.write(5)
    first = Follower(legacy.path)
    first.poll()
    first.close()
    # While no follower runs: more lines, rotated and compressed, twice over.
    legacy.write(3)
    legacy.rename_rotate(gzip_it=True)
    time.sleep(0.01)  # distinct mtimes, as rotations a day apart have
    legacy.write(4)
    legacy.rename_rotate(gzip_it=True)
    time.sleep(0.01)
    legacy.write(2)
    again = Follower(legacy.path)
    again.poll()
    assert_exactly_once(legacy)
    assert again.report.already_present == 0  # resumed, not re-read


@pytest.mark.django_db
def test_bad_lines_are_reported_with_their_place_and_following_goes_on(legacy, caplog):
    legacy.write(1)
    with open(legacy.path, "a") as out:
        out.write("not json\n")
    legacy.write(1)
    follower = Follower(legacy.path)
    assert follower.poll() == 2
    (bad,) = follower.report.bad
    assert bad.path.endswith("audit.log@" + str(len(json.dumps(legacy.written[0])) + 1))
    assert "not valid JSON" in bad.reason


def _start(path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "import_audit_log", "--follow", str(path), "--poll", "0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_count(n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while AuditEvent.objects.exclude(event_type="audit_imported").count() < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{AuditEvent.objects.count()} of {n}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_stream_then_restart_then_sigterm(legacy):
    from tests.conftest import database_url

    env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1"}
    legacy.write(3000)
    proc = _start(legacy.path, env)
    try:
        _wait_for_count(1, proc)
        proc.send_signal(signal.SIGKILL)  # somewhere in the middle of the batches
        proc.wait(timeout=30)
        legacy.write(500)
        legacy.rename_rotate(gzip_it=True)
        legacy.write(200)
        proc = _start(legacy.path, env)
        _wait_for_count(3700, proc)
        legacy.write(50)
        _wait_for_count(3750, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Following" in out and "imported" in out
    imported = AuditEvent.objects.filter(event_type="audit_imported")
    assert imported.count() == 1  # the second run's summary; the killed one wrote none
    AuditEvent.objects.filter(event_type="audit_imported").count()
    legacy_ids = legacy.expected_ids()
    stored = set(
        AuditEvent.objects.exclude(event_type="audit_imported").values_list("uuid", flat=True)
    )
    assert stored == legacy_ids
    assert AuditEvent.objects.exclude(event_type="audit_imported").count() == 3750


@pytest.mark.django_db
def test_follow_takes_one_file(tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--follow takes exactly one file"):
        call_command("import_audit_log", "--follow", str(tmp_path / "a"), str(tmp_path / "b"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_one_shot_import_killed_midway_and_run_again_has_no_gap_and_no_double(legacy):
    from tests.conftest import database_url

    env = {**os.environ, "DATABASE_URL": database_url()}
    legacy.write(20_000)
    command = [sys.executable, "manage.py", "import_audit_log", str(legacy.path), "--no-progress"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while AuditEvent.objects.count() < 4000:  # a few batches in
            assert proc.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    partial = AuditEvent.objects.count()
    assert 0 < partial < 20_000
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{20_000 - partial} imported, {partial} already present, 0 bad." in rerun.stdout
    assert_exactly_once(legacy)
