"""The workflow runs page: runs newest first, filters, paging, links to their events."""

import html as htmllib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.urls import reverse

from audit.models import AuditEvent
from leads.workflows.models import Workflow, WorkflowRun
from leads.workflows.runner import run_pass
from tests.conftest import HTMX

NOW = datetime(2026, 6, 10, 14, 30, tzinfo=UTC)
ROW = re.compile(r'<tr class="run-row" data-run-id="(\d+)" data-status="(\w+)"')


@pytest.fixture
def now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def make_run(workflow, *, hours_ago, status="succeeded", **fields):
    started = NOW - timedelta(hours=hours_ago)
    fields.setdefault("finished_at", started + timedelta(seconds=12.5))
    return WorkflowRun.objects.create(
        workflow=workflow,
        started_at=started,
        status=status,
        correlation_id=f"corr-{workflow.name}-{hours_ago}",
        **fields,
    )


@pytest.fixture
def runs(db):
    sales = Workflow.objects.create(name="sales")
    support = Workflow.objects.create(name="support")
    return {
        "old": make_run(sales, hours_ago=24 * 10),
        "s1": make_run(sales, hours_ago=30, counts={"processed": 5, "qualified": 2, "errors": 1}),
        "s2": make_run(sales, hours_ago=3, status="interrupted", error="the runner <stopped>"),
        "p1": make_run(support, hours_ago=2),
        "p2": make_run(support, hours_ago=1, status="running", finished_at=None),
    }


def links(html: str, cls: str) -> list[dict[str, list[str]]]:
    return [
        parse_qs(urlsplit(htmllib.unescape(href)).query)
        for href in re.findall(rf'<a class="{cls}" href="([^"]+)"', html)
    ]


def test_runs_newest_first_with_counts_and_links(auditor_client, runs, now):
    response = auditor_client.get(reverse("workflow-runs"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="workflow-runs"' in html and "<html" in html
    expected = ["p2", "p1", "s2", "s1"]  # "old" is outside the last 7 days
    assert [pk for pk, _ in ROW.findall(html)] == [str(runs[k].pk) for k in expected]
    assert [status for _, status in ROW.findall(html)] == [
        "running",
        "succeeded",
        "interrupted",
        "succeeded",
    ]
    events = links(html, "run-events")
    assert [q["correlation"] for q in events] == [[runs[k].correlation_id] for k in expected]
    # From the run's start (the steps it enqueued may run days later).
    assert events[-1]["range"] == ["custom"]
    assert events[-1]["since"] == [
        (runs["s1"].started_at - timedelta(minutes=1)).isoformat(timespec="minutes")
    ]
    errors = links(html, "run-errors")
    assert errors == [
        {
            "correlation": [runs["s1"].correlation_id],
            "type": ["error"],
            "range": ["custom"],
            "since": events[-1]["since"],
            "until": ["2026-06-10"],
        }
    ]
    assert "12.5 s" in html
    assert "the runner &lt;stopped&gt;" in html


def test_filter_by_workflow_and_status(auditor_client, runs, now):
    html = auditor_client.get(reverse("workflow-runs") + "?workflow=sales").content.decode()
    assert [pk for pk, _ in ROW.findall(html)] == [str(runs["s2"].pk), str(runs["s1"].pk)]
    html = auditor_client.get(
        reverse("workflow-runs") + "?status=succeeded&range=30d"
    ).content.decode()
    assert [pk for pk, _ in ROW.findall(html)] == [str(runs[k].pk) for k in ("p1", "s1", "old")]
    html = auditor_client.get(
        reverse("workflow-runs") + "?workflow=support&status=interrupted"
    ).content.decode()
    assert ROW.findall(html) == []
    assert "matching the filters" in html


def test_the_header_counts_the_runs_the_filters_match(auditor_client, runs, now):
    def total(query: str) -> str:
        html = auditor_client.get(reverse("workflow-runs") + query).content.decode()
        return re.search(r'<span class="total">([^<]+)</span>', html).group(1)

    assert total("") == "4 runs"
    assert total("?workflow=sales") == "2 runs"
    assert total("?status=succeeded&range=30d") == "3 runs"
    assert total("?workflow=support&status=interrupted") == "0 runs"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("workflow=nope", "workflow must be one of sales, support"),
        ("status=done", "status must be one of running, succeeded, failed, interrupted"),
        # Old cursors (a run id) are refused like any other.
        ("cursor=x", "cursor &#x27;x&#x27; is not a position in this list"),
        ("cursor=99999", "cursor &#x27;99999&#x27; is not a position in this list"),
    ],
)
def test_bad_filters_are_400(auditor_client, runs, now, query, message):
    response = auditor_client.get(reverse("workflow-runs") + "?" + query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_fragment_and_keyset_paging(auditor_client, runs, now, monkeypatch):
    from orchestrator.dashboard.views import workflows

    monkeypatch.setattr(workflows, "PAGE_SIZE", 2)
    first = auditor_client.get(reverse("workflow-runs") + "?range=30d", **HTMX)
    body = first.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<section id="workflow-runs"')
    assert [pk for pk, _ in ROW.findall(body)] == [str(runs["p2"].pk), str(runs["p1"].pk)]
    href = htmllib.unescape(re.search(r'id="next-page" href="([^"]+)"', body).group(1))
    assert href.startswith(reverse("workflow-runs") + "?")
    second = auditor_client.get(href, **HTMX).content.decode()
    assert [pk for pk, _ in ROW.findall(second)] == [str(runs["s2"].pk), str(runs["s1"].pk)]
    href = htmllib.unescape(re.search(r'id="next-page" href="([^"]+)"', second).group(1))
    third = auditor_client.get(href, **HTMX).content.decode()
    assert [pk for pk, _ in ROW.findall(third)] == [str(runs["old"].pk)]
    assert 'id="next-page"' not in third


def test_a_real_run_links_to_its_own_events(auditor_client, pipeline):
    run = run_pass(workflow=pipeline["workflow"], poll=False)
    assert run.correlation_id
    html = auditor_client.get(reverse("workflow-runs")).content.decode()
    [query] = links(html, "run-events")
    [cid] = query["correlation"]
    assert cid == run.correlation_id
    events = AuditEvent.objects.filter(correlation_id=cid)
    assert set(events.values_list("event_type", flat=True)) == {
        "workflow_started",
        "workflow_stopped",
    }
    assert events.get(event_type="workflow_stopped").details["run_id"] == run.pk
