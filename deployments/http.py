"""HTTP edge of the API: JSON errors for every failure, and size/type-checked uploads.

Errors leave as ``{"error": {"code", "message"}}`` with the status the failure deserves; an exception
raised inside another deployment arrives wrapped by Ray and is unwrapped to its cause first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from deployments.common import StageBusyError, StageTimeoutError
from deployments.edge import MULTIPART_SLACK_BYTES, UPLOAD_PATHS, access_problem
from deployments.request_ids import request_id_from
from engines.errors import InputError, ModelUnavailableError, public_message
from realtime_avatar import logs
from realtime_avatar.conversation import CapacityError
from realtime_avatar.logs import event
from realtime_avatar.stages import UploadTooLargeError
from realtime_avatar.store import StoreUnavailableError

log = logging.getLogger("realtime_avatar.api")
DEFAULT_RETRY_AFTER_S = 2.0
DEFAULT_MAX_JSON_BYTES = 65_536
MAX_JSON_DEPTH = 32
# UPLOAD_PATHS (deployments.edge): routes whose body is an upload (their own limit, limits.max_upload_bytes,
# in read_upload); every other request body is JSON and capped at limits.max_json_bytes before parsing.


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
        return ApiError(exc.status, exc.code, public_message(exc.message))
    if isinstance(exc, BackPressureError):
        seconds = exc.retry_after_s if exc.retry_after_s is not None else retry_after_s
        return ApiError(503, "overloaded", "the server is at capacity; retry later",
                        {"Retry-After": str(max(1, round(seconds)))})
    if isinstance(exc, ModelUnavailableError | StoreUnavailableError | CapacityError | StageBusyError):
        return ApiError(503, exc.code, public_message(str(exc)), retry)
    if isinstance(exc, StageTimeoutError):
        return ApiError(504, exc.code, public_message(str(exc)))
    if isinstance(exc, RayError | RayServeException):
        # A replica died or is restarting (Serve replaces it): this request is lost, the next may not be.
        event(log, "stage_unavailable", level=logging.WARNING, error=type(exc).__name__)
        return ApiError(503, "stage_unavailable", "a model stage failed or is restarting; retry later", retry)
    log.error("internal_error", exc_info=exc)
    return ApiError(500, "internal_error", f"internal error (request {logs.request_id.get()})")


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def json_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``body`` is not acceptable JSON (not UTF-8, not JSON, nested past ``max_depth``), or None."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return "the request body is not UTF-8"
    except RecursionError:
        return f"the request body nests deeper than {max_depth} levels"
    except ValueError:
        return "the request body is not valid JSON"
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"the request body nests deeper than {max_depth} levels"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return None


class JsonBodyGuard:
    """ASGI middleware: the body of a POST/PUT/PATCH outside ``UPLOAD_PATHS`` is JSON of at most
    ``limit()`` bytes, checked before any parser sees it.

    Larger is refused with 413 ``body_too_large``: from ``Content-Length`` at once, or as soon as a
    chunked body streams past the limit (nothing more is read). A body within the limit that is not
    UTF-8 JSON or nests deeper than ``MAX_JSON_DEPTH`` is 400 ``invalid_json``. The body read here is
    replayed to the app, which parses it as usual; later messages (a disconnect) pass through.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 limit: Callable[[], int]) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH")
                or scope["path"].rstrip("/") in UPLOAD_PATHS):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, 413, "body_too_large",
                               f"the JSON body is larger than {limit} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before it finished sending: nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(scope, receive, send, 413, "body_too_large",
                                   f"the JSON body is larger than {limit} bytes")
                return
            more = bool(message.get("more_body", False))
        media_type = _media_type(headers.get("content-type", ""))
        problem = json_problem(bytes(body)) if body and media_type in ("", "application/json") else None
        if problem:
            await self._refuse(scope, receive, send, 400, "invalid_json", problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
    ) -> None:
        event(log, "request_refused", level=logging.WARNING, status=status, code=code, path=scope["path"])
        await error_response(status, code, message)(scope, receive, send)


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
    # Added first, so it runs inside the request-id middleware below (its refusals are logged with the id).
    app.add_middleware(JsonBodyGuard,
                       limit=lambda: getattr(app.state, "max_json_bytes", DEFAULT_MAX_JSON_BYTES))

    @app.middleware("http")
    async def tag_and_guard(request: Request, call_next: Any) -> Any:
        # Every log line of the request carries its id (Serve's proxy puts it in X-Request-ID, and returns
        # it to the client), and every exception a route raises becomes its JSON error here.
        request.state.request_id = request_id_from(request.headers.get("x-request-id"))
        logs.request_id.set(request.state.request_id)
        # The proxy's edge guard checks this first; checked again here for an app served without it.
        settings = getattr(app.state, "settings", None)
        headers = dict(request.headers)
        problem = settings and access_problem(request.url.path, headers, settings, request.method)
        if problem:
            return error_response(problem.status, problem.code, problem.message, problem.headers)
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
    data, _ = await read_uploads(request, accepted, limit, what)
    return data


