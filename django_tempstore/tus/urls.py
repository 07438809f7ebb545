"""``path("files/", include("django_tempstore.tus.urls"))`` mounts the tus endpoint."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.CreationView.as_view(), name="tempstore-tus"),
    path("<str:upload_id>", views.UploadView.as_view(), name="tempstore-tus-upload"),
    path("<str:upload_id>/", views.UploadView.as_view()),
]
