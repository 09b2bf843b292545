"""Built-in extraction schemas and the resolver for ``--schema`` arguments."""

from polymodal.schemas._types import ISO_4217, CurrencyCode, Iban, IsoDate, Money, iban_is_valid
from polymodal.schemas.invoice import Invoice, LineItem, Party
from polymodal.schemas.receipt import Receipt, ReceiptItem
from polymodal.schemas.resolve import BUILTIN_SCHEMAS, resolve_schema

__all__ = [
    "BUILTIN_SCHEMAS",
    "ISO_4217",
    "CurrencyCode",
    "Iban",
    "Invoice",
    "IsoDate",
    "LineItem",
    "Money",
    "Party",
    "Receipt",
    "ReceiptItem",
    "iban_is_valid",
    "resolve_schema",
]
