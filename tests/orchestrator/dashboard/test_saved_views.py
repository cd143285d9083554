"""Saved views of the event browser: saving, the menu, sharing, owner-only changes,
the query kept, and every refusal a 4xx that says why."""

from urllib.parse import urlencode

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.dashboard import saved_views
from orchestrator.dashboard.saved_views import SavedViewError, clean_query
from orchestrator.models import SavedView
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db

EVENTS = "/events/"
CREATE = "/events/views/new/"
MANAGE = "/events/views/"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def text(response) -> str:
    return response.content.decode()


def update_url(view: SavedView) -> str:
    return reverse("saved-view-update", kwargs={"pk": view.pk})


def delete_url(view: SavedView) -> str:
    return reverse("saved-view-delete", kwargs={"pk": view.pk})


def htmx_from(url: str, *, target: str = "saved-views") -> dict[str, str]:
    """The headers htmx sends from a page whose address bar shows `url`."""
    return {
        **HTMX,
        "HTTP_HX_CURRENT_URL": f"http://testserver{url}",
        "HTTP_HX_TARGET": target,
    }


# --- the query kept ----------------------------------------------------------------------


def test_the_query_keeps_only_the_browser_filters_in_one_order():
    raw = "?cursor=abc&after=12&live=1&type=lead_routed&lead=L-1&evil=1&type=error&range=24h&q="
    assert clean_query(raw) == "range=24h&type=error&type=lead_routed&lead=L-1"


def test_equal_filters_are_spelt_alike():
    assert clean_query("lead=L-1&type=lead_routed&type=error&type=error") == clean_query(
        "type=error&lead=L-1&type=lead_routed&range=7d"
    )
    # No range is the default range; a preset range ignores since and until.
    assert clean_query("") == "range=7d"
    assert clean_query("range=7d&since=2026-01-01&until=2026-01-02") == "range=7d"
    assert (
        clean_query("until=2026-01-02&range=custom&since=2026-01-01")
        == "range=custom&since=2026-01-01&until=2026-01-02"
    )
    # A single-valued filter's last value is the one the browser reads (QueryDict.get).
    assert clean_query("lead=A&lead=B") == "range=7d&lead=B"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("range=forever", "range must be one of"),
        ("range=custom&since=2026-01-01", "a custom range needs both since and until"),
        ("workflow=a%00b", "contains characters that cannot be searched"),
        ("lead=" + "x" * 40, "Lead id:"),
        ("type=no_such_type", "Event types:"),
        ("range=90d&q=ti", "Text search for fewer than 3 characters covers at most"),
        ("&".join(f"lead={i}" for i in range(300)), "more than 200 parameters"),
        ("lead=" + "x" * 9000, "too long to save"),
    ],
)
def test_filters_the_browser_would_refuse_are_refused(raw, message):
    with pytest.raises(SavedViewError, match=message) as caught:
        clean_query(raw)
    assert caught.value.field == "query"


def test_a_query_longer_than_a_view_holds_is_refused(monkeypatch):
    longest = "&".join(
        f"{key}={'é' * 200}"
        for key in ("workflow", "lead", "actor", "correlation", "fingerprint", "q")
    )
    # Each filter's own length limit refuses first; a view holds any query the browser takes.
    with pytest.raises(SavedViewError, match="Lead id"):
        clean_query(longest)
    monkeypatch.setattr(saved_views, "MAX_QUERY_LENGTH", 40)
    with pytest.raises(SavedViewError, match=r"too long to save \(\d+ characters, at most 40\)"):
        clean_query("range=24h&workflow=" + "w" * 60)


# --- saving ------------------------------------------------------------------------------


def test_saving_keeps_the_page_filters_without_paging(auditor_client, auditor):
    page_query = "range=24h&type=error&lead=L-1&cursor=abc&after=5&live=1"
    response = auditor_client.post(CREATE, {"name": "Errors today", "query": page_query})
    view = SavedView.objects.get()
    assert (view.owner, view.name, view.shared) == (auditor, "Errors today", False)
    assert view.query == "range=24h&type=error&lead=L-1"
    # Without JavaScript: straight to the view it saved.
    assert response.status_code == 302
    assert response["Location"] == f"{EVENTS}?range=24h&type=error&lead=L-1"


