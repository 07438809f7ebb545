from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accept/", views.accept),
    path("sizes/", views.sizes),
    path("discard-then-keep/", views.discard_then_keep),
    path("metrics/", views.metrics),
    path("accept-async/", views.accept_async),
    path("txt-async/", views.txt_async),
    path("parse-then-wait/", views.parse_then_wait),
    path("read-slowly/", views.read_slowly),
    path("body-length/", views.body_length),
    path("explode/", views.explode),
    path("persist/", views.persist),
    path("read-close-persist/", views.read_close_persist),
    path("persist-every/", views.persist_every),
    path("keep/", views.keep),
    path("model-save/", views.model_save),
    path("storage-save/", views.storage_save),
    path("model-form/", views.model_form),
    path("rollback/", views.persist_then_rollback),
    path("csrf/", views.csrf_protected),
    path("png-only/", views.png_only),
    path("png-only-csrf/", views.png_only_csrf),
    path("txt/", views.txt_and_project_rules),
    path("digest-field/", views.digest_field),
    path("promote/", views.promote),
    path("drf/", views.DRFUpload.as_view()),
    path("files/", include("django_tempstore.tus.urls")),
    path("claim/<str:upload_id>/", views.claim_tus),
]
