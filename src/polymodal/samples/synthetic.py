"""Labelled synthetic receipts (PNG) and invoices (PDF with a text layer), deterministic per seed.

These are synthetic: drawn by this module, not photographed or scanned. Use them for mechanics, throughput and
field-accuracy measurements that say so; real-data quality claims need real documents.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

MERCHANTS = [
    "Corner Bakery",
    "Blue Lantern Cafe",
    "Hardware Hub",
    "Green Grocer",
    "City Pharmacy",
    "Book Nook",
]
VENDORS = ["Acme Supplies Ltd", "Northwind Traders", "Globex GmbH", "Initech SARL", "Umbrella Logistics BV"]
CUSTOMERS = ["Contoso Corp", "Fabrikam Inc", "Tailspin Toys", "Wide World Importers"]
ITEMS = [
    "Coffee",
    "Croissant",
    "Bagel",
    "Hammer",
    "Screws (100)",
    "Notebook",
    "Pens (10)",
    "Apples 1kg",
    "Tea",
    "Sandwich",
    "Paint 1L",
    "Tape",
    "Batteries AA",
    "Water 1.5L",
]
SERVICES = [
    "Consulting hours",
    "Software licence",
    "Support plan",
    "Shipping",
    "Installation",
    "Training day",
]
CURRENCIES = [("USD", "$"), ("EUR", "€"), ("GBP", "£")]
#: Valid IBANs (checksums verified) used on synthetic invoices.
IBANS = ["DE89370400440532013000", "GB29NWBK60161331926819", "FR1420041010050500013M02606"]


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


@dataclass
class SyntheticDoc:
    """A rendered document and the ground truth a perfect extractor returns for it."""

    kind: str
    label: dict[str, Any]
    png: bytes | None = None
    pdf: bytes | None = None
    lines: list[str] = field(default_factory=list)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def receipt(seed: int) -> SyntheticDoc:
    """A till receipt as a PNG, with its labelled fields."""
    rng = random.Random(seed)
    code, symbol = rng.choice(CURRENCIES)
    items = [(rng.choice(ITEMS), Decimal(rng.randint(150, 2500)) / 100) for _ in range(rng.randint(1, 5))]
    subtotal = sum((a for _, a in items), Decimal("0"))
    tax = (subtotal * Decimal("0.08")).quantize(Decimal("0.01"))
    total = subtotal + tax
    day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 600))
    merchant = rng.choice(MERCHANTS)
    lines = [merchant.upper(), f"Date: {day.isoformat()}", f"Currency: {code}", ""]
    lines += [f"{name:<18}{symbol}{_money(amount):>9}" for name, amount in items]
    lines += [
        "",
        f"{'Subtotal':<18}{symbol}{_money(subtotal):>9}",
        f"{'Tax 8%':<18}{symbol}{_money(tax):>9}",
        f"{'TOTAL':<18}{symbol}{_money(total):>9}",
        "",
        "Thank you!",
    ]
    font = _font(22)
    image = PILImage.new("RGB", (520, 80 + 34 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 40 + 34 * i), line, fill="black", font=font)
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    label = {
        "merchant": merchant,
        "date": day.isoformat(),
        "currency": code,
        "items": [{"description": n, "amount": float(a)} for n, a in items],
        "subtotal": float(subtotal),
        "tax": float(tax),
        "total": float(total),
    }
    return SyntheticDoc("receipt", label, png=buffer.getvalue(), lines=lines)


def invoice(seed: int) -> SyntheticDoc:
    """A one-page supplier invoice as a PDF with a text layer (needs fpdf2), with its labelled fields."""
    from fpdf import FPDF

    rng = random.Random(seed)
    code = rng.choice(["USD", "EUR", "GBP"])
    items = []
    for _ in range(rng.randint(1, 4)):
        qty = Decimal(rng.randint(1, 10))
        price = Decimal(rng.randint(1000, 50000)) / 100
        items.append((rng.choice(SERVICES), qty, price, qty * price))
    subtotal = sum((i[3] for i in items), Decimal("0"))
    tax = (subtotal * Decimal("0.20")).quantize(Decimal("0.01"))
    issue = date(2025, 1, 1) + timedelta(days=rng.randint(0, 600))
    due = issue + timedelta(days=30)
    number = f"INV-{rng.randint(1000, 99999)}"
    vendor, customer, iban = rng.choice(VENDORS), rng.choice(CUSTOMERS), rng.choice(IBANS)
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(0, 12, "INVOICE", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    head = [
        f"From: {vendor}",
        f"Bill to: {customer}",
        f"Invoice number: {number}",
        f"Issue date: {issue.isoformat()}",
        f"Due date: {due.isoformat()}",
        f"Currency: {code}",
        "",
    ]
    for line in head:
        pdf.cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 11)
    for text, width in (("Description", 80), ("Qty", 20), ("Unit price", 40), ("Amount", 40)):
        pdf.cell(width, 8, text, border=1)
    pdf.ln()
    pdf.set_font("Helvetica", size=11)
    for name, qty, price, amount in items:
        for text, width in ((name, 80), (str(qty), 20), (_money(price), 40), (_money(amount), 40)):
            pdf.cell(width, 8, text, border=1)
        pdf.ln()
    pdf.ln(4)
    tail = [
        f"Subtotal: {_money(subtotal)} {code}",
        f"VAT 20%: {_money(tax)} {code}",
        f"Total due: {_money(subtotal + tax)} {code}",
        f"IBAN: {iban}",
    ]
    for line in tail:
        pdf.cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    label = {
        "invoice_number": number,
        "issue_date": issue.isoformat(),
        "due_date": due.isoformat(),
        "currency": code,
        "vendor": {"name": vendor, "address": None, "tax_id": None},
        "customer": {"name": customer, "address": None, "tax_id": None},
        "line_items": [
            {"description": n, "quantity": float(q), "unit_price": float(p), "amount": float(a)}
            for n, q, p, a in items
        ],
        "subtotal": float(subtotal),
        "tax": float(tax),
        "total": float(subtotal + tax),
        "iban": iban,
    }
    return SyntheticDoc("invoice", label, pdf=bytes(pdf.output()), lines=head + tail)


__all__ = ["SyntheticDoc", "invoice", "receipt"]