def test_an_htmx_save_reads_the_filters_from_the_address_bar(auditor_client):
    # The hidden field was written with the page; a filter change since then was pushed
    # into the URL by htmx, and only HX-Current-URL knows it.
    response = auditor_client.post(
        CREATE,
        {"name": "Acme", "query": "range=7d"},
        **htmx_from(f"{EVENTS}?range=7d&lead=ACME-1&cursor=xyz"),
    )
    assert response.status_code == 200
    assert SavedView.objects.get().query == "range=7d&lead=ACME-1"
    body = text(response)
    assert body.lstrip().startswith('<div id="saved-views"')
    assert "Saved “Acme”" in body
    assert 'class="active" aria-current="page">Acme</a>' in body
    assert "http://testserver/events/?range=7d&amp;lead=ACME-1" in body


def test_an_htmx_save_from_another_page_uses_the_posted_query(auditor_client):
    auditor_client.post(
        CREATE, {"name": "Mine", "query": "range=24h&actor=user:ann"}, **htmx_from("/leads/")
    )
    assert SavedView.objects.get().query == "range=24h&actor=user%3Aann"


def test_a_shared_view_is_marked_shared(auditor_client):
    auditor_client.post(CREATE, {"name": "Team", "query": "type=error", "shared": "1"})
    assert SavedView.objects.get().shared is True


def test_a_name_taken_is_a_400_that_says_so(auditor_client, auditor):
    saved_views.save_view(owner=auditor, name="Errors", query="type=error")
    response = auditor_client.post(CREATE, {"name": " errors ", "query": "lead=X"})
    assert response.status_code == 400
    assert "You already have a view named “errors”: choose another name." in text(response)
    # The form comes back as it was filled in.
    assert 'value=" errors "' in text(response)
    assert SavedView.objects.count() == 1

    htmx = auditor_client.post(CREATE, {"name": "ERRORS", "query": ""}, **htmx_from(EVENTS))
    assert htmx.status_code == 400
    assert "You already have a view named “ERRORS”" in text(htmx)
    assert '<details class="save-view" open>' in text(htmx)


def test_the_same_name_is_free_for_another_user(auditor_client, auditor, operator):
    saved_views.save_view(owner=operator, name="Errors", query="type=error")
    assert auditor_client.post(CREATE, {"name": "Errors", "query": ""}).status_code == 302
    assert SavedView.objects.filter(name="Errors").count() == 2


def test_a_concurrent_save_of_the_same_name_is_the_same_error(auditor, monkeypatch):
    saved_views.save_view(owner=auditor, name="Errors", query="")
    # As if the other save committed between the check and the insert.
    monkeypatch.setattr("django.db.models.query.QuerySet.exists", lambda self: False, raising=True)
    with pytest.raises(SavedViewError, match="already have a view named"):
        saved_views.save_view(owner=auditor, name="errors", query="")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": ""}, "Give the view a name."),
        ({"name": "   "}, "Give the view a name."),
        ({}, "Give the view a name."),
        ({"name": "x" * 81}, "at most 80 characters"),
        ({"name": "a\x00b"}, "Null characters are not allowed."),
        ({"name": "ok", "query": "range=forever"}, "The filters cannot be saved: range must be"),
        ({"name": "ok", "query": "x" * 9000}, "at most 8000 characters"),
    ],
)
@pytest.mark.parametrize("htmx", [False, True])
def test_bad_input_is_a_400_with_a_message_in_the_form(auditor_client, data, message, htmx):
    response = auditor_client.post(CREATE, data, **(htmx_from("/leads/") if htmx else {}))
    assert response.status_code == 400
    assert message in text(response)
    assert 'class="save-view-form"' in text(response)
    assert not SavedView.objects.exists()


def test_a_name_of_80_characters_is_kept(auditor_client):
    assert auditor_client.post(CREATE, {"name": "n" * 80}).status_code == 302
    assert SavedView.objects.get().name == "n" * 80


def test_saving_needs_the_csrf_token(client, auditor):
    client.handler.enforce_csrf_checks = True
    client.force_login(auditor)
    assert client.post(CREATE, {"name": "x"}).status_code == 403
    assert not SavedView.objects.exists()


def test_saving_refuses_get(auditor_client):
    assert auditor_client.get(CREATE, {"name": "x"}).status_code == 405
    assert not SavedView.objects.exists()


# --- the menu ----------------------------------------------------------------------------


