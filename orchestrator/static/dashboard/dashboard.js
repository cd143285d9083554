// A refused swap's message (orchestrator/middleware.py) stays until the next
// request: then it is about a view the user has moved on from.
document.addEventListener("htmx:beforeRequest", () => {
  const slot = document.getElementById("request-error");
  if (slot) slot.replaceChildren();
});
