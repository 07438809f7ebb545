// Send the form with XMLHttpRequest, whose upload events report the bytes sent,
// so the bar follows the body as it leaves the browser. Without JavaScript the
// form posts normally and the page shows the same errors.
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  const button = document.getElementById("upload-button");
  const box = document.getElementById("upload-progress");
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const status = document.getElementById("upload-status");
  const errors = document.getElementById("upload-errors");
  const list = document.getElementById("images");
  const empty = document.getElementById("no-images");

  function showProgress(percent) {
    bar.value = percent;
    text.textContent = percent + " %";
    // Every value shown, for whoever wants to check that the bar followed the bytes.
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

  function errorsOf(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body.errors) return body.errors;
      if (body.error) return [body.error];
    } catch (_) { /* not JSON: a proxy or a server error page */ }
    return ["The upload failed (HTTP " + xhr.status + "). Try again."];
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const xhr = new XMLHttpRequest();
    showErrors([]);
    status.textContent = "";
    status.className = "status";
    bar.dataset.trace = "";
    showProgress(0);
    box.hidden = false;
    button.disabled = true;

    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) showProgress(Math.floor((100 * e.loaded) / e.total));
    });
    xhr.upload.addEventListener("load", () => showProgress(100));
    xhr.addEventListener("loadend", () => {
      button.disabled = false;
      if (xhr.status !== 201) {
        // A bar at 100 % next to an error says the opposite of what happened.
        box.hidden = true;
        showProgress(0);
      }
      if (xhr.status === 201) {
        const answer = JSON.parse(xhr.responseText);
        if (answer.confirm) {
          window.location.assign(answer.confirm);
          return;
        }
        const saved = answer.saved;
        addImages(saved);
        status.textContent = "Stored " + saved.length + (saved.length === 1 ? " image." : " images.");
        status.className = "status ok";
        form.reset();
      } else if (xhr.status === 0) {
        showErrors(["The connection was lost during the upload. Try again."]);
      } else {
        showErrors(errorsOf(xhr));
      }
    });
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.send(data);
  });
})();
