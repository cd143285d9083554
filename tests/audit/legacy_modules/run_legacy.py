"""A legacy script, run unchanged: no Django setup of its own. Processes four
leads and prints what the legacy reads return, as JSON."""

import json
from datetime import UTC, datetime

from workflow_runner import WorkflowRunner

from automation_orchestrator.audit import get_audit_logger

LEADS = [
    ("LEAD-001", "web_form", {"email": "ana@acme.example", "country": "DE", "update": ["phone"]}),
    ("LEAD-002", "csv", {"email": "bob@gmail.com", "country": "US"}),
    ("LEAD-003", "web_form", {"name": "No Email"}),
    ("LEAD-004", "web_form", {"email": "cy@corp.example", "country": "US", "update": ["fax"]}),
]


def main():
    audit = get_audit_logger()
    previous = WorkflowRunner("sales")
    previous.start()
    previous.stop("previous run")

    sales = WorkflowRunner("sales")
    support = WorkflowRunner("support", crm_type="salesforce")
    # The legacy log's own timestamp text: this run's statistics start here.
    since = sales.start()["timestamp"]
    outcomes = {}
    for lead_id, source, data in LEADS[:2]:
        outcomes[lead_id] = sales.process(lead_id, source, data)
    support.start()
    outcomes["LEAD-101"] = support.process(
        "LEAD-101", "inbox", {"email": "dee@shop.example", "country": "DE", "update": ["title"]}
    )
    support.stop()
    outcomes["LEAD-003"] = sales.process(*LEADS[2])
    window_start = datetime.now(UTC)
    outcomes["LEAD-004"] = sales.process(*LEADS[3])
    stopped = sales.stop("batch done")
    # A naive datetime, as the legacy script's callers built them (UTC).
    until = datetime.fromisoformat(stopped["timestamp"].replace("Z", "")).replace(tzinfo=None)

    print(
        json.dumps(
            {
                "outcomes": outcomes,
                "since": since,
                "until": stopped["timestamp"],
                "history": audit.get_lead_history("LEAD-004"),
                "statistics": audit.get_statistics(workflow="sales", since=since, until=until),
                "errors": audit.query_events(event_type="error", limit=50),
                "window": audit.query_events(
                    start_time=window_start, end_time=stopped["timestamp"]
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
