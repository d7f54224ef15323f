// Shared behaviour of the pages: upload with progress, and live tables that follow
// running jobs. Plain JavaScript, no build; the pages work (except upload) without it.
"use strict";

(function () {
  const csrfToken = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  // The sentence of a problem+json answer, else the HTTP status.
  const problemDetail = (text, status) => {
    try {
      const body = JSON.parse(text);
      if (body && body.detail) return body.detail;
    } catch (e) {
      /* not JSON */
    }
    return `the server answered HTTP ${status}`;
  };

  window.atcon = { csrfToken, problemDetail };

  // -- live parts: [data-live] elements are re-read from the server while a job runs --
  const POLL_MS = 1500;
  const busy = () =>
    document.querySelector(
      '[data-live] [data-status="queued"], [data-live] [data-status="running"]'
    ) !== null;

  const focusKey = (root) => {
    const active = document.activeElement;
    if (!active || !root.contains(active)) return null;
    if (active.getAttribute("href")) return `[href="${CSS.escape(active.getAttribute("href"))}"]`;
    if (active.id) return `#${CSS.escape(active.id)}`;
    return null;
  };

  async function refreshLive() {
    const live = document.querySelectorAll("[data-live][id]");
    if (live.length === 0) return false;
    const response = await fetch(location.pathname + location.search, {
      credentials: "same-origin",
      headers: { Accept: "text/html", "X-Live-Refresh": "1" },
    });
    if (!response.ok) return false;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    let finished = false;
    live.forEach((element) => {
      const fresh = doc.getElementById(element.id);
      if (!fresh) {
        finished = true; // the page changed shape (a processed video shows its events)
        return;
      }
      const before = element.querySelectorAll('[data-status="queued"], [data-status="running"]').length;
      const after = fresh.querySelectorAll('[data-status="queued"], [data-status="running"]').length;
      if (after < before) finished = true;
      const key = focusKey(element);
      element.replaceWith(fresh);
      if (key) {
        const target = fresh.querySelector(key);
        if (target) target.focus();
      }
    });
    return finished;
  }

  let polling = false;
  function pollLive() {
    if (polling) return;
    polling = true;
    const tick = async () => {
      try {
        const finished = await refreshLive();
        if (finished && document.body.dataset.reloadOnFinish !== undefined) {
          location.reload();
          return;
        }
      } catch (e) {
        /* network hiccup: try again next tick */
      }
      if (busy()) setTimeout(tick, POLL_MS);
      else polling = false;
    };
    setTimeout(tick, POLL_MS);
  }
  window.atcon.pollLive = pollLive;

  // -- one server-sent-events stream per page (GET /v1/jobs/stream) -----------------
  // Progress moves bars in place; a job that changes state (queued -> running ->
  // done or failed) has the page's live parts read again, once; the stream ends when
  // no job runs. Without EventSource, the page polls as before.
  let stream = null;
  let refreshing = Promise.resolve();

  const liveJobIds = () => [
    ...new Set(
      [...document.querySelectorAll('[data-live] [data-job-id][data-status="queued"], [data-live] [data-job-id][data-status="running"], [data-live][data-job-id][data-status="queued"], [data-live][data-job-id][data-status="running"]')].map(
        (el) => el.dataset.jobId
      )
    ),
  ];

  function showProgress(job) {
    document.querySelectorAll(`[data-job-id="${CSS.escape(job.job_id)}"]`).forEach((el) => {
      el.querySelectorAll("progress").forEach((bar) => (bar.value = job.progress));
      el.querySelectorAll(".pct").forEach((pct) => (pct.textContent = `${Math.round(job.progress * 100)}%`));
    });
  }

  function refreshFor(job) {
    refreshing = refreshing.then(async () => {
      const els = [...document.querySelectorAll(`[data-job-id="${CSS.escape(job.job_id)}"]`)];
      if (els.length && els.every((el) => el.dataset.status === job.status)) return;
      try {
        const finished = await refreshLive();
        const ended = job.status === "done" || job.status === "failed";
        if ((finished || ended) && document.body.dataset.reloadOnFinish !== undefined) {
          location.reload();
          return;
        }
      } catch (e) {
        /* network hiccup: the next change refreshes again */
      }
      follow(); // rows may have come or gone: follow the jobs shown now
    });
  }

  function follow() {
    const ids = liveJobIds();
    const key = ids.join(",");
    if (stream && stream.key === key) return;
    if (stream) stream.source.close();
    stream = null;
    if (ids.length === 0) return;
    if (!window.EventSource) {
      pollLive();
      return;
    }
    const source = new EventSource(`/v1/jobs/stream?${ids.map((id) => `job=${id}`).join("&")}`);
    stream = { source, key };
    source.addEventListener("job", (message) => {
      const job = JSON.parse(message.data);
      showProgress(job);
      refreshFor(job);
    });
    source.addEventListener("end", () => {
      source.close();
      if (stream && stream.source === source) stream = null;
    });
  }
  window.atcon.follow = follow;

  // -- upload with progress ----------------------------------------------------------
  function setupUpload() {
    const form = document.getElementById("upload-form");
    if (!form) return;
    const input = document.getElementById("upload-file");
    const button = document.getElementById("upload-button");
    const bar = document.getElementById("upload-progress");
    const percent = document.getElementById("upload-percent");
    const status = document.getElementById("upload-status");
    const say = (text, isError) => {
      status.textContent = text;
      status.classList.toggle("error", Boolean(isError));
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const file = input.files && input.files[0];
      if (!file) {
        say("Choose a video file first.", true);
        input.focus();
        return;
      }
      const limit = Number(form.dataset.maxBytes || 0);
      if (limit && file.size > limit) {
        say(`This file is ${file.size} bytes; the server accepts up to ${limit}.`, true);
        return;
      }
      const data = new FormData();
      const camera = form.querySelector("#upload-camera");
      // the camera first: a bad one is refused before the video's bytes are sent
      if (camera && camera.value.trim()) data.append("camera", camera.value.trim());
      data.append("file", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const p = Math.round((100 * e.loaded) / e.total);
        bar.value = p;
        percent.textContent = `${p}%`;
      });
      xhr.addEventListener("load", () => {
        button.disabled = false;
        if (xhr.status === 202) {
          bar.value = 100;
          percent.textContent = "100%";
          say(`${file.name} uploaded; detection is queued. The table below follows its progress.`);
          form.reset();
          refreshLive().then(() => follow());
        } else {
          say(`Upload failed: ${problemDetail(xhr.responseText, xhr.status)}`, true);
        }
      });
      xhr.addEventListener("error", () => {
        button.disabled = false;
        say("Upload failed: the connection to the server was lost. Try again.", true);
      });
      bar.value = 0;
      bar.hidden = false;
      percent.hidden = false;
      percent.textContent = "0%";
      button.disabled = true;
      say(`Uploading ${file.name}…`);
      xhr.send(data);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupUpload();
    if (busy()) follow();
  });
  // -- maps a worker draws on demand: [data-drawn-map] images answer 202 until drawn --
  const MAP_RETRY_MS = 2000;
  const MAP_TRIES = 60;
  document.querySelectorAll("img[data-drawn-map]").forEach((img) => {
    let tries = 0;
    const caption = img.parentElement && img.parentElement.querySelector("figcaption");
    const label = caption ? caption.textContent : "";
    img.addEventListener("error", () => {
      if (tries >= MAP_TRIES) return;
      tries += 1;
      if (caption) caption.textContent = `${label} (drawing…)`;
      setTimeout(() => {
        img.src = `${img.dataset.drawnMap}?try=${tries}`;
      }, MAP_RETRY_MS);
    });
    img.addEventListener("load", () => {
      if (caption) caption.textContent = label;
    });
  });
})();
