"""The declared transition table, applied by ``TempUploadQuerySet.transition()``."""

from __future__ import annotations

import io

import pytest
from django.http import HttpRequest

from django_tempstore import exceptions, lifecycle
from django_tempstore.exceptions import ServiceUnavailable, UploadRejected, UploadStateError
from django_tempstore.files import TempStoreUploadedFile
from django_tempstore.middleware import rejection_response
from django_tempstore.models import (
    PENDING_STATES,
    TERMINAL_STATES,
    State,
    TempUpload,
    Transitions,
    allowed_sources,
)
from tests.sweep_utils import make_upload

pytestmark = pytest.mark.django_db

CASES = [(t, s) for t in Transitions.ALL for s in State]


@pytest.mark.parametrize(
    ("transition", "state"), CASES, ids=[f"{t.name}-from-{s.value}" for t, s in CASES]
)
def test_transition_applies_exactly_from_its_declared_sources(transition, state):
    row = make_upload(state)
    changed = TempUpload.objects.filter(pk=row.pk).transition(transition, reason="x")

    row.refresh_from_db()
    if state in transition.sources:
        assert changed == 1
        assert row.state == (transition.target or state)
        assert row.reason == "x"
    else:
        assert changed == 0
        assert row.state == state
        assert row.reason == ""


def test_no_transition_enters_a_pending_state_from_a_terminal_one():
    for transition in Transitions.ALL:
        if transition.target in PENDING_STATES or transition.target is None:
            assert transition.sources <= set(PENDING_STATES), transition.name


def test_only_undo_starts_from_a_terminal_state():
    from_terminal = [t.name for t in Transitions.ALL if t.sources & set(TERMINAL_STATES)]
    assert from_terminal == ["undo"]
    assert Transitions.UNDO.sources == {State.PERSISTED}
    assert Transitions.UNDO.target == State.DISCARDED


def test_table_by_target_state():
    assert allowed_sources() == {
        State.RECEIVING: frozenset(),
        State.COMPLETE: {State.RECEIVING},
        State.KEPT: {State.COMPLETE, State.KEPT},
        State.PERSISTED: {State.COMPLETE, State.KEPT},
        State.DISCARDED: {*PENDING_STATES, State.PERSISTED},
        State.FAILED: set(PENDING_STATES),
        State.QUARANTINED: set(PENDING_STATES),
    }


def test_state_cannot_be_written_around_the_table():
    row = make_upload(State.COMPLETE)
    with pytest.raises(TypeError):
        TempUpload.objects.filter(pk=row.pk).transition(Transitions.EXTEND, state=State.KEPT)


def test_only_one_of_two_racing_copies_wins_a_close():
    row = make_upload(State.COMPLETE)
    other = TempUpload.objects.get(pk=row.pk)

    assert lifecycle.discard(row, "first")
    assert not lifecycle.fail(other, "second")
    row.refresh_from_db()
    assert (row.state, row.reason) == (State.DISCARDED, "first")


def test_persist_of_a_closed_upload_is_an_upload_state_error():
    row = make_upload(State.COMPLETE)
    lifecycle.discard(row)

    with pytest.raises(UploadStateError) as caught:
        lifecycle.persist(row, "x.bin")
    assert isinstance(caught.value, ValueError)  # What it raised before.
    assert caught.value.status == 409
    assert caught.value.code == "upload_state"


def test_keep_of_a_persisted_upload_is_an_upload_state_error():
    row = make_upload(State.COMPLETE)
    lifecycle.persist(row, "x.bin")

    with pytest.raises(UploadStateError):
        lifecycle.keep(row)


def test_persist_that_loses_the_race_is_an_upload_state_error_and_stores_nothing(settings):
    row = make_upload(State.KEPT)
    TempUpload.objects.filter(pk=row.pk).transition(Transitions.DISCARD, reason="swept")

    with pytest.raises(UploadStateError, match="closed while it was being persisted"):
        lifecycle.persist(row, "x.bin")
    assert list(settings.MEDIA_ROOT.iterdir()) == []


def test_a_moved_file_closes_persisted_and_sends_upload_persisted(tmp_path):
    from django_tempstore import signals

    row = make_upload(State.COMPLETE)
    seen = []

    def spy(sender, upload, **kwargs):
        seen.append(kwargs)

    signals.upload_persisted.connect(spy)
    try:
        file = TempStoreUploadedFile(row, io.BytesIO(), "f.bin", "", None)
        file._path_handed_out, file._moved_to = True, str(tmp_path / "moved.bin")
        file.end_of_request()
    finally:
        signals.upload_persisted.disconnect(spy)
    row.refresh_from_db()
    assert row.state == State.PERSISTED
    assert row.persisted_name == str(tmp_path / "moved.bin")
    expected = {"signal": signals.upload_persisted, "name": row.persisted_name, "storage": None}
    assert seen == [expected]


def refusal_classes():
    return [
        cls
        for cls in vars(exceptions).values()
        if isinstance(cls, type) and issubclass(cls, UploadRejected)
    ]


def test_each_refusal_class_has_its_own_code():
    codes = [cls.code for cls in refusal_classes()]
    assert len(codes) == len(set(codes)) == 10


def test_each_refusal_class_has_an_http_error_status():
    for cls in refusal_classes():
        assert 400 <= cls.status < 600, cls


def test_service_unavailable_is_503_with_retry_after(settings):
    settings.TEMPSTORE_RETRY_AFTER = 17
    request = HttpRequest()
    request.META["HTTP_ACCEPT"] = "application/json"

    default = rejection_response(request, ServiceUnavailable())
    chosen = rejection_response(request, ServiceUnavailable(retry_after=5))

    assert default.status_code == chosen.status_code == 503
    assert (default["Retry-After"], chosen["Retry-After"]) == ("17", "5")
    assert b'"code": "service_unavailable"' in default.content


def test_messages_are_translated():
    from django.utils import translation

    with translation.override("fr"):
        message = str(exceptions.FileTooLarge().message)
    # No French catalogue ships yet: the lazy message resolves at use time, in English.
    assert message == "The file is larger than this site accepts. Send a smaller file."
    assert not isinstance(exceptions.FileTooLarge.message, str)
