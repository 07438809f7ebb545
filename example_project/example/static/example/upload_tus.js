// Resumable uploads with tus-js-client (served only when `npm ci` installed it):
// each file goes to the tus endpoint in chunks, can be paused and resumed (also
// after a server restart), then the finished uploads are claimed by one POST that
// validates and stores them. Without the client, upload.js posts the form.
"use strict";

(function () {
  const script = document.currentScript;
  if (!window.tus || !window.tus.isSupported) return;
  const endpoint = script.dataset.endpoint;
  const finishUrl = script.dataset.finish;
  const chunkSize = window.EXAMPLE_TUS_CHUNK_SIZE || 8 * 1024 * 1024;

  const form = document.getElementById("upload-form");
  const input = form.querySelector("input[type=file]");
  const button = document.getElementById("upload-button");
  const box = document.getElementById("upload-progress");
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const status = document.getElementById("upload-status");
  const errors = document.getElementById("upload-errors");
  const list = document.getElementById("images");
  const empty = document.getElementById("no-images");

  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.id = "upload-pause";
  toggle.textContent = "Pause";
  toggle.hidden = true;
  box.append(" ", toggle);

  let uploads = [];
  let paused = false;
  let viaForm = false;

  function showProgress(percent) {
    if (bar.value === percent && bar.dataset.trace) return;
    bar.value = percent;
    text.textContent = percent + " %";
    bar.dataset.trace = bar.dataset.trace ? bar.dataset.trace + "," + percent : String(percent);
  }

  function showErrors(messages) {
    errors.replaceChildren(...messages.map((message) => {
      const item = document.createElement("li");
      item.textContent = message;
      return item;
    }));
  }

  function addImages(saved) {
    for (const image of saved) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = image.url;
      link.textContent = image.name;
      const size = document.createElement("span");
      size.className = "size";
      size.textContent = image.human_size;
      item.append(link, " ", size);
      list.prepend(item);
    }
    empty.hidden = true;
  }

  function done(ok) {
    button.disabled = false;
    if (!ok) {
      // A bar at 100 % next to an error says the opposite of what happened.
      box.hidden = true;
      showProgress(0);
    }
    toggle.hidden = true;
    uploads = [];
  }

  function finish() {
    const data = new FormData();
    data.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    for (const upload of uploads) data.append("upload", upload.url);
    const xhr = new XMLHttpRequest();
    xhr.addEventListener("loadend", () => {
      done(xhr.status === 201);
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 201) {
        addImages(body.saved);
        status.textContent = "Stored " + body.saved.length + (body.saved.length === 1 ? " image." : " images.");
        status.className = "status ok";
        form.reset();
      } else {
        showErrors(body.errors || ["The upload failed (HTTP " + xhr.status + "). Try again."]);
      }
    });
    xhr.open("POST", finishUrl);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.send(data);
  }

  function start(files) {
    const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
    const sent = files.map(() => 0);
    let left = files.length;
    uploads = files.map((file, index) => new window.tus.Upload(file, {
      endpoint: endpoint,
      chunkSize: chunkSize,
      retryDelays: [0, 1000, 3000, 5000],
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      removeFingerprintOnSuccess: true,
      onProgress: (bytes) => {
        sent[index] = bytes;
        showProgress(Math.floor((100 * sent.reduce((a, b) => a + b, 0)) / total));
      },
      onSuccess: () => {
        left -= 1;
        if (left === 0) {
          showProgress(100);
          toggle.hidden = true;
          finish();
        }
      },
      onError: (error) => {
        // A DetailedError carries the server's answer (a network error has none).
        // Read it first: abort() below resets the request, its status and its body.
        const response = error.originalResponse || null;
        const code = response ? response.getStatus() : 0;
        const body = response && response.getBody() ? String(response.getBody()).trim() : "";
        for (const upload of uploads) upload.abort();
        done(false);
        if (code === 413 && !sent.some((bytes) => bytes > 0)) {
          // Too large for this site: the form's own path records and explains the refusal.
          viaForm = true;
          form.requestSubmit();
          return;
        }
        // The server's message says what to do; it names "the file", the page names it.
        showErrors([body ? body.replace(/^The file\b/, file.name) : "The upload failed (" + String(error.message || error) + "). Try again."]);
      },
    }));
    for (const upload of uploads) {
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      });
    }
  }

  toggle.addEventListener("click", () => {
    paused = !paused;
    for (const upload of uploads) {
      if (paused) upload.abort();
      else upload.start();
    }
    toggle.textContent = paused ? "Resume" : "Pause";
    status.textContent = paused ? "Paused." : "";
    status.className = "status";
  });

  // Capture phase on the document: runs before upload.js's listener on the form.
  document.addEventListener("submit", (event) => {
    if (event.target !== form) return;
    if (viaForm) {
      viaForm = false;
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
    const files = Array.from(input.files);
    showErrors([]);
    status.textContent = "";
    status.className = "status";
    if (!files.length) {
      showErrors(["Choose at least one image."]);
      return;
    }
    bar.dataset.trace = "";
    showProgress(0);
    box.hidden = false;
    button.disabled = true;
    paused = false;
    toggle.textContent = "Pause";
    toggle.hidden = false;
    start(files);
  }, true);
})();
