"""A real Dovecot IMAP server on loopback for the inbox tests (see /work/shared/TESTING.md)."""

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imap_tools import MailBoxUnencrypted, MailMessage

INSTALL_HINT = "dovecot not installed: apt-get install dovecot-imapd"
USER = "leads@example.test"
PASSWORD = "secret"

# Settings both versions share. Dovecot 2.4 renamed most of the rest, and
# refuses a 2.3 file outright (dovecot_config_version must come first).
COMMON = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
mail_uid = {mail_uid}
mail_gid = {mail_gid}
first_valid_uid = 1
namespace inbox {{
  inbox = yes
  separator = /
}}
service anvil {{
  chroot =
  # No auth penalty: after the wrong-password test every later login would
  # wait 2-15 s (login_trusted_networks does not lift it in 2.3).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""

CONFIG_23 = """\
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
"""

CONFIG_24 = """\
auth_allow_cleartext = yes
passdb passwd-file {{
  passwd_file_path = {d}/users
}}
userdb static {{
  fields {{
    home = {d}/mail/%{{user}}
  }}
}}
mail_driver = maildir
mail_path = ~/Maildir
"""


def dovecot_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"\s*(\d+)\.(\d+)", out)
    if not match:
        raise RuntimeError(f"cannot read the version from `dovecot --version`: {out!r}")
    return int(match[1]), int(match[2])


def dovecot_config(version: tuple[int, int], *, d: Path, port: int) -> str:
    if os.geteuid() == 0:
        ids = {
            "internal_user": "dovecot",
            "internal_group": "dovecot",
            "login_user": "dovenull",
            "mail_uid": "dovecot",
            "mail_gid": "dovecot",
        }
    else:
        # Not root: Dovecot cannot switch users, so every process runs as us.
        user = pwd.getpwuid(os.getuid()).pw_name
        ids = {
            "internal_user": user,
            "internal_group": grp.getgrgid(os.getgid()).gr_name,
            "login_user": user,
            "mail_uid": str(os.getuid()),
            "mail_gid": str(os.getgid()),
        }
    values = {"d": d, "port": port, **ids}
    if version >= (2, 4):
        head = "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"
        return head + COMMON.format(**values) + CONFIG_24.format(**values)
    return COMMON.format(**values) + CONFIG_23.format(**values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        return conn.recv(200)


@dataclass
class Dovecot:
    host: str
    port: int
    user: str
    password: str
    version: tuple[int, int]
    root: Path

    def connect(self) -> MailBoxUnencrypted:
        return MailBoxUnencrypted(self.host, self.port, timeout=10).login(
            self.user, self.password, initial_folder=None
        )

    def deliver(self, raw: bytes | str, folder: str = "INBOX") -> None:
        """Put one RFC 822 message into a folder (IMAP APPEND)."""
        data = raw.encode() if isinstance(raw, str) else raw
        with self.connect() as mailbox:
            mailbox.append(data, folder)

    def messages(self, folder: str = "INBOX") -> list[MailMessage]:
        with self.connect() as mailbox:
            if not mailbox.folder.exists(folder):
                return []
            mailbox.folder.set(folder)
            return list(mailbox.fetch(mark_seen=False))

    def uids(self, folder: str = "INBOX") -> list[int]:
        """The folder's UIDs; they grow across tests (reset expunges, it cannot renumber)."""
        with self.connect() as mailbox:
            mailbox.folder.set(folder)
            return sorted(map(int, mailbox.uids()))

    def folders(self) -> set[str]:
        with self.connect() as mailbox:
            return {f.name for f in mailbox.folder.list()}

    def reset(self) -> None:
        """Empty INBOX and delete every other folder, so each test starts clean."""
        with self.connect() as mailbox:
            for info in sorted(mailbox.folder.list(), key=lambda f: -len(f.name)):
                if info.name != "INBOX":
                    mailbox.folder.delete(info.name)
            mailbox.folder.set("INBOX")
            mailbox.delete(mailbox.uids())

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        # A client still logged in keeps the master waiting; take the whole group down.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    binary = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    version = dovecot_version(binary)
    root = Path(tempfile.mkdtemp(prefix="orchestrator-dovecot-"))
    proc: subprocess.Popen | None = None
    try:
        # mkdtemp makes 0700; Dovecot's unprivileged processes must get in.
        root.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir()
        if os.geteuid() == 0:
            shutil.chown(root / "mail", "dovecot", "dovecot")
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        port = free_port()
        config = root / "dovecot.conf"
        config.write_text(dovecot_config(version, d=root, port=port))
        # A file, not a pipe: nobody reads a pipe while the tests run.
        with (root / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                [binary, "-F", "-c", str(config)],
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                logs = [root / "console.log", root / "dovecot.log"]
                output = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
                pytest.fail(f"dovecot {version} exited with {proc.returncode}:\n{output}")
            with contextlib.suppress(OSError):
                if read_greeting(port).startswith(b"* OK"):
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"dovecot {version} sent no greeting on port {port} within 10 s")
            time.sleep(0.02)
        yield Dovecot("127.0.0.1", port, USER, PASSWORD, version, root)
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    """The session's Dovecot, with an empty mailbox."""
    dovecot_server.reset()
    return dovecot_server


@pytest.fixture
def make_inbox_source(dovecot, monkeypatch):
    """An email_inbox LeadSource reading the Dovecot fixture's mailbox."""
    from leads.models import LeadSource

    def make(*, slug: str = "sales-inbox", workflow=None, **inbox: object) -> LeadSource:
        monkeypatch.setenv("IMAP_TEST_USER", dovecot.user)
        monkeypatch.setenv("IMAP_TEST_PASSWORD", dovecot.password)
        options = {
            "host": dovecot.host,
            "port": dovecot.port,
            "security": "plain",
            "username_env": "IMAP_TEST_USER",
            "password_env": "IMAP_TEST_PASSWORD",
            "processed_folder": "Processed",
            "timeout": 10,
            **inbox,
        }
        return LeadSource.objects.create(
            name="Sales inbox",
            slug=slug,
            kind=LeadSource.Kind.EMAIL_INBOX,
            workflow=workflow,
            options={"inbox": options},
        )

    return make