def test_the_event_browser_lists_own_and_shared_views(auditor_client, auditor, operator):
    saved_views.save_view(owner=auditor, name="My errors", query="type=error")
    saved_views.save_view(owner=operator, name="Oscar private", query="lead=P")
    saved_views.save_view(
        owner=operator, name="Oscar routed", query="type=lead_routed", shared=True
    )
    body = text(auditor_client.get(EVENTS))
    assert "My errors" in body
    assert "Oscar routed" in body
    assert "by oscar" in body
    assert "Oscar private" not in body
    assert 'href="http://testserver/events/?range=7d&amp;type=error"' in body
    # The form holds the page's own filters for a save without JavaScript.
    assert 'id="saved-view-query" name="query" value="range=7d">' in body


def test_the_view_matching_the_page_is_marked(auditor_client, auditor):
    saved_views.save_view(owner=auditor, name="Errors", query="type=error&range=24h")
    saved_views.save_view(owner=auditor, name="Other", query="lead=X")
    body = text(auditor_client.get(EVENTS, {"range": "24h", "type": "error", "cursor": ""}))
    assert 'class="active" aria-current="page">Errors</a>' in body
    assert 'aria-current="page">Other' not in body
    assert 'View: <strong class="active-view">Errors</strong>' in body
    assert 'aria-current="page">Errors' not in text(auditor_client.get(EVENTS, {"range": "7d"}))


def test_the_menu_fragment_follows_the_address_bar(auditor_client, auditor):
    saved_views.save_view(owner=auditor, name="Errors", query="type=error")
    response = auditor_client.get(
        MANAGE, **htmx_from(f"{EVENTS}?type=error&cursor=abc", target="saved-views-menu")
    )
    assert response.status_code == 200
    body = text(response)
    # The menu, and the save form's query out of band: not the name being typed.
    assert body.lstrip().startswith('<details id="saved-views-menu"')
    assert "<html" not in body
    assert 'name="name"' not in body
    assert 'class="active" aria-current="page">Errors</a>' in body
    assert (
        '<input type="hidden" id="saved-view-query" name="query" value="range=7d&amp;type=error"'
        ' hx-swap-oob="true">'
    ) in body
    assert "HX-Current-URL" in response["Vary"]


def test_the_menu_fragment_of_a_refused_page_saves_no_filters(auditor_client):
    response = auditor_client.get(
        MANAGE, **htmx_from(f"{EVENTS}?range=forever", target="saved-views-menu")
    )
    assert response.status_code == 200
    assert 'name="query" value="" hx-swap-oob="true">' in text(response)


def test_the_manage_page_lists_views_with_their_links(auditor_client, auditor, operator):
    saved_views.save_view(owner=auditor, name="Mine", query="type=error")
    saved_views.save_view(owner=operator, name="Theirs", query="lead=T", shared=True)
    saved_views.save_view(owner=operator, name="Hidden", query="lead=H")
    response = auditor_client.get(MANAGE)
    assert response.status_code == 200
    body = text(response)
    assert "Mine" in body and "Theirs" in body and "oscar" in body
    assert "Hidden" not in body
    assert ">http://testserver/events/?range=7d&amp;lead=T</a>" in body


# --- sharing and ownership ---------------------------------------------------------------


def test_list_views_gives_own_and_others_shared(auditor, operator, django_user_model):
    mine = saved_views.save_view(owner=auditor, name="b mine", query="")
    mine_shared = saved_views.save_view(owner=auditor, name="a mine shared", query="", shared=True)
    theirs = saved_views.save_view(owner=operator, name="theirs", query="", shared=True)
    saved_views.save_view(owner=operator, name="private", query="")
    own, shared = saved_views.list_views(user=auditor)
    assert own == [mine_shared, mine]
    assert shared == [theirs]
    third = django_user_model.objects.create_user("thea")
    assert saved_views.list_views(user=third) == ([], [mine_shared, theirs])


def test_the_owner_renames_and_unshares(auditor_client, auditor):
    view = saved_views.save_view(owner=auditor, name="Old", query="type=error", shared=True)
    response = auditor_client.post(update_url(view), {"name": "New"})
    assert response.status_code == 302
    view.refresh_from_db()
    assert (view.name, view.shared, view.query) == ("New", False, "range=7d&type=error")
    assert "Saved “New”." in text(auditor_client.get(MANAGE))


def test_renaming_to_a_taken_name_is_a_400(auditor_client, auditor):
    saved_views.save_view(owner=auditor, name="Taken", query="")
    view = saved_views.save_view(owner=auditor, name="Mine", query="")
    response = auditor_client.post(update_url(view), {"name": "taken", "shared": "1"})
    assert response.status_code == 400
    assert "You already have a view named “taken”" in text(response)
    view.refresh_from_db()
    assert (view.name, view.shared) == ("Mine", False)
    # Renaming to its own name in another case is no clash.
    assert auditor_client.post(update_url(view), {"name": "MINE"}).status_code == 302


