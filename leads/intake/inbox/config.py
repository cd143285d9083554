"""An inbox source's settings (LeadSource.options["inbox"]) and its credentials."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.mailbox import BaseMailBox

from core.credentials import CredentialError, read_credential
from leads.models import LeadSource

MAILBOX_CLASSES: dict[str, type[BaseMailBox]] = {
    "ssl": MailBox,
    "starttls": MailBoxStartTls,
    "plain": MailBoxUnencrypted,
}
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "plain": 143}
OPTION_KEYS = {
    "host",
    "port",
    "security",
    "username_env",
    "password_env",
    "folder",
    "processed_folder",
    "failed_folder",
    "timeout",
    "parse",
}


class InboxError(Exception):
    """A poll could not run (or went on no further); the messages it did handle are kept."""


class InboxConfigError(InboxError):
    """The source's inbox options are incomplete or wrong, or a credential is not set."""


class InboxConnectionError(InboxError):
    """The IMAP server could not be reached, refused the login, or failed a command."""


@dataclass(frozen=True)
class InboxConfig:
    host: str
    port: int
    security: str
    username_env: str
    password_env: str
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = ""
    timeout: float = 30.0
    key_value: bool = True
    field_aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_folder(self) -> str:
        return self.failed_folder or self.processed_folder

    @classmethod
    def from_source(cls, source: LeadSource) -> "InboxConfig":
        where = f"source {source.slug}: options.inbox"
        raw = (source.options or {}).get("inbox")
        if not isinstance(raw, dict):
            raise InboxConfigError(
                f"{where} is missing; it needs host, security, username_env and password_env"
            )
        unknown = sorted(set(raw) - OPTION_KEYS)
        if unknown:
            raise InboxConfigError(
                f"{where} has unknown keys {', '.join(unknown)} "
                f"(known: {', '.join(sorted(OPTION_KEYS))})"
            )

        def text(key: str, default: str | None = None) -> str:
            value = raw.get(key, default)
            if not isinstance(value, str) or (default is None and not value.strip()):
                raise InboxConfigError(f"{where}.{key} must be a non-empty string")
            return value.strip()

        security = text("security", "ssl").lower()
        if security not in MAILBOX_CLASSES:
            raise InboxConfigError(
                f"{where}.security is {security!r}; use one of {', '.join(MAILBOX_CLASSES)}"
            )
        port = raw.get("port", DEFAULT_PORTS[security])
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InboxConfigError(f"{where}.port must be a port number, not {port!r}")
        if security == "starttls" and port == 993:
            raise InboxConfigError(f"{where}: port 993 speaks TLS from the start; use security ssl")
        timeout = raw.get("timeout", 30)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise InboxConfigError(f"{where}.timeout must be a positive number of seconds")
        parse = raw.get("parse", {})
        if not isinstance(parse, dict):
            raise InboxConfigError(f"{where}.parse must be an object")
        aliases = parse.get("field_aliases", {})
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
        ):
            raise InboxConfigError(f"{where}.parse.field_aliases must map names to names")
        key_value = parse.get("key_value", True)
        if not isinstance(key_value, bool):
            raise InboxConfigError(f"{where}.parse.key_value must be true or false")
        folder = text("folder", "INBOX") or "INBOX"
        processed = text("processed_folder", "Processed") or "Processed"
        failed = text("failed_folder", "")
        # A message moved back into the folder read would be read again forever.
        for key, value in (("processed_folder", processed), ("failed_folder", failed)):
            if value == folder:
                raise InboxConfigError(f"{where}.{key} must differ from folder ({folder})")
        return cls(
            host=text("host"),
            port=port,
            security=security,
            username_env=text("username_env"),
            password_env=text("password_env"),
            folder=folder,
            processed_folder=processed,
            failed_folder=failed,
            timeout=float(timeout),
            key_value=key_value,
            field_aliases=aliases,
        )


def credentials(config: InboxConfig, *, source: LeadSource) -> tuple[str, str]:
    values = []
    for setting in ("username_env", "password_env"):
        name = getattr(config, setting)
        try:
            # The credential rule (core.credentials) holds here too: options
            # naming SECRET_KEY would otherwise send it to the IMAP host.
            values.append(
                read_credential(name, purpose=f"source {source.slug}: options.inbox.{setting}")
            )
        except CredentialError as exc:
            raise InboxConfigError(str(exc)) from None
    return values[0], values[1]


def mailbox_class(security: str) -> type[BaseMailBox]:
    """The imap-tools class for a security setting: ssl, starttls or plain."""
    try:
        return MAILBOX_CLASSES[security]
    except KeyError:
        raise InboxConfigError(
            f"unknown IMAP security {security!r}; use one of {', '.join(MAILBOX_CLASSES)}"
        ) from None
