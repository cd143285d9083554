"""Error fingerprints: which error events are the same error."""

from pathlib import Path

import pytest

from audit.fingerprints import (
    CODE_MOVES,
    CURRENT,
    STRATEGIES,
    fingerprint,
    group_title,
    message_signature,
    normalize_message,
    normalize_message_2026_12_07,
    top_frame,
)
from audit.services import record_event


def trace(*, line: int, func: str = "push", file: str = "/srv/app/leads/crm/base.py") -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "/srv/app/orchestrator/runner.py", line 12, in run\n'
        "    step()\n"
        f'  File "{file}", line {line}, in {func}\n'
        "    raise TransportError(msg)\n"
        "leads.crm.base.TransportError: CRM timed out\n"
    )


def fp(error_type="TransportError", message="CRM timed out", traceback=""):
    return fingerprint(error_type=error_type, error_message=message, traceback=traceback)


def test_the_same_error_at_another_line_is_the_same_group():
    assert fp(traceback=trace(line=61)) == fp(traceback=trace(line=74))


def test_the_words_of_a_message_do_not_split_a_group_with_a_traceback():
    a = fp(message="timed out after 10 s", traceback=trace(line=61))
    assert a == fp(message="gave up after 3 tries", traceback=trace(line=61))
    # Before "2026-12-07" a status code did not split it either.
    assert fingerprint(
        error_type="TransportError",
        error_message="timed out after 10 s",
        traceback=trace(line=61),
        strategy="2026-12",
    ) == fingerprint(
        error_type="TransportError",
        error_message="HTTP 503 from crm.example",
        traceback=trace(line=61),
        strategy="2026-12",
    )


def test_another_function_is_another_group():
    assert fp(traceback=trace(line=61)) != fp(traceback=trace(line=61, func="update"))


def test_another_exception_type_is_another_group():
    assert fp(traceback=trace(line=61)) != fp(error_type="KeyError", traceback=trace(line=61))


def test_the_same_code_installed_elsewhere_is_the_same_group():
    here = trace(line=61, file="/srv/app/leads/crm/base.py")
    there = trace(line=61, file="/home/ci/checkout/leads/crm/base.py")
    assert fp(traceback=here) == fp(traceback=there)
    assert top_frame(here) == "leads/crm/base.py:push"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("timeout after 30s for LEAD-000123", "timeout after 31s for LEAD-000999"),
        ("no contact 7f3a9c1e22b04d5e8e1a", "no contact 0b1c2d3e4f5a6b7c8d9e"),
        ("bounce from ann@acme.example", "bounce from bob.smith+x@other-corp.example.org"),
        (
            "run 1b4e28ba-2fa1-11d2-883f-0016d3cca427 failed",
            "run 6FA459EA-EE8A-3CA4-894E-DB77E160355E failed",
        ),
        ("unknown field 'phone' in row 12", 'unknown field "email" in row 7'),
    ],
)
def test_messages_that_differ_only_in_numbers_ids_emails_uuids_group_together(one, other):
    assert normalize_message(one) == normalize_message(other)
    assert fp(error_type="CrmError", message=one) == fp(error_type="CrmError", message=other)


def test_different_messages_without_traceback_are_different_groups():
    assert fp(message="connection refused") != fp(message="authentication failed")


def test_only_the_first_line_of_a_message_counts():
    assert fp(message="bad row\ndetail 1") == fp(message="bad row\nsomething else")


def test_no_error_no_fingerprint():
    assert fp(error_type="", message="", traceback="") == ""
    assert fp(error_type="", message="", traceback=trace(line=3)) == ""


def test_a_fingerprint_is_sixteen_hex_characters():
    value = fp()
    assert len(value) == 16
    int(value, 16)


