from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("upload/", views.upload),
    path("stats/", views.stats),
    path("state/", views.state),
    path("files/", include("django_tempstore.tus.urls")),
]
