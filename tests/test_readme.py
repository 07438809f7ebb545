"""The README's view, run as written: it persists a valid upload and leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import types
from pathlib import Path

import pytest
from django import forms
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import path

from django_tempstore.models import State, TempUpload

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.django_db(transaction=True)


class DocumentForm(forms.Form):
    file = forms.FileField()
    title = forms.CharField()


@pytest.fixture
def readme_urls(settings):
    """A URLconf serving the view from the README's "A view" section."""
    section = README.read_text().split("## A view", 1)[1]
    source = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "from .forms import DocumentForm" in source
    module = types.ModuleType("readme_urls")
    module.DocumentForm = DocumentForm
    exec(source.replace("from .forms import DocumentForm", ""), module.__dict__)
    module.urlpatterns = [path("upload/", module.upload_document)]
    sys.modules["readme_urls"] = module
    settings.ROOT_URLCONF = "readme_urls"
    yield
    del sys.modules["readme_urls"]


def test_readme_view_persists_the_upload(client, readme_urls, assert_clean):
    payload = os.urandom(300_000)
    response = client.post(
        "/upload/", {"title": "t", "file": SimpleUploadedFile("report.pdf", payload)}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    with default_storage.open(body["name"]) as stored:
        assert stored.read() == payload
    assert TempUpload.objects.get().state == State.PERSISTED
    assert_clean()


def test_readme_view_refuses_an_invalid_form_with_422_and_keeps_nothing(
    client, readme_urls, assert_clean
):
    response = client.post("/upload/", {"file": SimpleUploadedFile("a.pdf", b"x" * 1000)})
    assert response.status_code == 422
    assert "title" in response.json()["errors"]
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()
