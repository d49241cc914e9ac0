"""HTTP edge of the API: JSON errors for every failure, and size/type-checked uploads.

Errors leave as ``{"error": {"code", "message"}}`` with the status the failure deserves; an exception
raised inside another deployment arrives wrapped by Ray and is unwrapped to its cause first.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.errors import InputError, ModelUnavailableError
from realtime_avatar import logs
from realtime_avatar.conversation import CapacityError
from realtime_avatar.logs import event
from realtime_avatar.stages import UploadTooLargeError
from realtime_avatar.store import StoreUnavailableError

log = logging.getLogger("realtime_avatar.api")
DEFAULT_RETRY_AFTER_S = 2.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class UnsupportedMediaTypeError(InputError):
    code = "unsupported_media_type"
    status = 415


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def unwrap(exc: BaseException) -> BaseException:
    """The exception a stage raised, not Ray's wrapper around it (whose text is a traceback)."""
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    return exc


def to_api_error(exc: BaseException, retry_after_s: float) -> ApiError:
    exc = unwrap(exc)
    retry = {"Retry-After": str(max(1, round(retry_after_s)))}
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        return ApiError(exc.status, exc.code, exc.message)
    if isinstance(exc, BackPressureError):
        seconds = exc.retry_after_s if exc.retry_after_s is not None else retry_after_s
        return ApiError(503, "overloaded", "the server is at capacity; retry later",
                        {"Retry-After": str(max(1, round(seconds)))})
    if isinstance(exc, ModelUnavailableError | StoreUnavailableError | CapacityError):
        return ApiError(503, exc.code, str(exc), retry)
    if isinstance(exc, RayError | RayServeException):
        # A replica died or is restarting (Serve replaces it): this request is lost, the next may not be.
        event(log, "stage_unavailable", level=logging.WARNING, error=type(exc).__name__)
        return ApiError(503, "stage_unavailable", "a model stage failed or is restarting; retry later", retry)
    log.error("internal_error", exc_info=exc)
    return ApiError(500, "internal_error", f"internal error (request {logs.request_id.get()})")


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors for the app; ``app.state.retry_after_s`` is the Retry-After hint on 503s."""

    def respond(exc: BaseException) -> JSONResponse:
        error = to_api_error(exc, getattr(app.state, "retry_after_s", DEFAULT_RETRY_AFTER_S))
        return error_response(error.status, error.code, error.message, error.headers)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        where = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}"
                          for p in problems)
        return error_response(422, "invalid_request", where)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)

    @app.middleware("http")
    async def tag_and_guard(request: Request, call_next: Any) -> Any:
        # Every log line of the request carries its id (Serve's proxy puts it in X-Request-ID, and returns
        # it to the client), and every exception a route raises becomes its JSON error here.
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        logs.request_id.set(request.state.request_id)
        try:
            return await call_next(request)
        except Exception as exc:
            return respond(exc)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _accepted(media_type: str, accepted: tuple[str, ...]) -> bool:
    major = media_type.split("/", 1)[0]
    return media_type == "application/octet-stream" or media_type in accepted or f"{major}/*" in accepted


async def read_upload(request: Request, accepted: tuple[str, ...], limit: int, what: str) -> bytes:
    """The uploaded file: a raw body of an accepted type, or the ``file`` part of a multipart form.

    Over ``limit`` bytes is refused (413) as soon as the headers or the stream say so, never buffered
    whole; a type outside ``accepted`` (e.g. ``("audio/*", "video/webm")``) is refused with 415.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64_000:  # multipart framing slack
        raise UploadTooLargeError(f"the {what} upload is larger than {limit} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit + 64_000:
            raise UploadTooLargeError(f"the {what} upload is larger than {limit} bytes")
    media_type = _media_type(request.headers.get("content-type", ""))
    if media_type == "multipart/form-data":
        request._body = bytes(body)  # form() re-reads the body we already drained
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InputError(f"the multipart form needs a 'file' part with the {what}", code="missing_file")
        data = await upload.read()
        media_type = _media_type(upload.content_type or "application/octet-stream")
    else:
        data = bytes(body)
    if not _accepted(media_type, accepted):
        raise UnsupportedMediaTypeError(
            f"{what} upload has content type {media_type or 'none'!r}; send one of {', '.join(accepted)}"
        )
    if len(data) > limit:
        raise UploadTooLargeError(f"the {what} upload is larger than {limit} bytes")
    if not data:
        raise InputError(f"the {what} upload is empty", code="empty_upload")
    return data


def require_json(request: Request) -> None:
    media_type = _media_type(request.headers.get("content-type", ""))
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(f"send the request as application/json, not {media_type or 'none'!r}")