@pytest.mark.django_db
def test_record_event_fingerprints_error_events_only():
    try:
        raise ValueError("boom 42")
    except ValueError as exc:
        error = record_event(event_type="error", exc=exc)
    plain = record_event(event_type="lead_ingested", lead_id="LEAD-000001")
    manual = record_event(event_type="error", error_type="CrmError", error_message="HTTP 500")
    error.refresh_from_db()
    plain.refresh_from_db()
    manual.refresh_from_db()
    assert error.fingerprint == fingerprint(
        error_type="ValueError", error_message="boom 42", traceback=error.traceback
    )
    assert len(error.fingerprint) == 16
    assert manual.fingerprint == fp(error_type="CrmError", message="HTTP 500")
    assert plain.fingerprint == ""


@pytest.mark.django_db
def test_an_event_carrying_an_error_is_fingerprinted_whatever_its_type():
    bounced = record_event(
        event_type="email_bounced", error_type="SMTPRecipientsRefused", error_message="550"
    )
    bounced.refresh_from_db()
    assert bounced.fingerprint == fp(error_type="SMTPRecipientsRefused", message="550")


# --- versioned strategies: groups survive moving code between apps ------------------------

# (type, message, file before the move, file after it, function, the fingerprint
# that e896309's audit/fingerprints.py gave the "before" traceback). The hex
# values are pinned: they are what error groups and their URLs are called in
# databases made before the move.
MOVED_ERRORS = [
    ("TransportError", "HubSpot answered 503", "leads/crm/base.py", "leads/crm/base.py",
     "request", "6e27952acb501717"),
    ("CommandError", "no workflow sales", "orchestrator/runner.py", "leads/workflows/runner.py",
     "run_pass", "1804c4a1069ee122"),
    ("ValueError", "unknown step kind 'fax'", "orchestrator/steps.py",
     "leads/workflows/steps.py", "step_class", "ccab0c6494e6b037"),
    ("SMTPServerDisconnected", "Connection unexpectedly closed", "leads/email/services.py",
     "leads/followups/services/sending.py", "send_due", "e02b6d4a2806856b"),
    ("IMAP4.error", "LOGIN failed", "leads/inbox.py", "leads/intake/inbox/poll.py",
     "poll_source", "09fbc64fce092702"),
    ("CsvError", "row 7: bad email", "leads/csv_import.py", "leads/intake/csv_import.py",
     "import_csv", "f432ab9bf6813aa0"),
    ("DeliveryError", "webhook answered 500", "audit/alerts/services.py",
     "orchestrator/monitoring/alerts/services.py", "deliver_due", "7d77c8e8f96b9e95"),
    ("SMTPException", "report not sent", "audit/reports/services.py",
     "orchestrator/monitoring/reports/services.py", "report_send", "632975dd57f68508"),
    ("IntegrityError", "duplicate key", "orchestrator/locks.py", "core/locks.py", "acquire",
     "9f3fbb07c0dd9526"),
    ("PeriodError", "until must be after since", "orchestrator/periods.py", "core/periods.py",
     "period_from_query", "4c6021b0105ce73c"),
]  # fmt: skip


def one_frame(path: str, func: str, error_type: str, message: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "/srv/app/{path}", line 10, in {func}\n'
        "    x()\n"
        f"{error_type}: {message}\n"
    )


@pytest.mark.parametrize(
    ("error_type", "message", "before", "after", "func", "pinned"), MOVED_ERRORS
)
def test_an_error_in_moved_code_keeps_its_group(error_type, message, before, after, func, pinned):
    old = one_frame(before, func, error_type, message)
    new = one_frame(after, func, error_type, message)
    assert (
        fingerprint(error_type=error_type, error_message=message, traceback=old, strategy="2026-11")
        == pinned
    )
    # "2026-12" gives the moved code's error the group it had.
    assert (
        fingerprint(error_type=error_type, error_message=message, traceback=new, strategy="2026-12")
        == pinned
    )
    # So does the current one, unless its message names a status code ("answered 503"),
    # which "2026-12-07" deliberately splits on.
    current = fingerprint(error_type=error_type, error_message=message, traceback=new)
    assert (current == pinned) == (not message_signature(message))
    # Its display frame names where the code is now.
    assert top_frame(new) == f"{after}:{func}"


