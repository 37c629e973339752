"""The registry errors a client can see, defined once.

Every failure a client can be told about is a :class:`RegistryError` subclass carrying the OCI distribution
error code and HTTP status; the server renders them in exactly one middleware as
``{"errors": [{"code", "message", "detail"}]}``. Handlers and services raise, they never build error JSON.

    RegistryError
    ├── BadRequest, NameInvalid, NameUnknown, DigestInvalid, BlobUnknown, ManifestUnknown, ManifestInvalid,
    │   TagInvalid, SizeInvalid, RangeNotSatisfiable, Unsupported, Denied, Unauthorized
    ├── TooManyRequests   (carries retry_after seconds)
    └── Unavailable       (every upstream failed, or offline and not cached)
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class RegistryError(Exception):
    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

    def __init__(self, message: str | None = None, detail: Any = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> bytes:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return json.dumps({"errors": [err]}).encode()


class BadRequest(RegistryError):
    code, status, default_message = "BAD_REQUEST", 400, "malformed request"


class NameInvalid(RegistryError):
    code, status, default_message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, default_message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class DigestInvalid(RegistryError):
    code, status, default_message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class BlobUnknown(RegistryError):
    code, status, default_message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class ManifestUnknown(RegistryError):
    code, status, default_message = "MANIFEST_UNKNOWN", 404, "manifest unknown"


class ManifestInvalid(RegistryError):
    code, status, default_message = "MANIFEST_INVALID", 400, "manifest invalid"


class TagInvalid(RegistryError):
    code, status, default_message = "TAG_INVALID", 400, "manifest tag did not match URI"


class SizeInvalid(RegistryError):
    code, status, default_message = "SIZE_INVALID", 400, "provided length did not match content length"


class RangeNotSatisfiable(RegistryError):
    code, status, default_message = "RANGE_INVALID", 416, "requested range not satisfiable"

    def __init__(self, size: int, message: str | None = None) -> None:
        super().__init__(message)
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class Unsupported(RegistryError):
    code, status, default_message = (
        "UNSUPPORTED",
        405,
        "the operation is unsupported: this is a read-only mirror",
    )

    def headers(self) -> dict[str, str]:
        return {"Allow": "GET, HEAD"}


class Denied(RegistryError):
    code, status, default_message = "DENIED", 403, "requested access to the resource is denied"


class Unauthorized(RegistryError):
    code, status, default_message = "UNAUTHORIZED", 401, "authentication required"


class TooManyRequests(RegistryError):
    code, status, default_message = "TOOMANYREQUESTS", 429, "too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(RegistryError):
    code, status, default_message = "UNAVAILABLE", 503, "service unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "10"}
