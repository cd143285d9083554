"""A crawler for the staff dashboard, for tests/browser/test_crawler.py.

From each start page it clicks what a person would click, one level deep: the range
presets and the custom range, pagers and sort links, every filter control, the
links and chart bars in the page, the navigation. After each click it checks what
the issue asks for: no HTTP status >= 400, no console error or CSP violation, no
filter lost on the way, no junk in the URL ("??", a key given twice), and the
filter form showing what the URL says. Problems are collected, not raised, so one
run lists them all (Crawler.report()).

Clicks, not requests: an htmx link behaves differently from its href (another
target, a fragment, history), and only a click finds a link the browser cannot
reach. A target URL is clicked once per run; past a page's click budget, or past a
few links of one shape (event #1, event #2, ...), a link's URL is only requested
(Crawler.probe), which still checks its status.
"""

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, parse_qsl, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

# Query keys that place a request in a list rather than filter it.
PAGING = frozenset({"cursor", "after"})
PERIOD = frozenset({"range", "since", "until"})
PRESETS = ("24h", "7d", "30d", "90d")
DEFAULT_RANGE = "7d"
# Keys a URL may repeat (one value each): the event browser's type checkboxes.
MULTI_VALUED = frozenset({"type"})
# Pages that follow the global date range (a link to one of them should carry it).
PERIOD_PATHS = re.compile(r"^/(events/|leads/|errors/([^/]+/)?|analytics/|workflows/)?$")
# Not clicked: they download a file, end the session, or leave the dashboard.
NOT_CLICKED = re.compile(r"/export/|/download/|/accounts/logout/|^/admin/")
# How many links of one shape (the same path with its ids masked, the same query
# keys) are clicked in a run; the rest are requested (their status is checked).
SHAPE_CLICKS = 2
# A field id or lead id in a path: masked in a link's shape.
ID_SEGMENT = re.compile(r"/(?=[^/]*\d)[^/]+")

# Counts htmx requests sent and answered, so a click can wait for the swap it caused
# (htmx:afterRequest fires once per request, error or abort included; when the
# element that asked was swapped out, htmx fires it again on an ancestor in the page).
HTMX_TRACKER = """
window.__crawl = {sent: 0, done: 0};
document.addEventListener("htmx:beforeSend", () => { window.__crawl.sent++; });
document.addEventListener("htmx:afterRequest", (e) => {
  if (document.contains(e.target)) window.__crawl.done++;
});
"""
SETTLED = """() => window.__crawl && window.__crawl.sent <= window.__crawl.done
  && !document.querySelector(".htmx-request, .htmx-swapping, .htmx-settling")"""

# Everything on the page a crawl may click, described.
COLLECT = """() => {
  const hrefOf = (a) => a instanceof SVGAElement
    ? (a.href.baseVal || a.getAttribute("xlink:href")) : a.getAttribute("href");
  // A link in a closed <details> (a menu) shows once the menu is opened.
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return (r.width > 0 && r.height > 0) || !!el.closest("details:not([open])");
  };
  const links = [];
  const seen = {};
  for (const a of document.querySelectorAll("a")) {
    const href = hrefOf(a);
    if (href === null) continue;
    seen[href] = (seen[href] || 0) + 1;
    let zone = "other";
    if (a.closest("nav.mainnav") || a.classList.contains("brand")) zone = "nav";
    else if (a.closest("form.rangebar")) zone = "range";
    else if (a.closest("form.filters, .filter-links")) zone = "filters";
    else if (a.closest("svg")) zone = "chart";
    else if (a.closest("main")) zone = "main";
    links.push({
      href, nth: seen[href] - 1, zone, abs: new URL(href, location.href).href,
      htmx: a.hasAttribute("hx-get"), hxGet: a.getAttribute("hx-get"),
      pager: !!a.closest(".pager"), download: a.hasAttribute("download"),
      target: a.getAttribute("target") || "", visible: visible(a),
      text: (a.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 50),
    });
  }
  const fields = [];
  for (const form of document.querySelectorAll("form.filters")) {
    const trigger = form.getAttribute("hx-trigger") || "";
    for (const el of form.elements) {
      if (el.type === "hidden" || (!el.name && el.type !== "submit")) continue;
      const label = el.closest("label");
      fields.push({
        form: form.id, htmx: form.hasAttribute("hx-get"), trigger, name: el.name,
        type: el.tagName === "SELECT" ? "select" : el.type, value: el.value,
        checked: !!el.checked, visible: visible(el),
        options: el.tagName === "SELECT" ? [...el.options].map((o) => o.value) : [],
        suggestions: el.list ? [...el.list.options].map((o) => o.value) : [],
        count: label ? (label.querySelector(".count") || {}).textContent || "" : "",
        text: (el.type === "submit" ? el.textContent : el.name || "").trim(),
      });
    }
  }
  return {links, fields};
}"""

