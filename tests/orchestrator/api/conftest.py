import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache

from leads.intake.apikeys import api_key_create

EVENTS_URL = "/api/v1/events"
WRITER = "siem writer"
READER = "notebook"
# Inside the default period (the last 7 days) whenever the tests run.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


@pytest.fixture(autouse=True)
def _clear_cache(db):
    # Rate-limit counters live in the database cache, which no test rollback empties.
    cache.clear()


@pytest.fixture
def writer(db):
    return api_key_create(name=WRITER, scopes=["events:write"])[1]


@pytest.fixture
def reader(db):
    return api_key_create(name=READER, scopes=["events:read"])[1]


def auth(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def event(n: int = 0, **fields) -> dict:
    """A valid legacy line, `n` seconds after BASE."""
    return {
        "timestamp": (BASE + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
        "event_type": "lead_ingested",
        "actor": "system",
        "lead_id": f"LEAD-{n:06d}",
        "details": {"n": n},
        **fields,
    }


def jsonl(*items) -> bytes:
    return b"\n".join(i if isinstance(i, bytes) else json.dumps(i).encode() for i in items)


def post_events(client, body, raw_key=None, *, content_type="application/json", **headers):
    if raw_key:
        headers.update(auth(raw_key))
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(EVENTS_URL, data, content_type=content_type, headers=headers)
