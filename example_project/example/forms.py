"""The upload form: one or several images, each under a size cap."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from django_tempstore.units import binary_size

#: Magic bytes of the image formats the form accepts (checked, never trusted from the client).
SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "GIF": (b"GIF87a", b"GIF89a"),
}


def image_format(upload: UploadedFile) -> str | None:
    """The image format read from the file's first bytes, or None."""
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for name, magics in SIGNATURES.items():
        if head.startswith(magics):
            return name
    return None


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that takes one or several files and cleans to a list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*"}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class ImageUploadForm(forms.Form):
    files = MultipleFileField(
        label="Images",
    )
    later = forms.BooleanField(
        label="Confirm later: keep the upload for an hour, store or drop it on the next page",
        required=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = binary_size(settings.EXAMPLE_MAX_IMAGE_SIZE)
        self.fields[
            "files"
        ].help_text = (
            f"PNG, JPEG, GIF or WebP, up to {limit} each. Select several at once if you like."
        )

    def clean_files(self) -> list[UploadedFile]:
        uploads: list[UploadedFile] = self.cleaned_data["files"]
        limit = settings.EXAMPLE_MAX_IMAGE_SIZE
        errors = []
        for upload in uploads:
            if upload.size is not None and upload.size > limit:
                errors.append(
                    forms.ValidationError(
                        "“%(name)s” is %(size)s; the limit is %(limit)s per image.",
                        code="too_large",
                        params={
                            "name": upload.name,
                            "size": binary_size(upload.size),
                            "limit": binary_size(limit),
                        },
                    )
                )
            elif image_format(upload) is None:
                errors.append(
                    forms.ValidationError(
                        "“%(name)s” is not an image: only PNG, JPEG, GIF and WebP files "
                        "are accepted.",
                        code="not_an_image",
                        params={"name": upload.name},
                    )
                )
        if errors:
            raise forms.ValidationError(errors)
        return uploads