FIND_LINK = """([href, nth]) => {
  const hrefOf = (a) => a instanceof SVGAElement
    ? (a.href.baseVal || a.getAttribute("xlink:href")) : a.getAttribute("href");
  // The newest bucket of a chart ends "now": reopened a minute later, its bar's URL has
  // another `until`. The same link otherwise.
  const stable = (h) => {
    const u = new URL(h || "", location.href);
    u.searchParams.delete("until");
    return u.pathname + "?" + u.searchParams;
  };
  const links = [...document.querySelectorAll("a")];
  let found = links.filter((a) => hrefOf(a) === href);
  if (!found.length) found = links.filter((a) => stable(hrefOf(a)) === stable(href));
  return found[nth] || null;
}"""

OPEN_MENUS = """(a) => {
  for (let d = a.closest("details"); d; d = d.parentElement && d.parentElement.closest("details")) {
    d.open = true;
  }
}"""

# The filter forms and the range bar against the URL: what the page shows is what
# the URL asks for.
FORM_MISMATCHES = """({presets, fallback}) => {
  const params = new URLSearchParams(location.search);
  const out = [];
  for (const form of document.querySelectorAll("form.filters")) {
    const names = [...new Set([...form.elements].map((e) => e.name).filter(Boolean))];
    for (const name of names) {
      const fields = [...form.elements].filter((e) => e.name === name);
      const want = params.getAll(name).filter((v) => v !== "");
      const first = fields[0];
      if (first.type === "checkbox") {
        const shown = fields.filter((f) => f.checked).map((f) => f.value);
        const values = fields.map((f) => f.value);
        for (const v of want) if (values.includes(v) && !shown.includes(v)) out.push(`${form.id}: ${name}=${v} is in the URL but not checked`);
        for (const v of shown) if (!want.includes(v)) out.push(`${form.id}: ${name}=${v} is checked but not in the URL`);
      } else if (first.type === "hidden") {
        if (want.length && !fields.some((f) => want.includes(f.value))) out.push(`${form.id}: hidden ${name}=${fields.map((f) => f.value)} but the URL has ${name}=${want}`);
      } else if (first.tagName === "SELECT") {
        const options = [...first.options].map((o) => o.value);
        if (want.length && options.includes(want[0]) && first.value !== want[0]) out.push(`${form.id}: ${name} shows "${first.value}" but the URL has ${name}=${want[0]}`);
        if (!want.length && first.value !== "" && first.value !== options[0]) out.push(`${form.id}: ${name} shows "${first.value}" but the URL has no ${name}`);
      } else if (first.type !== "submit" && first.type !== "button") {
        if (first.value !== (want[0] ?? "")) out.push(`${form.id}: ${name} shows "${first.value}" but the URL has ${want.length ? name + "=" + want[0] : "no " + name}`);
      }
    }
  }
  const bar = document.querySelector("form.rangebar");
  if (bar) {
    const range = params.get("range") || "";
    const active = [...bar.querySelectorAll("a.range.active")].map((a) => a.textContent.trim());
    const expected = presets.includes(range) ? [range] : range === "" ? [fallback] : [];
    if (range === "custom" || presets.includes(range) || range === "") {
      if (active.join() !== expected.join()) out.push(`range bar: "${active}" is marked active but the URL has ${range ? "range=" + range : "no range"}`);
    }
    // The custom range form carries every other parameter in hidden fields.
    for (const [name, value] of params) {
      if (["range", "since", "until", "cursor", "after"].includes(name) || value === "") continue;
      const kept = [...bar.querySelectorAll("input[type=hidden]")].some((i) => i.name === name && i.value === value);
      if (!kept) out.push(`custom range form: no hidden field for ${name}=${value}`);
    }
  }
  return out;
}"""


@dataclass
class Problem:
    page: str
    control: str
    problem: str


