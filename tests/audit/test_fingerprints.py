"""Error fingerprints: which error events are the same error."""

import pytest

from audit.fingerprints import fingerprint, normalize_message, top_frame
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


def test_the_message_does_not_split_a_group_with_a_traceback():
    a = fp(message="timed out after 10 s", traceback=trace(line=61))
    assert a == fp(message="HTTP 503 from crm.example", traceback=trace(line=61))


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