# An optional further file of a multipart form: (accepted types, limit in bytes, what it is).
ExtraPart = tuple[tuple[str, ...], int, str]


async def read_uploads(
    request: Request, accepted: tuple[str, ...], limit: int, what: str,
    extras: dict[str, ExtraPart] | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """``read_upload``, plus the optional ``extras`` parts of a multipart form by field name (each
    checked against its own types and limit; the body may be as large as all limits together)."""
    media_type = _media_type(request.headers.get("content-type", ""))
    extras = (extras or {}) if media_type == "multipart/form-data" else {}  # a raw body is the file alone
    total = limit + sum(part_limit for _, part_limit, _ in extras.values())
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > total + MULTIPART_SLACK_BYTES:
        raise UploadTooLargeError(f"the {what} upload is larger than {total} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > total + MULTIPART_SLACK_BYTES:
            raise UploadTooLargeError(f"the {what} upload is larger than {total} bytes")
    found: dict[str, bytes] = {}
    if media_type == "multipart/form-data":
        request._body = bytes(body)  # form() re-reads the body we already drained
        try:
            form = await request.form(max_files=1 + len(extras), max_fields=4)
        except (StarletteHTTPException, MultiPartException, ValueError) as exc:
            raise InputError(f"the multipart form is malformed ({public_message(_detail(exc))})",
                             code="invalid_multipart") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InputError(f"the multipart form needs a 'file' part with the {what}", code="missing_file")
        data = await upload.read()
        media_type = _media_type(upload.content_type or "application/octet-stream")
        for name, (part_types, part_limit, part_what) in extras.items():
            extra = form.get(name)
            if extra is None:
                continue
            if isinstance(extra, str):
                raise InputError(f"the form's {name!r} part must be a file ({part_what})",
                                 code="invalid_multipart")
            extra_type = _media_type(extra.content_type or "application/octet-stream")
            found[name] = _checked(await extra.read(), extra_type, part_types, part_limit, part_what)
    else:
        data = bytes(body)
    return _checked(data, media_type, accepted, limit, what), found


def _checked(data: bytes, media_type: str, accepted: tuple[str, ...], limit: int, what: str) -> bytes:
    if not _accepted(media_type, accepted):
        raise UnsupportedMediaTypeError(
            f"{what} upload has content type {media_type or 'none'!r}; send one of {', '.join(accepted)}"
        )
    if len(data) > limit:
        raise UploadTooLargeError(f"the {what} upload is larger than {limit} bytes")
    if not data:
        raise InputError(f"the {what} upload is empty", code="empty_upload")
    return data


def _detail(exc: Exception) -> str:
    return str(getattr(exc, "detail", None) or getattr(exc, "message", None) or type(exc).__name__)


def require_json(request: Request) -> None:
    media_type = _media_type(request.headers.get("content-type", ""))
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(f"send the request as application/json, not {media_type or 'none'!r}")
