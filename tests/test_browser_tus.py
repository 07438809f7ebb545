"""The example page's resumable uploads (tus-js-client) in headless Chromium against gunicorn."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from django_tempstore.models import State, TempUpload
from tests.browser import chromium, missing_browser, screenshot
from tests.conftest import temp_files
from tests.servers import ROOT, free_port, run_server, wait_until

TUS_CLIENT = ROOT / "node_modules" / "tus-js-client" / "dist" / "tus.min.js"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser())),
    pytest.mark.skipif(not TUS_CLIENT.is_file(), reason="tus-js-client missing: run npm ci"),
]

PNG = b"\x89PNG\r\n\x1a\n"
CHUNK = 256 * 1024


@pytest.fixture
def browser():
    with chromium() as browser:
        yield browser


def example_site(log_dir: Path, port: int, **env: str):  # type: ignore[no-untyped-def]
    """The example project under gunicorn, also bound to ``port`` so a restart keeps the URLs."""
    return run_server(
        "gunicorn",
        log_dir,
        args=("--bind", f"127.0.0.1:{port}"),
        **env,
        DJANGO_SETTINGS_MODULE="tests.example_settings",
        PYTHONPATH=os.pathsep.join([str(ROOT / "example_project"), str(ROOT)]),
    )


def nothing_pending(tempstore_dirs: Path) -> bool:
    return not temp_files(tempstore_dirs) and not TempUpload.objects.pending().exists()


def test_paused_across_a_restart_resumes_and_completes_then_a_refusal_says_why(
    browser, transactional_db, tmp_path, settings, tempstore_dirs
):
    port = free_port()
    content = PNG + os.urandom(6 * 1024 * 1024)
    (tmp_path / "big.png").write_bytes(content)
    (tmp_path / "notes.txt").write_bytes(b"just text\n" * 100)

    context = browser.new_context()
    context.add_init_script(f"window.EXAMPLE_TUS_CHUNK_SIZE = {CHUNK};")

    def slow_patch(route):  # type: ignore[no-untyped-def]
        # Loopback is too fast to pause by hand: let each chunk take a moment.
        if route.request.method == "PATCH":
            time.sleep(0.05)
        route.continue_()

    context.route("**/files/**", slow_patch)
    page = context.new_page()
    page.set_default_timeout(30_000)

    with example_site(tmp_path, port):
        page.goto(f"http://127.0.0.1:{port}/")
        # The page uses the tus client, not the multipart form.
        assert page.evaluate("typeof window.tus") == "object"
        page.set_input_files("#id_files", str(tmp_path / "big.png"))
        page.click("#upload-button")
        page.wait_for_function("document.getElementById('progress-bar').value >= 10")
        page.click("#upload-pause")
        page.wait_for_selector("#upload-status:has-text('Paused.')")
        assert page.inner_text("#upload-pause") == "Resume"
        upload = TempUpload.objects.get(resumable=True)
        assert upload.state == State.RECEIVING
        screenshot(page, "tus-paused")
    # The server is down; the partial upload waits, its durable offset on disk.
    upload.refresh_from_db()
    assert 0 < upload.size < len(content)
    assert os.path.getsize(upload.path) >= upload.size

    with example_site(tmp_path, port):
        page.click("#upload-pause")
        page.wait_for_selector("#upload-status.ok")
        assert page.inner_text("#upload-status") == "Stored 1 image."
        assert page.locator("#images li a").first.inner_text() == "big.png"
        assert (settings.MEDIA_ROOT / "photos" / "big.png").read_bytes() == content
        trace = [int(v) for v in page.get_attribute("#progress-bar", "data-trace").split(",")]
        assert trace == sorted(trace) and trace[-1] == 100
        upload.refresh_from_db()
        assert upload.state == State.PERSISTED
        assert wait_until(lambda: nothing_pending(tempstore_dirs))

        page.set_input_files("#id_files", str(tmp_path / "notes.txt"))
        page.click("#upload-button")
        page.wait_for_selector("#upload-errors li")
        assert page.locator("#upload-errors li").all_inner_texts() == [
            "“notes.txt” is not an image: only PNG, JPEG, GIF and WebP files are accepted."
        ]
        screenshot(page, "tus-refused")
        refused = TempUpload.objects.exclude(pk=upload.pk).get(resumable=True)
        assert wait_until(lambda: nothing_pending(tempstore_dirs))
        refused.refresh_from_db()
        assert refused.state == State.DISCARDED
        assert sorted(p.name for p in (settings.MEDIA_ROOT / "photos").iterdir()) == ["big.png"]
    context.close()


def test_without_the_client_the_page_posts_the_multipart_form(
    browser, transactional_db, tmp_path, settings, tempstore_dirs
):
    port = free_port()
    content = PNG + b"\0" * 1000
    (tmp_path / "small.png").write_bytes(content)
    page = browser.new_page()
    with example_site(tmp_path, port, EXAMPLE_TUS_JS_DIR=str(tmp_path / "no-node-modules")):
        page.goto(f"http://127.0.0.1:{port}/")
        assert page.evaluate("typeof window.tus") == "undefined"
        assert page.locator("#upload-pause").count() == 0
        page.set_input_files("#id_files", str(tmp_path / "small.png"))
        page.click("#upload-button")
        page.wait_for_selector("#upload-status.ok")
        assert (settings.MEDIA_ROOT / "photos" / "small.png").read_bytes() == content
        assert not TempUpload.objects.filter(resumable=True).exists()
        assert TempUpload.objects.get().state == State.PERSISTED
        assert wait_until(lambda: nothing_pending(tempstore_dirs))
    page.close()


def test_a_file_above_tus_max_size_is_refused_by_status_and_explained_by_the_form(
    browser, transactional_db, tmp_path, settings, tempstore_dirs
):
    port = free_port()
    (tmp_path / "huge.png").write_bytes(PNG + b"\0" * (9 * 1024 * 1024))
    page = browser.new_page()
    answers = []
    page.on("response", lambda r: answers.append((r.request.method, r.url, r.status)))
    with example_site(tmp_path, port):
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#id_files", str(tmp_path / "huge.png"))
        page.click("#upload-button")
        page.wait_for_selector("#upload-errors li")

        assert page.locator("#upload-errors li").all_inner_texts() == [
            "huge.png is larger than the 8\xa0MiB this site accepts. Send a smaller file."
        ]
        # The tus creation was refused (its status read from the response), then
        # the form's own path recorded the refusal; no tus upload was created.
        assert ("POST", f"http://127.0.0.1:{port}/files/", 413) in answers
        assert ("POST", f"http://127.0.0.1:{port}/", 413) in answers
        assert not TempUpload.objects.filter(resumable=True).exists()
        assert wait_until(lambda: nothing_pending(tempstore_dirs))
        assert list(TempUpload.objects.values_list("state", flat=True)) == [State.FAILED]
    page.close()


def test_a_refusal_after_bytes_shows_the_servers_message(
    browser, transactional_db, tmp_path, settings, tempstore_dirs
):
    port = free_port()
    (tmp_path / "photo.png").write_bytes(PNG + os.urandom(600 * 1024))
    context = browser.new_context()
    context.add_init_script(f"window.EXAMPLE_TUS_CHUNK_SIZE = {CHUNK};")
    refusal = "The body goes past Upload-Length. Send only the bytes that remain."
    patches = []

    def second_patch_refused(route):  # type: ignore[no-untyped-def]
        if route.request.method == "PATCH":
            patches.append(route.request.url)
            if len(patches) == 2:
                route.fulfill(
                    status=413,
                    headers={"Tus-Resumable": "1.0.0"},
                    content_type="text/plain",
                    body=refusal + "\n",
                )
                return
        route.continue_()

    context.route("**/files/**", second_patch_refused)
    page = context.new_page()
    page.set_default_timeout(30_000)
    with example_site(tmp_path, port):
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#id_files", str(tmp_path / "photo.png"))
        page.click("#upload-button")
        page.wait_for_selector("#upload-errors li")

        # A 413 once bytes are stored is not re-sent through the form: the server says why.
        assert page.locator("#upload-errors li").all_inner_texts() == [refusal]
        assert not page.locator("#upload-progress").is_visible()
    context.close()
