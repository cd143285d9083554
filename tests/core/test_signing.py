import hashlib
import hmac

from core.signing import sign, verify
from leads.crm import webhook as crm_webhook
from orchestrator.monitoring.alerts.channels import webhook as alert_webhook

SECRET = "s3cret"
BODY = b'{"event":"lead.upsert"}'


def reference(material: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), material, hashlib.sha256).hexdigest()


def test_body_only_signature():
    assert sign(SECRET, BODY) == reference(BODY)
    assert verify(SECRET, BODY, reference(BODY))


def test_timestamped_signature_covers_the_timestamp():
    signature = sign(SECRET, BODY, timestamp="1700000000")
    assert signature == reference(b"1700000000." + BODY)
    assert verify(SECRET, BODY, signature, timestamp="1700000000")
    # A replay under a fresh timestamp, or without one, does not verify.
    assert not verify(SECRET, BODY, signature, timestamp="1700000001")
    assert not verify(SECRET, BODY, signature)


def test_tampering_fails_verification():
    signature = sign(SECRET, BODY)
    assert not verify(SECRET, BODY + b" ", signature)
    assert not verify("other-secret", BODY, signature)
    assert not verify(SECRET, BODY, signature.upper())
    assert not verify(SECRET, BODY, "")


def test_both_webhooks_keep_their_wire_format():
    # The CRM webhook signs the body (its sent_at is inside); alerts sign "<ts>.<body>".
    assert crm_webhook.sign(SECRET, BODY) == reference(BODY)
    assert alert_webhook.sign(SECRET, "1700000000", BODY) == reference(b"1700000000." + BODY)
    assert alert_webhook.verify(SECRET, "1700000000", BODY, reference(b"1700000000." + BODY))
