"""The example site and the admin in a real browser (headless Chromium) against a real server."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from django_tempstore.models import State, TempUpload
from tests.browser import chromium, example_site, missing_browser, screenshot
from tests.conftest import temp_files
from tests.servers import wait_until
from tests.utils import starts

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser())),
]

PNG = b"\x89PNG\r\n\x1a\n"
GIF = b"GIF89a"


@pytest.fixture(scope="module")
@starts("browser")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
@starts("server")
def site(browser, transactional_db, tmp_path: Path):
    with example_site(tmp_path) as server:
        yield server


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def file_of(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def no_pending_left(tempstore_dirs: Path) -> bool:
    return not temp_files(tempstore_dirs) and not TempUpload.objects.pending().exists()


def test_upload_progress_reaches_100_and_the_images_are_listed(
    site, page, tmp_path, settings, tempstore_dirs
):
    photo = PNG + os.urandom(4 * 1024 * 1024)
    page.goto(site.url("/"))
    # Slow the upload to 16 MiB/s so that the bar has time to move.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": 16 * 1024 * 1024,
        },
    )
    page.set_input_files(
        "#id_files",
        [file_of(tmp_path, "photo.png", photo), file_of(tmp_path, "icon.gif", GIF + b"\0" * 64)],
    )
    page.click("#upload-button")
    page.wait_for_selector("#upload-status.ok")

    assert page.inner_text("#upload-status") == "Stored 2 images."
    assert page.inner_text("#progress-text") == "100 %"
    trace = [int(v) for v in page.get_attribute("#progress-bar", "data-trace").split(",")]
    assert trace[0] == 0 and trace[-1] == 100
    assert trace == sorted(trace)
    assert any(0 < value < 100 for value in trace), trace
    listed = page.locator("#images li").all_inner_texts()
    assert any(item.startswith("photo.png") for item in listed)
    assert any(item.startswith("icon.gif") for item in listed)
    screenshot(page, "upload-done")

    assert (settings.MEDIA_ROOT / "photos" / "photo.png").read_bytes() == photo
    assert sorted(TempUpload.objects.values_list("state", flat=True)) == [State.PERSISTED] * 2
    assert wait_until(lambda: no_pending_left(tempstore_dirs))

    page.reload()  # The list is read from the storage, not only added by the script.
    assert "photo.png" in page.inner_text("#images")


def test_refused_upload_says_why_and_leaves_nothing(
    browser, site, page, tmp_path, settings, tempstore_dirs
):
    page.goto(site.url("/"))
    assert not page.locator("#upload-progress").is_visible()  # hidden until an upload starts
    assert "up to 8\xa0MiB each" in page.inner_text(".help")
    page.set_input_files(
        "#id_files",
        [
            file_of(tmp_path, "notes.txt", b"just text\n" * 100),
            file_of(tmp_path, "small.png", PNG + b"\0" * 1000),
        ],
    )
    page.click("#upload-button")
    page.wait_for_selector("#upload-errors li")

    errors = page.locator("#upload-errors li").all_inner_texts()
    assert errors == [
        "“notes.txt” is not an image: only PNG, JPEG, GIF and WebP files are accepted.",
    ]
    screenshot(page, "upload-refused")
    assert wait_until(lambda: no_pending_left(tempstore_dirs))
    assert sorted(TempUpload.objects.values_list("state", flat=True)) == [State.DISCARDED] * 2
    assert not (settings.MEDIA_ROOT / "photos").exists()

    # Without JavaScript the form posts normally and the page says the same.
    no_js = browser.new_context(java_script_enabled=False).new_page()
    no_js.goto(site.url("/"))
    no_js.set_input_files("#id_files", file_of(tmp_path, "notes.txt", b"text"))
    with no_js.expect_navigation():
        no_js.click("#upload-button")
    assert no_js.locator("#upload-errors li").all_inner_texts() == [errors[0]]
    no_js.context.close()
    assert wait_until(lambda: no_pending_left(tempstore_dirs))


TOO_LARGE = "huge.png is larger than the 8\xa0MiB this site accepts. Send a smaller file."


def test_progress_bar_is_reset_after_a_refusal(site, page, tmp_path, tempstore_dirs):
    page.goto(site.url("/"))
    page.set_input_files("#id_files", file_of(tmp_path, "huge.png", PNG + b"\0" * (9 * 1024**2)))
    page.click("#upload-button")
    page.wait_for_selector("#upload-errors li")

    assert page.locator("#upload-errors li").all_inner_texts() == [TOO_LARGE]
    assert not page.locator("#upload-progress").is_visible()
    assert page.get_attribute("#progress-bar", "value") == "0"
    assert page.inner_text("#progress-text") == "0 %"
    screenshot(page, "upload-413-progress-reset")
    assert wait_until(lambda: no_pending_left(tempstore_dirs))
    assert list(TempUpload.objects.values_list("state", flat=True)) == [State.FAILED]


def test_without_javascript_a_413_re_renders_the_form_with_the_refusal(
    browser, site, tmp_path, tempstore_dirs
):
    page = browser.new_context(java_script_enabled=False).new_page()
    page.goto(site.url("/"))
    page.set_input_files("#id_files", file_of(tmp_path, "huge.png", PNG + b"\0" * (9 * 1024**2)))
    with page.expect_navigation() as navigation:
        page.click("#upload-button")

    assert navigation.value.status == 413
    assert page.locator("#upload-errors li").all_inner_texts() == [TOO_LARGE]
    assert page.locator("#upload-form #id_files").is_visible()  # the form, not a line of text
    screenshot(page, "upload-413-no-js")
    page.context.close()
    assert wait_until(lambda: no_pending_left(tempstore_dirs))


def keep(client, name: str, size: int) -> TempUpload:
    response = client.post("/keep/?ttl=3600", {"file": SimpleUploadedFile(name, b"k" * size)})
    return TempUpload.objects.get(pk=response.json()["id"])


def test_admin_shows_kept_upload_and_usage_bar_and_sweeps(site, page, client, admin_user, settings):
    settings.TEMPSTORE_QUOTA = 512 * 1024 * 1024  # as in the example settings
    expired = keep(client, "expired.bin", 200_000)
    TempUpload.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    kept = keep(client, "kept-for-later.bin", 300_000)

    page.goto(site.url("/admin/login/?next=/admin/django_tempstore/tempupload/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#tempstore-summary")

    row = page.locator("#result_list tbody tr", has_text="kept-for-later.bin")
    assert "kept" in row.locator(".tempstore-state").inner_text()
    bar = page.locator(".tempstore-bar[role=progressbar]")
    assert bar.is_visible()
    assert float(bar.get_attribute("aria-valuenow")) > 0
    assert page.locator(".tempstore-bar-fill").bounding_box()["width"] > 0
    assert "Oldest pending upload: expired.bin" in page.inner_text(".tempstore-oldest")
    screenshot(page, "admin-changelist")

    # The sweep action: a dry run on a confirmation page, then the real sweep.
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "sweep_now")
    page.click("button[name=index]")
    page.wait_for_selector(".tempstore-dry-run-summary")
    assert "Would delete 1 temp file" in page.inner_text(".tempstore-dry-run-summary")
    assert expired.path.exists()
    screenshot(page, "admin-sweep-confirmation")
    page.click("input[value='Yes, sweep now']")
    page.wait_for_selector("ul.messagelist")

    assert page.inner_text("ul.messagelist") == (
        "Swept the temp store: deleted 1 temp file, 195.3\xa0KiB."
    )
    assert not expired.path.exists()
    assert kept.path.exists()
    assert "expired.bin" not in page.inner_text(".tempstore-oldest")
    assert "Removed 1 file" in page.inner_text(".tempstore-last-sweep")
    screenshot(page, "admin-after-sweep")
