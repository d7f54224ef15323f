// Keyboard review shared by the events inbox and the video page: single-key shortcuts
// (never while typing in a field), the "?" list of keys, and verdicts sent to the API
// one after another (an undo pressed right after a verdict waits for it).
"use strict";

(function () {
  const typing = (target) => {
    if (!target) return false;
    const tag = target.tagName || "";
    return ["INPUT", "TEXTAREA", "SELECT"].includes(tag) || target.isContentEditable;
  };

  // handlers: {j, k, c, f, u, o, ...}: functions called with the keydown event
  function install(handlers) {
    const dialog = document.getElementById("shortcuts");
    document.addEventListener("keydown", (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey || typing(e.target)) return;
      if (e.key === "?") {
        e.preventDefault();
        if (!dialog) return;
        if (dialog.open) dialog.close();
        else dialog.showModal();
        return;
      }
      if (dialog && dialog.open) return;
      const handler = handlers[e.key];
      if (!handler) return;
      e.preventDefault();
      handler(e);
    });
  }

  let chain = Promise.resolve();

  // Send a verdict (PUT, body {verdict}) or an undo (DELETE) to an event's review URL;
  // resolves to {ok, data} or {ok: false, error} with a sentence to show.
  function send(method, url, body) {
    const run = async () => {
      try {
        const response = await fetch(url, {
          method,
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRF-Token": window.atcon.csrfToken(),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await response.text();
        if (!response.ok) return { ok: false, error: window.atcon.problemDetail(text, response.status) };
        return { ok: true, data: JSON.parse(text) };
      } catch (err) {
        return { ok: false, error: "the connection to the server was lost; try again" };
      }
    };
    const result = chain.then(run);
    chain = result.then(() => undefined);
    return result;
  }

  const verdictText = (verdict) =>
    verdict === "confirmed" ? "Confirmed" : verdict === "false_positive" ? "False positive" : "Not reviewed";

  window.atconKeys = { install, send, verdictText };
})();
