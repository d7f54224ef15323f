// The video page: select an event (click or arrow keys) -> seek the player to its start
// and show its maps; the overlay opacity slider; verdicts sent to the API in place.
"use strict";

(function () {
  const fmtSeconds = (value) => {
    if (typeof value !== "number") return "–";
    const total = Math.max(0, value);
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = (total % 60).toFixed(1).padStart(4, "0");
    if (hours) return `${hours}:${String(minutes).padStart(2, "0")}:${seconds}`;
    return `${minutes}:${seconds}`;
  };
  const fmtNumber = (value) => (typeof value === "number" ? value.toFixed(2) : "–");
  const fmtWhen = (iso) => {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso || "";
    return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  };
  const verdictName = (v) =>
    v === "confirmed" ? "confirmed" : v === "false_positive" ? "false positive" : "not reviewed";
  const historyText = (h) =>
    h.action === "undo"
      ? `${fmtWhen(h.at)}: ${h.reviewer} undid ${verdictName(h.previous_verdict)}, back to ${verdictName(h.verdict)}`
      : `${fmtWhen(h.at)}: ${h.reviewer} set ${verdictName(h.verdict)} (was ${verdictName(h.previous_verdict)})`;
  const reviewText = (review) =>
    review
      ? `${review.verdict === "confirmed" ? "Confirmed" : "False positive"} by ${review.reviewer}, ${fmtWhen(review.reviewed_at)}`
      : "Not reviewed";

  function setup() {
    const dataNode = document.getElementById("video-data");
    if (!dataNode) return;
    const data = JSON.parse(dataNode.textContent);
    const events = data.events;
    const player = document.getElementById("player");
    const detail = document.getElementById("event-detail");
    const field = (name) => detail.querySelector(`[data-field="${name}"]`);
    const links = new Map();
    document.querySelectorAll("#lanes a.event").forEach((a) => links.set(a.dataset.eventId, a));
    let current = events.findIndex((e) => e.id === data.selected);

    const setImage = (name, url, alt) => {
      detail.querySelectorAll(`img[data-map="${name}"]`).forEach((img) => {
        img.hidden = !url;
        if (url) img.src = url;
        else img.removeAttribute("src");
        if (alt !== undefined) img.alt = alt;
      });
    };

    function showHistory(event) {
      const history = event.review_history || [];
      const list = field("history");
      list.replaceChildren(
        ...history.map((h) => {
          const li = document.createElement("li");
          li.textContent = historyText(h);
          return li;
        })
      );
      field("history-count").textContent = String(history.length);
      field("history-box").hidden = history.length === 0;
    }

    function show(event) {
      detail.hidden = false;
      field("label").textContent = event.label;
      field("times").textContent = `${fmtSeconds(event.start_s)} – ${fmtSeconds(event.end_s)}`;
      field("peak").textContent = fmtSeconds(event.peak_s);
      field("score").textContent = `${fmtNumber(event.score)} (mean ${fmtNumber(event.mean_score)})`;
      const consistency = field("consistency");
      consistency.textContent = fmtNumber(event.consistency);
      consistency.classList.toggle("low", event.low);
      field("review").textContent = reviewText(event.review);
      showHistory(event);
      field("clip").href = event.clip_url;
      const warning = field("warning");
      warning.hidden = !event.low;
      warning.querySelector("strong").textContent =
        `Low attention consistency (${fmtNumber(event.consistency)}, below ${fmtNumber(data.low_consistency)}).`;
      const maps = event.maps || {};
      field("no-maps").hidden = Object.keys(maps).length > 0;
      const peak = fmtSeconds(event.peak_s);
      setImage("frame", maps.frame, `Peak frame of the ${event.label} event at ${peak}`);
      setImage(
        "overlay-base",
        maps.gradcam ? maps.frame : maps.overlay,
        `Grad-CAM heat map over the peak frame of the ${event.label} event: warm colours mark where the model looked`
      );
      setImage("gradcam", maps.gradcam);
      setImage(
        "guided_backprop",
        maps.guided_backprop,
        `Guided Backprop map of the peak frame: bright pixels changed the ${event.label} score most`
      );
      setImage("mask", maps.mask, "Peak frame masked by the ATCON soft mask made from its Guided Backprop map");
      const form = detail.querySelector("form.verdict");
      if (form) {
        form.action = `/videos/${data.video_id}/events/${encodeURIComponent(event.id)}/review`;
        form.dataset.api = `/v1/videos/${data.video_id}/events/${encodeURIComponent(event.id)}/review`;
        field("verdict-status").textContent = "";
      }
    }

    function select(index, { focus = false } = {}) {
      if (index < 0 || index >= events.length) return;
      current = index;
      const event = events[index];
      links.forEach((a, id) => {
        const on = id === event.id;
        a.classList.toggle("selected", on);
        if (on) a.setAttribute("aria-current", "true");
        else a.removeAttribute("aria-current");
      });
      show(event);
      if (player) {
        player.pause();
        player.currentTime = event.start_s;
      }
      const url = new URL(location.href);
      url.searchParams.set("event", event.id);
      url.hash = "";
      history.replaceState(null, "", url);
      if (focus && links.has(event.id)) links.get(event.id).focus();
    }

    links.forEach((a, id) => {
      a.addEventListener("click", (e) => {
        e.preventDefault();
        select(events.findIndex((ev) => ev.id === id));
      });
    });

    const move = (step) => {
      if (events.length === 0) return;
      const next = current < 0 ? (step > 0 ? 0 : events.length - 1) : current + step;
      select(Math.min(events.length - 1, Math.max(0, next)), { focus: true });
    };
    document.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      const tag = (e.target && e.target.tagName) || "";
      if (["INPUT", "TEXTAREA", "SELECT", "VIDEO"].includes(tag) || e.target.isContentEditable) return;
      e.preventDefault();
      move(e.key === "ArrowRight" ? 1 : -1);
    });

    // overlay opacity
    const slider = document.getElementById("opacity");
    if (slider) {
      const apply = () => {
        detail.style.setProperty("--heat-opacity", String(Number(slider.value) / 100));
        slider.setAttribute("aria-valuetext", `${slider.value} percent`);
      };
      slider.addEventListener("input", apply);
      apply();
    }

    // playhead on the timeline
    const playhead = document.getElementById("playhead");
    if (player && playhead) {
      const move = () => {
        const duration = player.duration || 0;
        if (!duration) return;
        playhead.style.left = `calc(var(--lane-label) + (100% - var(--lane-label)) * ${player.currentTime / duration})`;
      };
      player.addEventListener("timeupdate", move);
      player.addEventListener("seeked", move);
    }

    // verdicts: the API in place of the form post (no reload, the player keeps its place)
    const form = detail.querySelector("form.verdict");
    const keys = window.atconKeys;
    const given = []; // events given a verdict on this page, latest last (what u takes back)

    async function refresh(event) {
      // the events answer carries the review and its history as the server keeps them
      const response = await fetch(`/v1/videos/${data.video_id}/events`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const fresh = (await response.json()).events.find((e) => e.id === event.id);
      if (!fresh) return;
      event.review = fresh.review;
      event.review_history = fresh.review_history;
      const link = links.get(event.id);
      if (link) {
        link.classList.remove("reviewed", "confirmed", "false_positive");
        if (event.review) link.classList.add("reviewed", event.review.verdict);
      }
      if (events[current] === event) {
        field("review").textContent = reviewText(event.review);
        showHistory(event);
      }
    }

    async function giveVerdict(verdict) {
      const event = events[current];
      if (!event) return;
      const status = field("verdict-status");
      status.textContent = "Saving…";
      status.classList.remove("error");
      given.push(event);
      const result = await keys.send("PUT", event.review_url, { verdict });
      if (!result.ok) {
        const index = given.lastIndexOf(event);
        if (index >= 0) given.splice(index, 1);
        status.textContent = `Not saved: ${result.error}`;
        status.classList.add("error");
        return;
      }
      event.review = result.data;
      status.textContent = `Saved: ${verdictName(verdict)}.`;
      await refresh(event);
    }

    async function undo() {
      const selected = events[current];
      const event = given.pop() || (selected && selected.review ? selected : null);
      const status = field("verdict-status");
      if (!event) {
        status.textContent = "Nothing to undo.";
        return;
      }
      const index = events.indexOf(event);
      if (index !== current) select(index, { focus: true });
      status.textContent = "Undoing…";
      status.classList.remove("error");
      const result = await keys.send("DELETE", event.review_url);
      if (!result.ok) {
        status.textContent = `Not undone: ${result.error}`;
        status.classList.add("error");
        return;
      }
      status.textContent = `Undone: ${verdictName(result.data.review ? result.data.review.verdict : null)} again.`;
      await refresh(event);
    }

    if (form) {
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        giveVerdict(e.submitter ? e.submitter.value : "confirmed");
      });
    }

    const handlers = {
      j: () => move(1),
      k: () => move(-1),
      o: () => {
        if (current < 0 || !player) return;
        player.currentTime = events[current].start_s;
        player.play().catch(() => undefined);
      },
    };
    if (form) {
      handlers.c = () => giveVerdict("confirmed");
      handlers.f = () => giveVerdict("false_positive");
      handlers.u = () => undo();
    }
    keys.install(handlers);

    if (current >= 0 && player && new URL(location.href).searchParams.has("event")) {
      const seek = () => {
        player.currentTime = events[current].start_s;
      };
      if (player.readyState >= 1) seek();
      else player.addEventListener("loadedmetadata", seek, { once: true });
    }
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