def test_errors_without_a_traceback_keep_their_group_across_strategies():
    message = "timeout after 30s for LEAD-000123"
    assert fp(error_type="CrmError", message=message) == "3f52dbb60ed39238"
    for strategy in STRATEGIES:
        assert (
            fingerprint(
                error_type="CrmError", error_message=message, traceback="", strategy=strategy
            )
            == "3f52dbb60ed39238"
        )


def test_every_moved_path_exists_where_the_table_says_code_lives_now():
    root = Path(__file__).resolve().parents[2]
    for now in CODE_MOVES:
        assert (root / now).exists(), now
    assert CURRENT in STRATEGIES


def test_a_new_place_for_code_that_did_not_move_is_its_own_group():
    a = one_frame("leads/crm/hubspot.py", "push", "TransportError", "x")
    b = one_frame("leads/crm/pipedrive.py", "push", "TransportError", "x")
    assert fp(traceback=a) != fp(traceback=b)


# --- "2026-12-07": HTTP status codes and endpoints split groups ---------------------------

HUBSPOT_400 = (
    'POST /crm/v3/objects/contacts returned 400: {"status":"error","message":"Property values '
    'were not valid: invalid email","correlationId":"1b4e28ba-2fa1-11d2-883f-0016d3cca427"}'
)
HUBSPOT_400_OTHER_LEAD = (
    'POST /crm/v3/objects/contacts returned 400: {"status":"error","message":"Property values '
    'were not valid: bad@","correlationId":"6fa459ea-ee8a-3ca4-894e-db77e160355e"}'
)
HUBSPOT_500 = "POST /crm/v3/objects/contacts returned 500: internal error"


def crm_frame(message: str) -> str:
    # Every HubSpot answer is raised at the same line of CrmConnector.request.
    return one_frame("leads/crm/base.py", "request", "CrmError", message)


def both(message: str, other: str, *, traced: bool) -> tuple[str, str]:
    return (
        fp("CrmError", message, crm_frame(message) if traced else ""),
        fp("CrmError", other, crm_frame(other) if traced else ""),
    )


@pytest.mark.parametrize("traced", [True, False], ids=["traceback", "message only"])
@pytest.mark.parametrize(
    ("one", "other"),
    [
        (HUBSPOT_400, HUBSPOT_500),
        ("HTTP 503 from crm.example", "HTTP 502 from crm.example"),
        ("webhook answered 404", "webhook answered 410"),
        ("POST /crm/v3/objects/contacts returned 500", "POST /crm/v3/objects/deals returned 500"),
        ("GET /v1/persons/5 returned 500", "PUT /v1/persons/5 returned 500"),
        ("HTTP/1.1 503 Service Unavailable", "HTTP/1.1 504 Gateway Timeout"),
    ],
)
def test_status_codes_endpoints_and_methods_split_groups(one, other, traced):
    a, b = both(one, other, traced=traced)
    assert a != b


@pytest.mark.parametrize("traced", [True, False], ids=["traceback", "message only"])
@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("timeout after 30s for LEAD-000123", "timeout after 31s for LEAD-000999"),
        (HUBSPOT_400, HUBSPOT_400_OTHER_LEAD),
        (
            "PATCH /crm/v3/objects/contacts/12345 returned 409: conflict",
            "PATCH /crm/v3/objects/contacts/99 returned 409: conflict",
        ),
        (
            "GET https://api.hubapi.com/crm/v3/objects/contacts/ann@acme.example?idProperty=email "
            "timed out: read timeout=10",
            "GET https://api.hubapi.com/crm/v3/objects/contacts/bob@x.example?idProperty=email "
            "timed out: read timeout=30",
        ),
        (
            "DELETE /runs/1b4e28ba-2fa1-11d2-883f-0016d3cca427 returned 500",
            "DELETE /runs/6FA459EA-EE8A-3CA4-894E-DB77E160355E returned 500",
        ),
        ("bounce from ann@acme.example", "bounce from bob.smith+x@other-corp.example.org"),
        ("no contact 7f3a9c1e22b04d5e8e1a", "no contact 0b1c2d3e4f5a6b7c8d9e"),
        ("object at 0x7f3a9c1e22b0 failed", "object at 0x55d0aa10 failed"),
        ("unknown field 'phone' in row 12", 'unknown field "email" in row 7'),
        ("row 200: 3/4 columns", "row 404: 1/2 columns"),
    ],
)
def test_ids_emails_uuids_hex_quoted_values_and_other_numbers_still_merge(one, other, traced):
    a, b = both(one, other, traced=traced)
    assert a == b


