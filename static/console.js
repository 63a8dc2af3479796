// What the templates would otherwise do inline, which the Content-Security-Policy forbids.

// <form data-confirm="Remove x?">: ask before submitting.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// <div data-width="42">: a bar 42% wide (style attributes are blocked; CSSOM is not).
function applyWidths(root) {
  root.querySelectorAll("[data-width]").forEach((bar) => { bar.style.width = `${bar.dataset.width}%`; });
}
document.addEventListener("DOMContentLoaded", () => applyWidths(document));
document.addEventListener("htmx:load", (event) => applyWidths(event.target));

// htmx leaves error responses unswapped, so a refused or failed request would look like nothing
// happened: the error page (400, 403, 429, 500) replaces the page's content instead.
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.xhr.status < 400) return;
  Object.assign(event.detail, {
    shouldSwap: true, isError: false, target: document.querySelector("main"),
    selectOverride: "main", swapOverride: "outerHTML",
  });
});

// <pre>…</pre><button data-copy>: copy the SQL of the <pre> just before the button.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = button.previousElementSibling.textContent;
  navigator.clipboard.writeText(text).then(
    () => { button.textContent = "Copied"; },
    () => { window.getSelection().selectAllChildren(button.previousElementSibling); button.textContent = "Selected: press Ctrl+C"; },
  );
});

// <button data-nav-toggle aria-controls="mainnav">: on narrow screens the navigation folds behind
// it (the CSS does the folding once the header is .nav-collapsible; without JavaScript it wraps).
document.addEventListener("DOMContentLoaded", () => {
  const toggle = document.querySelector("[data-nav-toggle]");
  if (!toggle) return;
  const header = toggle.closest("header");
  const setOpen = (open) => {
    header.classList.toggle("nav-open", open);
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.hidden = false;
  header.classList.add("nav-collapsible");
  toggle.addEventListener("click", () => setOpen(toggle.getAttribute("aria-expanded") !== "true"));
  header.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && header.classList.contains("nav-open")) { setOpen(false); toggle.focus(); }
  });
});
