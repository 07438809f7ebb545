"""The admin refreshes a receiving upload's bar by itself (headless Chromium, real gunicorn).

A tus upload (its declared length gives the bar) is sent from a raw socket in
pieces with pauses; the admin's list and detail pages, loaded once, must show
its bytes grow and then its end, without a reload.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from django_tempstore.models import State, TempUpload
from tests.browser import chromium, example_site, missing_browser, screenshot
from tests.servers import wait_until
from tests.utils import read_response, starts

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser())),
]

KiB = 1024
MiB = 1024 * KiB
CHANGELIST = "/admin/django_tempstore/tempupload/"
LENGTH = 6 * MiB  # under the example's 8 MiB per image
PIECE = 192 * KiB
PAUSE = 0.3  # 32 pieces: about 9.6 s for the whole body (the admin page polls once a second,
# less often on a loaded machine: a shorter upload let it see only 2 of its steps)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
@starts("browser")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
@starts("server")
def site(browser, transactional_db, tmp_path):
    # Threads: the admin's polls are answered while a worker thread reads the body.
    # The offset is recorded at each heartbeat: every 0.3 s instead of 10 s.
    with example_site(
        tmp_path,
        args=("--worker-class", "gthread", "--threads", "4"),
        TEMPSTORE_TEST_SETTINGS=json.dumps({"TEMPSTORE_HEARTBEAT_INTERVAL": 0.3}),
    ) as server:
        yield server


def create_tus_upload(site, name: str) -> str:
    """POST a tus creation with a declared length; return the upload's path."""
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    filename = base64.b64encode(name.encode()).decode()
    connection.request(
        "POST",
        "/files/",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(LENGTH),
            "Upload-Metadata": f"filename {filename}",
        },
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 201, response.status
    return urlsplit(response.getheader("Location")).path


def patch_slowly(site, path: str, done: dict) -> None:
    """PATCH the whole body from a raw socket, a piece at a time with a pause after each."""
    body = PNG + os.urandom(LENGTH - len(PNG))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{site.port}\r\n"
        "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {LENGTH}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", site.port), timeout=60) as sock:
        sock.sendall(head)
        for start in range(0, LENGTH, PIECE):
            sock.sendall(body[start : start + PIECE])
            time.sleep(PAUSE)
        done["response"] = read_response(sock)


def log_in(page, site) -> None:
    page.goto(site.url(f"/admin/login/?next={CHANGELIST}"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#tempstore-summary")


SAMPLE = """() => {
    const bar = document.querySelector("progress.tempstore-progress");
    const text = document.querySelector(".tempstore-live .tempstore-received");
    return bar && text ? [bar.value, text.textContent] : null;
}"""


def bar_value(page) -> int | None:
    """The bar's value, or None once the upload is done (the script removes the bar)."""
    sample = page.evaluate(SAMPLE)
    return None if sample is None else int(sample[0])


def test_admin_list_and_detail_show_a_slow_upload_grow_without_a_reload(site, browser, admin_user):
    long_path = "/api/v2/projects/attachments/" + "very-long-segment/" * 8
    TempUpload.objects.create(
        name="old.upload",
        original_name="old.bin",
        host="web-1",
        pid=1,
        state=State.PERSISTED,
        size=10,
        request_path=long_path,
        closed_at=timezone.now() - timedelta(minutes=1),
    )
    path = create_tus_upload(site, "growing.png")
    upload = TempUpload.objects.get(state=State.RECEIVING)

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/progress/" in r.url else None)
    log_in(page, site)
    detail = context.new_page()
    detail.goto(site.url(f"{CHANGELIST}{upload.pk}/change/"))
    # A mark that a reload would wipe.
    for each in (page, detail):
        each.evaluate("window.tempstoreNotReloaded = true")
    row = page.locator("#result_list tbody tr", has_text="growing.png")
    assert bar_value(page) == 0
    assert "0\xa0bytes of 6\xa0MiB (0\xa0%)" in row.inner_text()

    # The request path is shown whole, wrapped, not clipped.
    path_cell = page.locator("#result_list tbody tr", has_text="old.bin").locator(
        "td.field-request_path"
    )
    assert path_cell.inner_text() == long_path
    assert path_cell.evaluate("cell => cell.scrollWidth <= cell.clientWidth")
    # ... and inside the list's visible width: no horizontal scrolling needed to read it.
    edges = path_cell.evaluate(
        "cell => [cell.getBoundingClientRect().right,"
        " cell.closest('.results').getBoundingClientRect().right]"
    )
    assert edges[0] <= edges[1] + 1, edges  # sub-pixel rounding

    done: dict = {}
    sender = threading.Thread(target=patch_slowly, args=(site, path, done), daemon=True)
    sender.start()
    seen = [0]
    texts = set()
    while sender.is_alive():
        sample = page.evaluate(SAMPLE)  # one read: the bar and its text together
        if sample is None:  # complete before the response reached the sender
            break
        value = int(sample[0])
        if value != seen[-1]:
            seen.append(value)
            texts.add(sample[1])
            if len(seen) == 3:
                screenshot(page, "admin-live-receiving")
                screenshot(detail, "admin-live-receiving-detail")
        page.wait_for_timeout(100)
    sender.join()
    assert done["response"].startswith(b"HTTP/1.1 204"), done["response"][:200]

    assert len(seen) >= 4, seen  # at least three steps between 0 and the end
    assert seen == sorted(seen) and 0 < seen[1] < seen[-2] < LENGTH
    assert len(texts) >= 3, texts
    assert all(text.endswith("\xa0%)") and " of 6\xa0MiB " in text for text in texts)
    assert detail.evaluate("document.querySelector('progress.tempstore-progress') !== null")

    # The end: the final size and state, no bar, still the same page; polling stops.
    assert wait_until(lambda: TempUpload.objects.get(pk=upload.pk).state == State.COMPLETE)
    page.wait_for_function(
        "document.querySelector('.tempstore-live').dataset.tempstoreState === 'complete'"
    )
    assert row.locator(".tempstore-state").inner_text() == "complete"
    assert row.locator("td.field-human_size").inner_text() == "6\xa0MiB"
    assert page.locator("progress.tempstore-progress").count() == 0
    detail.wait_for_function(
        "document.querySelector('.tempstore-live').dataset.tempstoreState === 'complete'"
    )
    assert detail.inner_text(".field-state .readonly") == "complete"
    assert detail.inner_text(".field-human_size .readonly") == "6\xa0MiB"
    for each in (page, detail):
        assert each.evaluate("window.tempstoreNotReloaded") is True
    screenshot(page, "admin-live-complete")
    screenshot(detail, "admin-live-complete-detail")
    asked = len(polls)
    page.wait_for_timeout(3000)
    assert len(polls) == asked  # nothing receiving: no more requests
    assert asked >= 3
    context.close()
