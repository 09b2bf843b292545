"""The built-in ``invoice`` schema, with the cross-field checks an accounts-payable team relies on."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from polymodal.schemas._types import CurrencyCode, Iban, IsoDate, Money, Quantity, amounts_close

#: Absolute tolerance for sums, widened by half a cent per line item for per-line rounding.
BASE_TOLERANCE = Decimal("0.02")


def sum_tolerance(n_items: int) -> Decimal:
    """How far a sum of ``n_items`` rounded amounts may drift from the printed figure."""
    return max(BASE_TOLERANCE, Decimal("0.005") * n_items)


class Party(BaseModel):
    """A company or person on the document."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Legal or trading name as printed.")
    address: str | None = Field(None, description="Postal address as printed, one line.")
    tax_id: str | None = Field(None, description="VAT / GST / tax registration number.")


class LineItem(BaseModel):
    """One billed line."""

    model_config = ConfigDict(extra="forbid")

    description: str
    quantity: Quantity | None = Field(None, description="Number of units.")
    unit_price: Money | None = None
    amount: Money = Field(description="Line total before tax.")

    @model_validator(mode="after")
    def _quantity_times_price(self) -> LineItem:
        if self.quantity is not None and self.unit_price is not None:
            expected = self.quantity * self.unit_price
            if not amounts_close(expected, self.amount, BASE_TOLERANCE):
                raise ValueError(
                    f"quantity x unit_price = {expected} but amount = {self.amount} for {self.description!r}"
                )
        return self


class Invoice(BaseModel):
    """A supplier invoice: who billed whom, for what, how much, and where to pay."""

    model_config = ConfigDict(extra="forbid")

    invoice_number: str = Field(description="The invoice's own number or id.")
    issue_date: IsoDate
    due_date: IsoDate | None = None
    currency: CurrencyCode
    vendor: Party
    customer: Party | None = None
    line_items: list[LineItem] = Field(default_factory=list)
    subtotal: Money = Field(description="Sum of line items before tax.")
    tax: Money = Field(Decimal("0"), description="Total tax charged.")
    total: Money = Field(description="Amount due, tax included.")
    iban: Iban | None = Field(None, description="Payee IBAN if printed.")

    @model_validator(mode="after")
    def _totals_agree(self) -> Invoice:
        problems: list[str] = []
        if self.line_items:
            items_sum = sum((item.amount for item in self.line_items), Decimal("0"))
            if not amounts_close(items_sum, self.subtotal, sum_tolerance(len(self.line_items))):
                problems.append(f"line items sum to {items_sum} but subtotal = {self.subtotal}")
        if not amounts_close(self.subtotal + self.tax, self.total, BASE_TOLERANCE):
            problems.append(f"subtotal {self.subtotal} + tax {self.tax} != total {self.total}")
        if self.due_date is not None and self.due_date < self.issue_date:
            problems.append(f"due_date {self.due_date} is before issue_date {self.issue_date}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


__all__ = ["Invoice", "LineItem", "Party", "sum_tolerance"]
