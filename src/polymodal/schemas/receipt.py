"""The built-in ``receipt`` schema: a till or card receipt, with totals that must add up."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from polymodal.schemas._types import CurrencyCode, IsoDate, Money, amounts_close
from polymodal.schemas.invoice import BASE_TOLERANCE, sum_tolerance


class ReceiptItem(BaseModel):
    """One purchased item."""

    model_config = ConfigDict(extra="forbid")

    description: str
    amount: Money = Field(description="Price paid for this line.")


class Receipt(BaseModel):
    """A point-of-sale receipt."""

    model_config = ConfigDict(extra="forbid")

    merchant: str = Field(description="Shop or business name as printed at the top.")
    date: IsoDate
    currency: CurrencyCode
    items: list[ReceiptItem] = Field(default_factory=list)
    subtotal: Money | None = Field(None, description="Total before tax, if printed.")
    tax: Money | None = Field(None, description="Tax amount, if printed.")
    total: Money = Field(description="Amount paid.")

    @model_validator(mode="after")
    def _totals_agree(self) -> Receipt:
        problems: list[str] = []
        if self.items and self.subtotal is not None:
            items_sum = sum((item.amount for item in self.items), Decimal("0"))
            if not amounts_close(items_sum, self.subtotal, sum_tolerance(len(self.items))):
                problems.append(f"items sum to {items_sum} but subtotal = {self.subtotal}")
        if self.subtotal is not None and self.tax is not None:
            if not amounts_close(self.subtotal + self.tax, self.total, BASE_TOLERANCE):
                problems.append(f"subtotal {self.subtotal} + tax {self.tax} != total {self.total}")
        elif self.subtotal is not None and self.tax is None and self.subtotal > self.total + BASE_TOLERANCE:
            problems.append(f"subtotal {self.subtotal} exceeds total {self.total}")
        if self.items and self.subtotal is None:  # no subtotal printed: the items (plus tax) make the total
            items_sum = sum((item.amount for item in self.items), Decimal("0"))
            expected = items_sum + (self.tax or Decimal("0"))
            if not amounts_close(expected, self.total, sum_tolerance(len(self.items))):
                with_tax = f" + tax {self.tax}" if self.tax is not None else ""
                problems.append(f"items sum to {items_sum}{with_tax} but total = {self.total}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


__all__ = ["Receipt", "ReceiptItem"]
