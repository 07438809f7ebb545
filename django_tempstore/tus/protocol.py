"""The tus protocol's version, extensions, headers and statuses, in one place."""

from __future__ import annotations

VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "termination",
    "checksum",
    "concatenation",
)
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
CONTENT_TYPE = "application/offset+octet-stream"

TUS_RESUMABLE = "Tus-Resumable"
TUS_VERSION = "Tus-Version"
TUS_EXTENSION = "Tus-Extension"
TUS_MAX_SIZE = "Tus-Max-Size"
TUS_CHECKSUM_ALGORITHM = "Tus-Checksum-Algorithm"
UPLOAD_OFFSET = "Upload-Offset"
UPLOAD_LENGTH = "Upload-Length"
UPLOAD_DEFER_LENGTH = "Upload-Defer-Length"
UPLOAD_METADATA = "Upload-Metadata"
UPLOAD_EXPIRES = "Upload-Expires"
UPLOAD_CHECKSUM = "Upload-Checksum"
UPLOAD_CONCAT = "Upload-Concat"

#: What a browser client must be allowed to read and send across origins.
EXPOSED_HEADERS = (
    "Location",
    TUS_RESUMABLE,
    TUS_VERSION,
    TUS_EXTENSION,
    TUS_MAX_SIZE,
    TUS_CHECKSUM_ALGORITHM,
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_EXPIRES,
    UPLOAD_CONCAT,
)
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Origin",
    "X-Requested-With",
    "X-HTTP-Method-Override",
    TUS_RESUMABLE,
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_DEFER_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_CHECKSUM,
    UPLOAD_CONCAT,
)
METHODS = ("POST", "HEAD", "PATCH", "DELETE", "OPTIONS")

PRECONDITION_FAILED = 412
CONFLICT = 409
LOCKED = 423
GONE = 410
CHECKSUM_MISMATCH = 460
