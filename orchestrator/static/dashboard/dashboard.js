// A refused swap's message (orchestrator/middleware.py) stays until the next
// request: then it is about a view the user has moved on from.
document.addEventListener("htmx:beforeRequest", () => {
  const slot = document.getElementById("request-error");
  if (slot) slot.replaceChildren();
});

// One history entry per change of filters. A text field fires keyup, change and
// submit for one edit, and each answer would push the same URL again: Back
// would then seem to do nothing. An answer for the URL already shown replaces
// its entry instead.
document.addEventListener("htmx:beforeHistoryUpdate", (event) => {
  const update = event.detail.history;
  if (update.type !== "push") return;
  const target = new URL(update.path, location.href);
  if (target.pathname === location.pathname && target.search === location.search) {
    update.type = "replace";
  }
});

// Back and Forward restore htmx's snapshot of the page, taken when the user had
// already typed the next filter: the filter forms are set again from the URL,
// which is what the restored table shows.
function fillFiltersFromUrl() {
  const params = new URLSearchParams(location.search);
  for (const form of document.querySelectorAll("form.filters")) {
    for (const field of form.elements) {
      if (!field.name || field.type === "submit" || field.type === "button") continue;
      const values = params.getAll(field.name);
      if (field.type === "checkbox" || field.type === "radio") {
        field.checked = values.includes(field.value);
      } else if (field.tagName === "SELECT") {
        for (const option of field.options) {
          option.selected = field.multiple ? values.includes(option.value) : option.value === (values[0] ?? "");
        }
      } else if (field.type !== "hidden" || values.length) {
        field.value = values[0] ?? "";
      }
    }
  }
}
document.addEventListener("htmx:historyRestore", fillFiltersFromUrl);

// The range bar is outside what a filter change swaps, and its links were written
// for the URL the page loaded with: after each URL htmx pushes (or restores), its
// presets and the custom range's hidden fields are written again from that URL, so
// a preset keeps every filter chosen since. The keys it sets itself are dropped,
// as base.html's {% querystring %} drops them.
const PERIOD_KEYS = ["range", "since", "until", "cursor", "after"];
function syncRangeBar() {
  const bar = document.querySelector("form.rangebar");
  if (!bar) return;
  const filters = new URLSearchParams(location.search);
  for (const key of PERIOD_KEYS) filters.delete(key);
  for (const link of bar.querySelectorAll("a.range")) {
    const preset = new URL(link.href, location.href).searchParams.get("range");
    const query = new URLSearchParams(filters);
    query.set("range", preset);
    link.setAttribute("href", "?" + query.toString());
  }
  const custom = bar.querySelector(".custom-range");
  for (const field of custom.querySelectorAll("input[type=hidden]:not([name=range])")) {
    field.remove();
  }
  const anchor = custom.querySelector("input[name=range]");
  for (const [name, value] of filters) {
    const field = document.createElement("input");
    field.type = "hidden";
    field.name = name;
    field.value = value;
    custom.insertBefore(field, anchor);
  }
}
document.addEventListener("htmx:pushedIntoHistory", syncRangeBar);
document.addEventListener("htmx:replacedInHistory", syncRangeBar);
document.addEventListener("htmx:historyRestore", syncRangeBar);
