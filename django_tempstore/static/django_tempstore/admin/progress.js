/* django-tempstore admin: refresh the size of receiving uploads in place.
 *
 * The size cell of a receiving row (list and detail pages) is a
 * <span class="tempstore-live" data-tempstore-upload="<id>"
 *       data-tempstore-state="receiving" data-tempstore-progress-url="<url>">
 * This script asks that URL (TempUploadAdmin.progress_view) about those rows
 * every second, updates their bar and text, and stops once none is receiving.
 * No inline script and no dependency: it only reads data attributes.
 */
(function () {
  "use strict";

  var INTERVAL = 1000;
  var MAX_INTERVAL = 30000;
  var delay = INTERVAL;

  function receiving() {
    return Array.prototype.slice.call(
      document.querySelectorAll('.tempstore-live[data-tempstore-state="receiving"]')
    );
  }

  function updateRow(live, row) {
    var text = live.querySelector(".tempstore-received");
    var bar = live.querySelector("progress.tempstore-progress");
    if (row.state !== "receiving") {
      // Done (complete, persisted, failed...): the final size, no bar.
      live.textContent = row.text;
      live.setAttribute("data-tempstore-state", row.state);
      var cells = live.closest("tr");
      var state = cells && cells.querySelector(".tempstore-state");
      if (state) {
        state.textContent = row.state_label;
        state.className = "tempstore-state tempstore-state-" + row.state;
      }
      // The detail page: the read-only "state" field of the same form.
      var form = !cells && live.closest("form");
      var field = form && form.querySelector(".field-state .readonly");
      if (field) {
        field.textContent = row.state_label;
      }
      return;
    }
    if (row.upload_length) {
      if (!bar) {
        bar = document.createElement("progress");
        bar.className = "tempstore-progress";
        live.insertBefore(bar, live.firstChild);
        live.insertBefore(document.createTextNode(" "), bar.nextSibling);
      }
      bar.max = row.upload_length;
      bar.value = row.size;
    }
    if (text) {
      text.textContent = row.text;
    }
  }

  function schedule() {
    if (receiving().length) {
      window.setTimeout(poll, delay);
    }
  }

  function poll() {
    var lives = receiving();
    if (!lives.length) {
      return;
    }
    var url = new URL(lives[0].getAttribute("data-tempstore-progress-url"), window.location.href);
    lives.forEach(function (live) {
      url.searchParams.append("id", live.getAttribute("data-tempstore-upload"));
    });
    window
      .fetch(url.toString(), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        var byId = {};
        data.uploads.forEach(function (row) {
          byId[row.id] = row;
        });
        lives.forEach(function (live) {
          var row = byId[live.getAttribute("data-tempstore-upload")];
          if (row) {
            updateRow(live, row);
          } else {
            // Deleted meanwhile: nothing more to ask about.
            live.setAttribute("data-tempstore-state", "gone");
          }
        });
        delay = INTERVAL;
        schedule();
      })
      .catch(function () {
        // A restart or a lost session: ask again, less and less often.
        delay = Math.min(delay * 2, MAX_INTERVAL);
        schedule();
      });
  }

  function start() {
    schedule();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
