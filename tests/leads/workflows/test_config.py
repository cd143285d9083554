import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from leads.models import LeadSource, Team, TeamMember
from leads.workflows.models import Workflow

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "workflows.example.json"
USERS = ["alice", "bruno", "carla", "dmitri", "erin"]


@pytest.fixture
def users(django_user_model):
    return [django_user_model.objects.create_user(name) for name in USERS]


def load(path, *args):
    out, err = StringIO(), StringIO()
    try:
        call_command("load_workflows", str(path), *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc, out.getvalue(), err.getvalue()
    return None, out.getvalue(), err.getvalue()


def write(tmp_path, data):
    path = tmp_path / "workflows.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.django_db
def test_the_example_config_loads_and_reloads(users):
    error, out, _ = load(EXAMPLE)
    assert error is None
    assert "Loaded 1 workflow(s), 3 source(s), 3 team(s)" in out
    workflow = Workflow.objects.get(name="sales_lead_management")
    assert workflow.config["qualification"]["thresholds"] == {"qualified": 60, "nurture": 30}
    assert "sources" not in workflow.config
    inbox = LeadSource.objects.get(slug="sales-inbox")
    assert inbox.workflow == workflow
    assert inbox.options["inbox"]["password_env"] == "INBOX_SALES_PASSWORD"
    assert TeamMember.objects.get(team__slug="emea", user__username="alice").weight == 2
    # Upsert: loading again changes nothing and duplicates nothing.
    assert load(EXAMPLE)[0] is None
    assert Workflow.objects.count() == 1
    assert LeadSource.objects.count() == 3
    assert Team.objects.count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mutate", "pointer", "message"),
    [
        (
            lambda d: d["workflows"][0]["qualification"]["rules"][1].update(points=5000),
            "/workflows/0/qualification/rules/1/points",
            "greater than the maximum",
        ),
        (
            lambda d: d["workflows"][0]["sources"][1]["inbox"].update(password="hunter2"),
            "/workflows/0/sources/1/inbox",
            "password",
        ),
        (
            lambda d: d["workflows"][0]["qualification"]["rules"][0]["when"].update(op="like"),
            "/workflows/0/qualification/rules/0/when",
            "like",
        ),
        (
            lambda d: d["workflows"][0].update(steps=[{"kind": "fax"}]),
            "/workflows/0/steps/0/kind",
            "unknown step kind 'fax'",
        ),
        (
            lambda d: d["workflows"][0]["qualification"]["rules"][0]["when"].update(
                value="(unclosed"
            ),
            "/workflows/0/qualification/rules/0/when",
            "regex",
        ),
        (lambda d: d.update(extra_key=1), "/", "extra_key"),
        (
            lambda d: d["workflows"][0]["sources"][0].update(kind="fax"),
            "/workflows/0/sources/0/kind",
            "'fax' is not one of",
        ),
    ],
)
def test_bad_config_names_the_json_pointer_and_changes_nothing(
    users, tmp_path, mutate, pointer, message
):
    data = json.loads(EXAMPLE.read_text())
    mutate(data)
    error, _, err = load(write(tmp_path, data))
    assert error is not None
    assert "nothing was changed" in str(error)
    assert any(line.startswith(pointer) and message in line for line in err.splitlines()), err
    assert not Workflow.objects.exists()
    assert not LeadSource.objects.exists()


@pytest.mark.django_db
def test_unparseable_file_and_missing_users(tmp_path, users):
    path = tmp_path / "broken.json"
    path.write_text('{"workflows": [\n  {"name": "x",}\n]}')
    error, _, err = load(path)
    assert error is not None
    assert "line 2 column" in err
    data = json.loads(EXAMPLE.read_text())
    data["teams"][0]["members"].append({"username": "nobody"})
    error, _, err = load(write(tmp_path, data))
    assert "no such user(s): nobody" in err
    assert load(tmp_path / "missing.json")[0] is not None


@pytest.mark.django_db
def test_check_only_validates(users):
    error, out, _ = load(EXAMPLE, "--check")
    assert error is None
    assert "is valid" in out
    assert not Workflow.objects.exists()


@pytest.mark.django_db
def test_admin_validates_the_config_on_save(admin_client):
    url = reverse("admin:workflows_workflow_add")
    bad = {
        "name": "w",
        "enabled": "on",
        "config": json.dumps({"routing": {"rules": [{"name": "r"}]}}),
    }
    response = admin_client.post(url, bad)
    assert response.status_code == 200
    assert "/routing/rules/0" in response.content.decode()
    assert not Workflow.objects.exists()
    good = {
        "name": "w",
        "enabled": "on",
        "config": json.dumps({"qualification": {"thresholds": {"qualified": 5, "nurture": 1}}}),
    }
    response = admin_client.post(url, good)
    assert response.status_code == 302
    assert Workflow.objects.get(name="w").config["qualification"]["thresholds"]["qualified"] == 5


@pytest.mark.django_db
def test_the_readme_command_works_on_a_fresh_install_and_creates_the_members(
    django_user_model,
):
    """No user exists yet: the README's command, as written, loads the example."""
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    command = next(
        line.split("manage.py ", 1)[1].split()
        for line in readme.splitlines()
        if line.startswith("manage.py load_workflows")
    )
    assert command[0] == "load_workflows"
    error, out, _ = load(EXAMPLE.parents[1] / command[1], *command[2:])
    assert error is None, out
    created = "alice, bruno, carla, dmitri, erin"
    assert f"Created users without a password: {created}." in out
    alice = django_user_model.objects.get(username="alice")
    assert not alice.has_usable_password()
    assert TeamMember.objects.filter(user=alice).exists()
    # Again: nobody new to create, nothing doubled.
    error, out, _ = load(EXAMPLE, "--create-users")
    assert error is None and "Created users" not in out
    assert django_user_model.objects.count() == 5


@pytest.mark.django_db
def test_without_create_users_the_missing_members_are_named_with_the_way_out(tmp_path):
    error, _, err = load(EXAMPLE)
    assert error is not None
    assert "no such user(s): alice, bruno, carla, dmitri, erin" in err
    assert "--create-users" in err
    assert not Team.objects.exists()