def test_others_cannot_change_a_shared_view(auditor_client, operator):
    view = saved_views.save_view(owner=operator, name="Team", query="", shared=True)
    for url, data in [(update_url(view), {"name": "Mine now"}), (delete_url(view), {})]:
        response = auditor_client.post(url, data)
        assert response.status_code == 403
        assert "Only oscar, who saved “Team”, can rename, unshare or delete it." in text(response)
    assert auditor_client.get(delete_url(view)).status_code == 403
    view.refresh_from_db()
    assert (view.name, view.shared) == ("Team", True)


def test_others_cannot_see_or_delete_a_private_view(auditor_client, operator):
    view = saved_views.save_view(owner=operator, name="Private", query="")
    for response in (
        auditor_client.get(delete_url(view)),
        auditor_client.post(delete_url(view)),
        auditor_client.post(update_url(view), {"name": "x"}),
    ):
        assert response.status_code == 404
        assert "No such saved view" in text(response)
        assert "Private" not in text(response)
    assert SavedView.objects.filter(pk=view.pk).exists()


def test_the_services_refuse_a_non_owner(auditor, operator):
    view = saved_views.save_view(owner=operator, name="Team", query="", shared=True)
    with pytest.raises(PermissionDenied):
        saved_views.update_view(user=auditor, view=view, name="x", shared=False)
    with pytest.raises(PermissionDenied):
        saved_views.delete_view(user=auditor, view=view)


# --- deleting ----------------------------------------------------------------------------


def test_deleting_asks_first_and_deletes_only_on_post(auditor_client, auditor):
    view = saved_views.save_view(owner=auditor, name="Doomed", query="type=error", shared=True)
    confirm = auditor_client.get(delete_url(view))
    assert confirm.status_code == 200
    body = text(confirm)
    assert "Delete the saved view “Doomed”?" in body
    assert f'<form method="post" action="{delete_url(view)}"' in body
    assert "csrfmiddlewaretoken" in body
    assert SavedView.objects.filter(pk=view.pk).exists()

    response = auditor_client.post(delete_url(view))
    assert response.status_code == 302
    assert response["Location"] == MANAGE
    assert not SavedView.objects.filter(pk=view.pk).exists()
    assert "Deleted “Doomed”." in text(auditor_client.get(MANAGE))
    assert auditor_client.post(delete_url(view)).status_code == 404


def test_deleting_needs_the_csrf_token(client, auditor):
    view = saved_views.save_view(owner=auditor, name="Kept", query="")
    client.handler.enforce_csrf_checks = True
    client.force_login(auditor)
    assert client.post(delete_url(view)).status_code == 403
    assert SavedView.objects.filter(pk=view.pk).exists()


# --- junk ------------------------------------------------------------------------------

junk = st.text(max_size=120)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=junk,
    query=st.one_of(
        junk,
        st.dictionaries(
            st.sampled_from([*saved_views.FILTER_KEYS, "cursor", "x"]), junk, max_size=6
        ).map(urlencode),
    ),
    shared=st.sampled_from(["", "1", "on", "\x00"]),
    current=st.one_of(st.none(), junk, junk.map(lambda t: f"http://testserver/events/?{t}")),
)
def test_no_junk_is_a_500(auditor_client, name, query, shared, current):
    headers = {} if current is None else {**HTMX, "HTTP_HX_CURRENT_URL": current}
    response = auditor_client.post(
        CREATE, {"name": name, "query": query, "shared": shared}, **headers
    )
    assert response.status_code in (200, 302, 400), (name, query)
    if response.status_code == 400:
        assert "errorlist" in text(response)
    SavedView.objects.all().delete()


@pytest.mark.parametrize(
    ("url", "methods"),
    [
        (CREATE, ["get", "put", "delete"]),
        ("/events/views/1/", ["get", "put", "delete"]),
        ("/events/views/1/delete/", ["put", "delete"]),
        (MANAGE, ["post", "put", "delete"]),
    ],
)
def test_each_route_refuses_the_methods_it_does_not_take(auditor_client, url, methods):
    for method in methods:
        assert getattr(auditor_client, method)(url).status_code == 405, (url, method)