@dataclass
class Action:
    kind: str  # range, custom, pager, sort, link, bar, nav, clear, checkbox, select, text, submit
    label: str
    key: tuple  # what makes two actions the same click (deduplicated per run)
    perform: Callable[[], None]
    htmx: bool = False
    # Query keys (or (key, value) pairs) the click may change or drop on purpose.
    changes: set = field(default_factory=set)
    # Checked after the click: (key, value) the URL must then hold, or (key, None)
    # for a key it must no longer hold.
    expect: list = field(default_factory=list)
    delay_ms: int = 0
    # Not clicked (nothing to click: a bar with no height); its URL is requested.
    probe_only: bool = False


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def short(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def url_junk(url: str) -> list[str]:
    """What is wrong with a URL's query string: "??", a key given twice, an empty key."""
    problems = []
    if "??" in url:
        problems.append(f'"??" in {short(url)}')
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    by_key = defaultdict(list)
    for key, value in pairs:
        by_key[key].append(value)
    for key, values in by_key.items():
        if not key or key.startswith("?"):
            problems.append(f"a parameter named {key!r} in {short(url)}")
        elif len(values) != len(set(values)):
            problems.append(f"{key} given twice with the same value in {short(url)}")
        elif len(values) > 1 and key not in MULTI_VALUED:
            problems.append(
                f"{key} given {len(values)} times ({', '.join(values)}) in {short(url)}"
            )
    return problems


def lost_filters(before: str, after: str, *, changes: set) -> list[str]:
    """The key=value pairs of `before` missing from `after`, but for paging keys and
    the keys (or pairs) the click changes on purpose."""
    old, new = query(before), query(after)
    lost = []
    to_preset = new.get("range", [""])[0] in PRESETS or "range" not in new
    for key, values in old.items():
        if key in PAGING or key in changes:
            continue
        # A preset replaces a custom range's bounds.
        if key in ("since", "until") and "range" in changes and to_preset:
            continue
        for value in values:
            if (key, value) not in changes and value not in new.get(key, []):
                lost.append(f"{key}={value}")
    return lost


def shape(url: str) -> tuple:
    parts = urlsplit(url)
    return (ID_SEGMENT.sub("/<id>", parts.path), tuple(sorted(set(query(url)))))


class Crawler:
    def __init__(
        self,
        page: Page,
        base_url: str,
        *,
        role: str,
        typed: dict[tuple[str, str], str],
        custom_range: tuple[str, str],
        staff: bool = False,
        cap: int = 40,
    ) -> None:
        self.page = page
        self.base = base_url.rstrip("/")
        self.role = role
        self.typed = typed
        self.custom_range = custom_range
        self.staff = staff
        self.cap = cap
        self.problems: list[Problem] = []
        self.clicked: set = set()
        self.shapes: defaultdict[tuple, int] = defaultdict(int)
        self.probed: set[str] = set()
        self.variants: list[str] = []
        self.stats = defaultdict(int)
        self._where = ("", "")
        page.add_init_script(HTMX_TRACKER)
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.note(f"page error: {exc}"))

    # --- what the browser reports, charged to the click under way --------------------

    def note(self, problem: str, *, page: str | None = None, control: str | None = None) -> None:
        where, what = self._where
        found = Problem(page or where, control or what, problem)
        if found not in self.problems:
            self.problems.append(found)

    def _own(self, url: str) -> bool:
        return url.startswith(self.base + "/")

    def _on_response(self, response) -> None:
        if self._own(response.url) and response.status >= 400:
            request = response.request
            how = "htmx " if request.headers.get("hx-request") else ""
            self.note(
                f"HTTP {response.status} for {how}{request.resource_type} GET {short(response.url)}"
                if request.method == "GET"
                else f"HTTP {response.status} for {request.method} {short(response.url)}"
            )

    def _on_request_failed(self, request) -> None:
        # A navigation away aborts what the last page still had in flight.
        failure = request.failure or ""
        if self._own(request.url) and "ERR_ABORTED" not in failure:
            self.note(f"request failed ({failure}): {short(request.url)}")

    def _on_console(self, message) -> None:
        text = message.text
        csp = "Content Security Policy" in text or "CSP violation" in text
        if csp or (message.type == "error" and not text.startswith("Failed to load resource")):
            self.note(f"console {message.type}: {text}")

    # --- moving about -----------------------------------------------------------------

    def settle(self, *, quiet_ms: int = 60) -> None:
        """Until no htmx request is in flight and nothing is swapping, twice over a
        short pause (one edit can fire a second request: keyup, then change)."""
        for _ in range(2):
            self.page.wait_for_function(SETTLED, timeout=15_000)
            self.page.wait_for_timeout(quiet_ms)

    def open(self, url: str) -> None:
        self.stats["loads"] += 1
        self.page.goto(url if url.startswith("http") else self.base + url)
        self.settle(quiet_ms=0)

    def probe(self, url: str) -> None:
        """Request a URL without the browser (the session's cookies): its status only."""
        if url in self.probed:
            return
        self.probed.add(url)
        self.stats["probed"] += 1
        response = self.page.request.get(url, max_redirects=5)
        if response.status >= 400:
            self.note(f"HTTP {response.status} for GET {short(url)} (requested, not clicked)")

    def htmx(self, act: Callable[[], None], *, delay_ms: int = 0) -> bool:
        """Do `act` and wait for the htmx request it causes; False if none was sent."""
        sent = self.page.evaluate("window.__crawl.sent")
        act()
        try:
            self.page.wait_for_function(
                "n => window.__crawl.sent > n", arg=sent, timeout=delay_ms + 3_000
            )
        except PlaywrightError:
            return False
        self.settle()
        return True

    def navigate(self, act: Callable[[], None]) -> bool:
        try:
            with self.page.expect_navigation(timeout=15_000):
                act()
        except PlaywrightError:
            return False
        self.settle(quiet_ms=0)
        return True

    # --- checks on the page shown -------------------------------------------------------

    def check_page(self, *, links: list[dict] | None = None) -> None:
        """The page as it stands: its URL, its links, its forms against its URL."""
        url = self.page.url
        for junk in url_junk(url):
            self.note(f"URL: {junk}")
        links = self.collect()["links"] if links is None else links
        here = urlsplit(url)
        old = query(url)
        for link in links:
            target = link["abs"]
            if not self._own(target):
                continue
            for junk in url_junk(target):
                self.note(f'link "{link["text"]}" ({link["zone"]}): {junk}')
            if link["zone"] == "nav" and link["text"] == "Admin" and not self.staff:
                self.note("the navigation shows Admin to a user who is not staff")
            parts = urlsplit(target)
            new = query(target)
            if parts.path == here.path and link["zone"] not in ("filters", "nav"):
                # A link to this page changes what it sets and keeps the rest (the
                # navigation opens a page afresh: only its date range stays).
                changes = {k for k, v in new.items() if old.get(k) != v} | {"section"}
                for lost in lost_filters(url, target, changes=changes):
                    self.note(
                        f'link "{link["text"]}" ({link["zone"]}) drops {lost}: {short(target)}'
                    )
            elif (
                PERIOD_PATHS.match(parts.path)
                and "range" not in new
                and old.get("range", [DEFAULT_RANGE]) != [DEFAULT_RANGE]
            ):
                self.note(
                    f'link "{link["text"]}" ({link["zone"]}) drops the date range '
                    f"range={old['range'][0]}: {short(target)}"
                )
        ranges = {"presets": list(PRESETS), "fallback": DEFAULT_RANGE}
        for mismatch in self.page.evaluate(FORM_MISMATCHES, ranges):
            self.note(f"form: {mismatch}")

    def collect(self) -> dict:
        return self.page.evaluate(COLLECT)

    # --- a start page -----------------------------------------------------------------

    def crawl(self, url: str, *, full: bool = True) -> None:
        """Open `url` and click what it offers, one thing at a time, reopening the page
        before each click.

        `full`: the filter forms and the range bar too (the preset's pages are queued
        in self.variants). Without it (a preset's page): the links, chart bars,
        pagers and the forms' submit buttons, whose targets follow the range.
        """
        self._where = (short(url), "open the page")
        self.stats["pages"] += 1
        self.open(url)
        start = self.page.url
        found = self.collect()
        self.check_page(links=found["links"])
        fresh, clicks, back_tested = True, 0, not full
        for action in self.plan(found, start=start, full=full):
            if action.key in self.clicked:
                continue
            if action.probe_only or clicks >= self.cap or self._shape_done(action):
                if action.probe_only or action.kind in ("link", "bar", "nav", "pager", "sort"):
                    self._where = (short(start), action.label)
                    self.probe(action.key[1])
                continue
            self.clicked.add(action.key)
            clicks += 1
            if not fresh:
                self._where = (short(start), "open the page again")
                self.open(start)
            fresh = False
            changed = self.run(action, start=start)
            if changed and not back_tested and action.htmx and action.kind in FIELD_KINDS:
                back_tested = True
                self.back(action, start=start)
        self.stats["clicks"] += clicks

    def _shape_done(self, action: Action) -> bool:
        if action.kind != "link":
            return False
        key = shape(action.key[1])
        self.shapes[key] += 1
        return self.shapes[key] > SHAPE_CLICKS

    def run(self, action: Action, *, start: str) -> bool:
        """Click, then check; True if the URL changed."""
        self._where = (short(start), action.label)
        self.stats[action.kind] += 1
        before = self.page.url
        try:
            if action.htmx:
                if not self.htmx(action.perform, delay_ms=action.delay_ms):
                    self.note("the click sent no request")
                    return False
            elif not self.navigate(action.perform):
                self.note("the click opened no page")
                return False
        except PlaywrightError as exc:
            self.note(f"could not click: {str(exc).splitlines()[0]}")
            return False
        after = self.page.url
        for key, value, present in action.expect:
            if (value in query(after).get(key, [])) != present:
                state = "not in" if present else "still in"
                self.note(f"the click had no effect: {key}={value} is {state} {short(after)}")
        if urlsplit(after).path == urlsplit(before).path or action.kind in ("range", "custom"):
            for lost in lost_filters(before, after, changes=action.changes):
                self.note(f"lost filter {lost}: {short(before)} became {short(after)}")
        self.check_page()
        if action.kind in ("range", "custom") and after not in self.variants:
            self.variants.append(after)
        return after != before

    def back(self, action: Action, *, start: str) -> None:
        """Back after a filter change shows the page before it, filters and all."""
        self._where = (short(start), f"Back after {action.label}")
        self.stats["back"] += 1
        self.page.go_back()
        self.page.wait_for_timeout(150)
        self.settle()
        if query(self.page.url) != query(start):
            self.note(f"Back went to {short(self.page.url)}, not {short(start)}")
        self.check_page()

    # --- what to click on a page --------------------------------------------------------

    def plan(self, found: dict, *, start: str, full: bool) -> list[Action]:
        """The clicks a page offers, those the issue names first (a page's budget
        may run out): range bar, pagers and sort links, filter controls, chart bars,
        links in the page, the navigation."""
        here = query(start)
        groups: dict[str, list[Action]] = defaultdict(list)
        for link in found["links"]:
            action = self._link_action(link, here=here, start=start)
            if action and (full or action.kind not in ("range", "clear")):
                groups[action.kind].append(action)
        if full and found["links"] and any(a["zone"] == "range" for a in found["links"]):
            groups["custom"].append(self._custom_range(start))
        for fieldinfo in found["fields"]:
            if full or fieldinfo["type"] == "submit":
                groups["field"].extend(self._field_actions(fieldinfo, start=start, found=found))
        order = ("range", "custom", "pager", "sort", "field", "clear", "bar", "link", "nav")
        return [action for kind in order for action in groups[kind]]

    def _click_link(self, href: str, nth: int) -> Callable[[], None]:
        def click() -> None:
            handle = self.page.evaluate_handle(FIND_LINK, [href, nth]).as_element()
            if handle is None:
                raise PlaywrightError(f"no link to {href} on the page any more")
            # As a person would: open the menus (<details>) the link is in first.
            handle.evaluate(OPEN_MENUS)
            handle.click(timeout=5_000)

        return click

    def _link_action(self, link: dict, *, here: dict, start: str) -> Action | None:
        href, target = link["href"], link["abs"]
        if (
            not self._own(target)
            or href.startswith(("#", "javascript:", "mailto:"))
            or link["download"]
            or link["target"] == "_blank"
            or NOT_CLICKED.search(urlsplit(target).path)
        ):
            return None
        new = query(target)
        changes = {k for k, v in new.items() if here.get(k) != v}
        kind = {"range": "range", "chart": "bar", "nav": "nav", "filters": "clear"}.get(
            link["zone"], "link"
        )
        expect = []
        if kind == "range":
            changes = set(PERIOD)
            expect = [("range", link["text"], True)]
        elif kind == "clear":
            changes = set(here) - PERIOD
        elif link["pager"] and urlsplit(target).path == urlsplit(start).path:
            kind = "sort" if "sort" in changes else "pager"
            expect = [(key, new[key][0], True) for key in changes & {"sort", "cursor"}]
        label = f'{kind} "{link["text"]}"' + (" (htmx)" if link["htmx"] else "")
        return Action(
            kind=kind,
            label=label,
            key=("link", target, link["htmx"]),
            perform=self._click_link(href, link["nth"]),
            htmx=link["htmx"],
            changes=changes | PAGING,
            expect=expect,
            # A bar with no height has nothing to click: its URL is requested.
            probe_only=not link["visible"],
        )

    def _custom_range(self, start: str) -> Action:
        since, until = self.custom_range

        def submit() -> None:
            bar = self.page.locator("form.rangebar")
            details = bar.locator("details.custom-range")
            if details.get_attribute("open") is None:
                details.locator("summary").click()
            bar.locator("input[name=since]").fill(since)
            bar.locator("input[name=until]").fill(until)
            bar.get_by_role("button", name="Apply").click()

        return Action(
            kind="custom",
            label=f"custom range {since} to {until}",
            key=("custom", start),
            perform=submit,
            changes=set(PERIOD) | PAGING,
            expect=[("range", "custom", True), ("since", since, True), ("until", until, True)],
        )

    def _field_actions(self, info: dict, *, start: str, found: dict) -> list[Action]:
        path = urlsplit(start).path
        name, kind, current = info["name"], info["type"], info["value"]
        form = f"#{info['form']}"
        field_css = f'{form} [name="{name}"]'
        actions = []

        def act(label, perform, *, expect=(), changes=(), delay_ms=0, key=None):
            actions.append(
                Action(
                    kind=kind if kind in FIELD_KINDS else "text",
                    label=label,
                    key=("field", start, key or label),
                    perform=perform,
                    htmx=info["htmx"],
                    changes=set(changes) | PAGING,
                    expect=list(expect),
                    delay_ms=delay_ms,
                )
            )

        if kind == "submit":
            button = self.page.locator(f"{form} [type=submit]")
            act(f'button "{info["text"]}"', lambda: button.click())
        elif kind == "checkbox":
            value = info["value"]
            # Every type that has events (or is checked), and one that has none.
            if info["count"].strip() == "0" and not info["checked"]:
                empties = [
                    f
                    for f in found["fields"]
                    if f["name"] == name and f["count"].strip() == "0" and not f["checked"]
                ]
                if empties and empties[0]["value"] != value:
                    return []
            box = self.page.locator(f'{field_css}[value="{value}"]')
            state = "uncheck" if info["checked"] else "check"
            act(
                f"{state} {name}={value}",
                lambda: box.click(),
                expect=[(name, value, not info["checked"])],
                changes={(name, value)},
            )
        elif kind == "select":
            select = self.page.locator(field_css)
            for option in [o for o in info["options"] if o != current][:3]:
                act(
                    f"select {name}={option or '(any)'}",
                    lambda option=option: select.select_option(value=option),
                    expect=[(name, option, True)] if option else [],
                    changes={name},
                )
        elif kind in ("text", "search", "number", "date"):
            value = self.typed.get((path, name)) or next(iter(info["suggestions"]), "") or "ab"
            if value == current:
                value = ""  # already filtered on it: clear it
            box = self.page.locator(field_css)
            keyup = "keyup" in info["trigger"] and kind == "text"

            def type_in(box=box, value=value, keyup=keyup) -> None:
                box.fill(value)
                # The keyup trigger where the form has one, else Enter (a submit).
                box.press("End" if keyup else "Enter")

            expect = [(name, value, True)] if value else [(name, current, False)]
            act(
                f'type "{value}" into {name}' + (" (keyup)" if keyup else " (Enter)"),
                type_in,
                expect=expect,
                changes={name},
                delay_ms=400 if keyup else 0,
            )
        return actions

    # --- the report -------------------------------------------------------------------

    def report(self) -> str:
        """The problems by page and problem, each with the clicks that showed it."""
        grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
        for p in self.problems:
            grouped[(p.page, p.problem)].append(p.control)
        lines = [f"{len(grouped)} problem(s) seen as {self.role}:"]
        for page in dict.fromkeys(page for page, _ in grouped):
            lines.append(f"\n  on {page}")
            for (where, problem), controls in grouped.items():
                if where == page:
                    shown = ", ".join(controls[:4]) + (
                        f" (+{len(controls) - 4})" if len(controls) > 4 else ""
                    )
                    lines.append(f"    - {problem}\n        after: {shown}")
        return "\n".join(lines)


FIELD_KINDS = ("checkbox", "select", "text", "search", "number", "date", "submit")
