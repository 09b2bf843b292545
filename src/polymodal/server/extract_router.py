"""``POST /v1/extract``: upload a document, get the validated record (no business logic here)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile

from polymodal.config import Settings
from polymodal.pipelines.extract import ExtractOptions, aextract
from polymodal.schemas import BUILTIN_SCHEMAS


def extract_router(settings: Settings) -> APIRouter:
    """Routes for extraction with the built-in schemas."""
    router = APIRouter(prefix="/v1", tags=["extract"])

    @router.post("/extract")
    async def extract_document(
        file: Annotated[UploadFile, File(description="PDF or image")],
        schema_name: Annotated[str, Form(alias="schema", description="invoice | receipt")],
        model: Annotated[str | None, Form(description="model id; the server default when absent")] = None,
        max_reasks: Annotated[int, Form(ge=0, le=5)] = 2,
    ) -> dict[str, Any]:
        """Extract one uploaded document into a built-in schema; rejected answers come back with reasons."""
        if schema_name not in BUILTIN_SCHEMAS:
            known = ", ".join(sorted(BUILTIN_SCHEMAS))
            raise HTTPException(400, f"unknown schema {schema_name!r}; choose one of {known}")
        data = await file.read(settings.server_max_upload_bytes + 1)
        if len(data) > settings.server_max_upload_bytes:
            raise HTTPException(413, f"upload exceeds {settings.server_max_upload_bytes} bytes")
        result = await aextract(
            data,
            BUILTIN_SCHEMAS[schema_name],
            model or settings.default_model,
            settings=settings,
            options=ExtractOptions(max_reasks=max_reasks),
        )
        record = result.to_json()
        record["source"] = file.filename or "<upload>"
        return record

    return router


__all__ = ["extract_router"]
