"""Which environment variables may serve as an integration's credential, and reading them.

CRM connections, alert channels and inbox sources store the NAME of an
environment variable, never the secret. Whoever can edit those rows (a staff
user in the admin, a workflow config, a raw SQL write) must not be able to
name one of the application's own secrets and have it sent to a host of their
choice (issue 11: {"token_env": "AUDIT_SIGNING_KEY"} with a base_url they own).

So a name is usable only when it
- starts with one of settings.CREDENTIAL_ENV_PREFIXES (an entry ending in "_"
  is a prefix, any other entry one exact name), and
- is not on the deny list below, whatever the configuration says.

Rows are checked when saved (model validation, workflow config) and again
when read (read_credential), so a row planted past the validators still
cannot leak anything.
"""

import os
import re

from django.conf import settings

ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")

# Never a credential, even if a prefix would allow it: each is a secret of the
# application itself, or reaches one.
DENIED_NAMES = {
    # Django's signing key: sessions, password reset tokens, signed cookies.
    "SECRET_KEY": "Django's SECRET_KEY signs sessions and password reset links",
    # The audit trail's MAC key: with it, events and seals can be forged.
    "AUDIT_SIGNING_KEY": "the audit trail's signing key",
    # dj_database_url reads the database credentials from it.
    "DATABASE_URL": "it holds the database credentials",
    # The SMTP login of MAILERS["default"] (settings.py).
    "EMAIL_HOST_USER": "the SMTP login of the site's mailer",
    "EMAIL_HOST_PASSWORD": "the SMTP password of the site's mailer",
}
DENIED_PREFIXES = {
    # DATABASE_URL's relatives (DATABASE_PASSWORD, ...) in other deployments.
    "DATABASE_": "database settings hold database credentials",
    # libpq reads PGPASSWORD, PGPASSFILE, PGSERVICE, ... from the environment.
    "PG": "PostgreSQL's client library reads its credentials from PG* variables",
    # DJANGO_SECRET_KEY, DJANGO_SETTINGS_MODULE, ...: the framework's own.
    "DJANGO_": "DJANGO_* variables configure the framework itself",
    # EMAIL_HOST_USER / EMAIL_HOST_PASSWORD and any later SMTP secret.
    "EMAIL_HOST_": "the site's SMTP login",
}


class CredentialError(ValueError):
    """A credential variable is refused by the rule above, or is not set."""


def _allowed_entries() -> list[str]:
    return [entry.strip() for entry in settings.CREDENTIAL_ENV_PREFIXES if entry.strip()]


def allowed_description() -> str:
    """What the configuration allows, for messages: 'names starting with CRM_, ...'."""
    entries = _allowed_entries()
    if not entries:
        return "no variable at all (CREDENTIAL_ENV_PREFIXES is empty)"
    prefixes = [e for e in entries if e.endswith("_")]
    exact = [e for e in entries if not e.endswith("_")]
    parts = []
    if prefixes:
        parts.append("names starting with " + ", ".join(prefixes))
    if exact:
        parts.append("exactly " + ", ".join(exact))
    return " or ".join(parts) + " (CREDENTIAL_ENV_PREFIXES)"


def credential_env_allowed(name: object) -> str | None:
    """None when `name` may be read as a credential; otherwise why not."""
    if not isinstance(name, str) or not ENV_NAME_RE.match(name):
        # The value is left out: what was typed here may be the secret itself.
        return (
            "must be the NAME of an environment variable (upper case letters, digits, _), "
            "not the secret itself"
        )
    reason = DENIED_NAMES.get(name) or next(
        (why for prefix, why in DENIED_PREFIXES.items() if name.startswith(prefix)), None
    )
    if reason is not None:
        return (
            f"environment variable {name} may not be used as a credential ({reason}); "
            f"use a variable of its own: {allowed_description()}"
        )
    for entry in _allowed_entries():
        if name == entry or (entry.endswith("_") and name.startswith(entry)):
            return None
    return (
        f"environment variable {name} may not be used as a credential; "
        f"allowed are {allowed_description()}"
    )


def read_credential(name: str, *, purpose: str = "") -> str:
    """The value of environment variable `name`; CredentialError if refused or unset."""
    suffix = f" ({purpose})" if purpose else ""
    problem = credential_env_allowed(name)
    if problem is not None:
        raise CredentialError(problem + suffix)
    value = os.environ.get(name, "")
    if not value:
        raise CredentialError(f"environment variable {name} is not set{suffix}")
    return value
