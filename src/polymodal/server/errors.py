"""polymodal errors -> HTTP responses, in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from polymodal.errors import BackendError, ConfigError, ErrorCategory, InputError, PolymodalError

_BACKEND_STATUS = {
    ErrorCategory.AUTH: 502,
    ErrorCategory.PERMISSION: 502,
    ErrorCategory.RATE_LIMIT: 503,
    ErrorCategory.OVERLOADED: 503,
    ErrorCategory.QUOTA: 503,
    ErrorCategory.TIMEOUT: 504,
}


def status_for(error: PolymodalError) -> int:
    """The HTTP status a polymodal error maps to."""
    if isinstance(error, InputError):
        return 422
    if isinstance(error, ConfigError):
        return 400
    if isinstance(error, BackendError):
        return _BACKEND_STATUS.get(error.category, 502)
    return 500


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on an app: a JSON body with the error type and message, never a traceback."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PolymodalError)
        body: dict[str, object] = {"error": type(exc).__name__, "message": str(exc)}
        headers = {}
        if isinstance(exc, BackendError):
            body["category"] = exc.category.value
            if exc.retry_after is not None:
                headers["Retry-After"] = str(int(exc.retry_after + 0.999))
        return JSONResponse(body, status_code=status_for(exc), headers=headers)

    app.add_exception_handler(PolymodalError, handle)


__all__ = ["install_error_handlers", "status_for"]
