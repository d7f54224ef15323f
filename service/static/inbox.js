// The events inbox: j/k move between rows, c confirms, f marks a false positive (each
// saved at once, then the next row), u undoes the last verdict given on this page,
// o opens the event in its video, ? lists the keys.
"use strict";

(function () {
  function setup() {
    const table = document.getElementById("inbox");
    if (!table) return;
    const rows = [...table.querySelectorAll("tr.event-row")];
    const canOperate = table.dataset.canOperate === "true";
    const status = document.getElementById("inbox-status");
    const keys = window.atconKeys;
    const done = []; // rows given a verdict on this page, latest last (what u takes back)
    let current = -1;

    const say = (text, error = false) => {
      status.textContent = text;
      status.classList.toggle("error", error);
    };

    function select(index) {
      if (rows.length === 0) return;
      current = Math.min(rows.length - 1, Math.max(0, index));
      rows.forEach((row, i) => {
        row.classList.toggle("selected", i === current);
        if (i === current) row.setAttribute("aria-current", "true");
        else row.removeAttribute("aria-current");
      });
      rows[current].focus();
      rows[current].scrollIntoView({ block: "nearest" });
    }

    function show(row, review) {
      const state = review ? review.verdict : "unreviewed";
      row.dataset.state = state;
      row.classList.remove("state-unreviewed", "state-confirmed", "state-false_positive");
      row.classList.add(`state-${state}`);
      const cell = row.querySelector("td.state");
      cell.textContent = keys.verdictText(state);
      if (review) {
        const who = document.createElement("span");
        who.className = "help";
        who.textContent = ` by ${review.reviewer}`;
        cell.append(who);
      }
    }

    const describe = (row) => `${row.dataset.label} (row ${rows.indexOf(row) + 1})`;

    async function verdict(value) {
      if (current < 0) select(0);
      const row = rows[current];
      if (!row) return;
      say(`Saving ${describe(row)}…`);
      select(current + 1); // move on at once; the saves complete in order
      done.push(row); // an undo pressed now is sent after this save
      const result = await keys.send("PUT", row.dataset.reviewUrl, { verdict: value });
      if (!result.ok) {
        const index = done.lastIndexOf(row);
        if (index >= 0) done.splice(index, 1);
        say(`Not saved (${describe(row)}): ${result.error}`, true);
        return;
      }
      show(row, result.data);
      say(`Saved: ${describe(row)} ${keys.verdictText(value).toLowerCase()}. Press u to undo.`);
    }

    async function undo() {
      const row = done.pop() || (current >= 0 && rows[current].dataset.state !== "unreviewed" ? rows[current] : null);
      if (!row) {
        say("Nothing to undo on this page.");
        return;
      }
      select(rows.indexOf(row));
      say(`Undoing ${describe(row)}…`);
      const result = await keys.send("DELETE", row.dataset.reviewUrl);
      if (!result.ok) {
        say(`Not undone (${describe(row)}): ${result.error}`, true);
        return;
      }
      show(row, result.data.review);
      say(`Undone: ${describe(row)} is ${keys.verdictText(row.dataset.state).toLowerCase()} again.`);
    }

    const handlers = {
      j: () => select(current + 1),
      k: () => select(current < 0 ? 0 : current - 1),
      o: () => {
        if (current >= 0) location.href = rows[current].dataset.pageUrl;
      },
    };
    if (canOperate) {
      handlers.c = () => verdict("confirmed");
      handlers.f = () => verdict("false_positive");
      handlers.u = () => undo();
    }
    keys.install(handlers);
    rows.forEach((row, i) => row.addEventListener("click", (e) => {
      if (e.target.closest("a")) return;
      select(i);
    }));
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
