"""polymodal: pixels, pages, speech and video in; validated JSON, search hits, answers and spoken replies out.

Three lines for the headline job::

    from polymodal import extract, Invoice
    result = extract("invoice.pdf", Invoice, model="openai:gpt-5")
    invoice = result.raise_for_status()
"""

from polymodal.backends.base import ChatModel, Completion, GenerateOptions, Usage
from polymodal.backends.messages import Message
from polymodal.backends.registry import load_chat_model
from polymodal.config import Settings, get_settings
from polymodal.errors import (
    BackendError,
    ConfigError,
    ErrorCategory,
    ExtractionRejected,
    InputError,
    PolymodalError,
)
from polymodal.media.document import Document, Page
from polymodal.media.image import Image
from polymodal.media.limits import Limits
from polymodal.pipelines.extract import ExtractionResult, ExtractOptions, aextract, extract
from polymodal.pipelines.extract_batch import BatchSummary, aextract_many, extract_many
from polymodal.schemas import Invoice, Receipt

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BatchSummary",
    "ChatModel",
    "Completion",
    "ConfigError",
    "Document",
    "ErrorCategory",
    "ExtractOptions",
    "ExtractionRejected",
    "ExtractionResult",
    "GenerateOptions",
    "Image",
    "InputError",
    "Invoice",
    "Limits",
    "Message",
    "Page",
    "PolymodalError",
    "Receipt",
    "Settings",
    "Usage",
    "__version__",
    "aextract",
    "aextract_many",
    "extract",
    "extract_many",
    "get_settings",
    "load_chat_model",
]
