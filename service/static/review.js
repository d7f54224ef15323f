// The review queue from the keyboard: j/k move between frames, 1..9 tick the selected
// frame's classes, n unticks them all ("no event"), s saves (the page comes back on
// the same filters and page, the next frame first), ? lists the keys.
"use strict";

(function () {
  function setup() {
    const list = document.getElementById("review-frames");
    if (!list) return;
    const cards = [...list.querySelectorAll("li.frame")];
    let current = -1;

    function select(index) {
      if (cards.length === 0) return;
      current = Math.min(cards.length - 1, Math.max(0, index));
      cards.forEach((card, i) => {
        card.classList.toggle("selected", i === current);
        if (i === current) card.setAttribute("aria-current", "true");
        else card.removeAttribute("aria-current");
      });
      cards[current].focus();
      cards[current].scrollIntoView({ block: "nearest" });
    }

    const form = () => (current >= 0 ? cards[current].querySelector("form") : null);
    const handlers = {
      j: () => select(current + 1),
      k: () => select(current < 0 ? 0 : current - 1),
      n: () => {
        const f = form();
        if (f) f.querySelectorAll('input[name="labels"]').forEach((box) => (box.checked = false));
      },
      s: () => {
        const f = form();
        if (f) f.requestSubmit();
      },
    };
    for (let key = 1; key <= 9; key += 1) {
      handlers[String(key)] = () => {
        const f = form();
        const box = f && f.querySelector(`input[data-key="${key}"]`);
        if (box) box.checked = !box.checked;
      };
    }
    window.atconKeys.install(handlers);
    if (cards.length) select(0);
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
