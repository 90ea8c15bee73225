// edgeproxy admin page: small enhancements only. Everything works without this file.
"use strict";

function copyText(input, button) {
  const done = (label) => { button.textContent = label; setTimeout(() => { button.textContent = "Copy"; }, 2000); };
  input.focus();
  input.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(() => done("Copied"), () => done("Press Ctrl+C"));
  } else {
    // Plain-HTTP pages on a LAN address are not a secure context: fall back to the selection.
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    done(ok ? "Copied" : "Press Ctrl+C");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const input = document.getElementById(button.dataset.copy);
    if (!input) continue;
    button.hidden = false;
    button.addEventListener("click", () => copyText(input, button));
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  for (const button of document.querySelectorAll("button[data-back]")) {
    if (window.history.length < 2) continue;
    button.hidden = false;
    button.addEventListener("click", () => window.history.back());
  }
});
