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

    document.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      const tag = (e.target && e.target.tagName) || "";
      if (["INPUT", "TEXTAREA", "SELECT", "VIDEO"].includes(tag) || e.target.isContentEditable) return;
      if (events.length === 0) return;
      e.preventDefault();
      const step = e.key === "ArrowRight" ? 1 : -1;
      const next = current < 0 ? (step > 0 ? 0 : events.length - 1) : current + step;
      select(Math.min(events.length - 1, Math.max(0, next)), { focus: true });
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
    if (form) {
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const verdict = e.submitter ? e.submitter.value : "confirmed";
        const status = field("verdict-status");
        const event = events[current];
        status.textContent = "Saving…";
        status.classList.remove("error");
        try {
          const response = await fetch(form.dataset.api, {
            method: "PUT",
            credentials: "same-origin",
            headers: {
              "Content-Type": "application/json",
              Accept: "application/json",
              "X-CSRF-Token": window.atcon.csrfToken(),
            },
            body: JSON.stringify({ verdict }),
          });
          const text = await response.text();
          if (!response.ok) {
            status.textContent = `Not saved: ${window.atcon.problemDetail(text, response.status)}`;
            status.classList.add("error");
            return;
          }
          event.review = JSON.parse(text);
          field("review").textContent = reviewText(event.review);
          const link = links.get(event.id);
          if (link) {
            link.classList.remove("confirmed", "false_positive");
            link.classList.add("reviewed", event.review.verdict);
          }
          status.textContent = `Saved: ${event.review.verdict === "confirmed" ? "confirmed" : "false positive"}.`;
        } catch (err) {
          status.textContent = "Not saved: the connection to the server was lost. Try again.";
          status.classList.add("error");
        }
      });
    }

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
