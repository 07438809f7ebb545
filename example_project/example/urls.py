from __future__ import annotations

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from . import resumable, views

urlpatterns = [
    path("", views.upload, name="upload"),
    path("admin/", admin.site.urls),
    # Resumable uploads: any tus client pointed at http://127.0.0.1:8000/files/ works.
    path("files/", include("django_tempstore.tus.urls")),
    path("tus-finish/", resumable.finish, name="tus-finish"),
]
# Only with DEBUG (both helpers return nothing otherwise): fine for a demo.
urlpatterns += staticfiles_urlpatterns()
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