def test_the_normalized_message_keeps_status_codes_and_endpoints_readable():
    assert normalize_message_2026_12_07(HUBSPOT_400) == (
        "POST /crm/v3/objects/contacts returned 400: {<str>:<str>,<str>:<str>,<str>:<str>}"
    )
    assert (
        normalize_message_2026_12_07(
            "PATCH https://api.hubapi.com/crm/v3/objects/contacts/12345?archived=false returned 404"
        )
        == "PATCH https://api.hubapi.com/crm/v3/objects/contacts/<id>?<query> returned 404"
    )
    assert normalize_message_2026_12_07("HTTP 503 after 30s") == "HTTP 503 after <n>s"
    assert message_signature("timeout after 30s for LEAD-000123") == ""
    assert message_signature(HUBSPOT_500) == "POST /crm/v3/objects/contacts returned 500"


def test_a_group_title_is_readable():
    # An API's JSON error body reads as the reason it gives, not as masked JSON.
    assert group_title("CrmError", HUBSPOT_400) == (
        "CrmError: POST /crm/v3/objects/contacts returned 400: "
        "Property values were not valid: invalid email"
    )
    # HubSpot's validation errors nest the reason in a JSON array inside "message".
    nested = (
        'POST /crm/v3/objects/contacts returned 400: {"status": "error", "message": '
        '"Property values were not valid: [{\\"isValid\\": false, \\"message\\": '
        '\\"Email address ann@acme.example is invalid\\", \\"error\\": \\"INVALID_EMAIL\\"}]", '
        '"correlationId": "4534017d-5a6a-47a2-a7eb-f5cd002e8ef1"}'
    )
    assert group_title("CrmError", nested) == (
        "CrmError: POST /crm/v3/objects/contacts returned 400: Email address <email> is invalid"
    )
    # A body that names no reason is shown as {…}; one that is not JSON, as text.
    assert group_title("CrmError", 'POST /x returned 502: {"id": 7}') == (
        "CrmError: POST /x returned 502: {…}"
    )
    assert group_title("OSError", "connect failed: [Errno 111] Connection refused") == (
        "OSError: connect failed: [Errno <n>] Connection refused"
    )
    assert group_title("CrmError", "timeout after 30s for LEAD-000123") == (
        "CrmError: timeout after <n>s for <id>"
    )
    assert group_title("KeyError", "") == "KeyError"


def test_groups_without_status_codes_or_endpoints_keep_their_fingerprint():
    """Their URLs, alert incidents and states survive the new strategy."""
    for message, traceback in [
        ("timeout after 30s for LEAD-000123", ""),
        ("timeout after 30s for LEAD-000123", crm_frame("x")),
        ("unknown field 'phone' in row 12", ""),
    ]:
        kwargs = {"error_type": "CrmError", "error_message": message, "traceback": traceback}
        assert fingerprint(**kwargs, strategy="2026-12-07") == fingerprint(
            **kwargs, strategy="2026-12"
        )
    # And moved code still maps back (CODE_MOVES) under the new strategy.
    for error_type, message, _before, after, func, pinned in MOVED_ERRORS:
        if not message_signature(message):
            new = one_frame(after, func, error_type, message)
            assert fingerprint(error_type=error_type, error_message=message, traceback=new) == (
                pinned
            )


def test_the_current_strategy_is_the_newest():
    assert CURRENT == "2026-12-07"
    hubspot = {"error_type": "CrmError", "error_message": HUBSPOT_500, "traceback": ""}
    assert fingerprint(**hubspot) == fingerprint(**hubspot, strategy="2026-12-07")
    assert fingerprint(**hubspot) != fingerprint(**hubspot, strategy="2026-12")
