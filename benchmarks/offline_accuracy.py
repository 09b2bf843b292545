"""Field-level accuracy of the local extraction paths on SYNTHETIC receipts rendered here with Pillow.

The receipts are generated (seeded): vendors, dates, currencies, line items, tax and totals vary, as do
layouts (left/right-aligned amounts, date formats, header positions) and the fonts installed on the machine
(DejaVu / Liberation). They are clean renders, so OCR is near its best case; real scans are harder.

Compared side by side, each receipt through each variant:
  * offline:smollm2 with the default short instruction (OCR text first, grammar does the structure, values
    grounded in the page: numbers, dates and strings the page prints),
  * offline:smollm2 ungrounded (``grounded=False``: the grammar gives the structure only),
  * offline:smollm2 with a longer instruction that names every field,
  * transformers: a tiny RANDOM-weight Idefics3 (the real code path; its accuracy is expected to be ~0).

Fields: vendor, date, currency, subtotal, tax, total. ``exact`` compares the raw values; ``normalized``
compares case/space-folded text, ISO dates and numbers to the cent.

    python benchmarks/offline_accuracy.py [--n 12] [--json] [--variants default,ungrounded,named,tiny-random]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polymodal.backends.base import GenerateOptions
from polymodal.backends.messages import Message
from polymodal.backends.registry import ModelSpec
from polymodal.config import Settings
from polymodal.errors import PolymodalError
from polymodal.media.image import Image

FIELDS = ["vendor", "date", "currency", "subtotal", "tax", "total"]
VENDORS = ["Green Grocer", "Blue Bottle Cafe", "Hardware Hub", "City Pharmacy", "Book Nook", "Pizza Palace",
           "Sunrise Bakery", "Metro Electronics", "Corner Deli", "Garden Centre"]  # fmt: skip
ITEMS = ["Apples", "Bread", "Coffee", "Milk", "Screws", "Batteries", "Notebook", "Tea", "Cheese", "Pens"]
CURRENCIES = [("USD", "$"), ("EUR", "€"), ("GBP", "£")]
FONT_DIR = Path("/usr/share/fonts/truetype")


class Receipt(BaseModel):
    """The fields read from a receipt."""

    vendor: str
    date: str
    currency: str
    subtotal: float
    tax: float
    total: float


NAMED_INSTRUCTION = (
    "Read the receipt text. Return the shop name as vendor, the date as YYYY-MM-DD, the ISO currency code "
    "(USD, EUR or GBP), and the subtotal, tax and total amounts as numbers."
)


def _fonts() -> list[Path]:
    found = sorted(FONT_DIR.rglob("*.ttf")) if FONT_DIR.is_dir() else []
    regular = [
        p for p in found if "Bold" not in p.name and "Italic" not in p.name and "Oblique" not in p.name
    ]
    return regular or found


def render(seed: int) -> tuple[PILImage.Image, dict[str, Any]]:
    """One synthetic receipt and its ground truth."""
    rng = random.Random(seed)
    fonts = _fonts()
    font_path = fonts[seed % len(fonts)] if fonts else None
    size = rng.choice([22, 26, 30])
    font = ImageFont.truetype(str(font_path), size) if font_path else ImageFont.load_default(size=size)
    vendor = VENDORS[seed % len(VENDORS)]
    code, symbol = CURRENCIES[seed % len(CURRENCIES)]
    day = datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randrange(700))
    date_text = rng.choice([day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%b %d, %Y")])
    items = [(rng.choice(ITEMS), round(rng.uniform(0.5, 40), 2)) for _ in range(rng.randint(2, 5))]
    subtotal = round(sum(price for _, price in items), 2)
    tax = round(subtotal * rng.choice([0.05, 0.08, 0.2]), 2)
    total = round(subtotal + tax, 2)
    right_aligned = rng.random() < 0.5
    money = (lambda v: f"{symbol}{v:.2f}") if rng.random() < 0.5 else (lambda v: f"{v:.2f} {code}")

    width, line_h = 640, int(size * 1.6)
    rows: list[tuple[str, str]] = [(vendor.upper(), ""), (f"Date: {date_text}", "")]
    rows += [(name, money(price)) for name, price in items]
    rows += [("Subtotal", money(subtotal)), ("Tax", money(tax)), ("TOTAL", money(total))]
    canvas = PILImage.new("RGB", (width, line_h * (len(rows) + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (left, right) in enumerate(rows):
        y = line_h * (i + 1)
        draw.text((30, y), left, fill="black", font=font)
        if right:
            x = width - 30 - draw.textlength(right, font=font) if right_aligned else 360
            draw.text((x, y), right, fill="black", font=font)
    truth = {"vendor": vendor, "date": day.isoformat(), "currency": code, "subtotal": subtotal, "tax": tax,
             "total": total}  # fmt: skip
    return canvas, truth


def _norm_text(value: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(value).lower())


def _norm_date(value: Any) -> str:
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%b %d, %Y", "%Y/%m/%d", "%m/%d/%Y", "%d.%m.%Y"):
        try:
            return datetime.datetime.strptime(text[: len(text)], fmt).date().isoformat()
        except ValueError:
            continue
    return text[:10]


def score(field: str, got: Any, want: Any) -> tuple[bool, bool]:
    """(exact, normalized) match of one field."""
    exact = got == want
    if field in {"subtotal", "tax", "total"}:
        try:
            return exact, abs(float(got) - float(want)) < 0.005
        except (TypeError, ValueError):
            return exact, False
    if field == "date":
        return exact, _norm_date(got) == want
    return exact, _norm_text(got) == _norm_text(want)


def _tiny_model_dir() -> Path:
    from tests.backends.tiny_models import build_tiny_idefics3

    return build_tiny_idefics3(Path(tempfile.mkdtemp(prefix="tiny-idefics3-")))


async def run_variant(
    name: str, samples: list[tuple[Image, dict[str, Any]]], max_tokens: int
) -> dict[str, Any]:
    from polymodal.backends import offline, transformers_vlm

    settings = Settings()
    if name == "tiny-random":
        model: Any = transformers_vlm.create(ModelSpec("transformers", str(_tiny_model_dir())), settings)
    else:
        model = offline.create(ModelSpec("offline", "smollm2"), settings)
        model.grounded = name != "ungrounded"
    exact = {f: 0 for f in FIELDS}
    normalized = {f: 0 for f in FIELDS}
    valid = 0
    seconds: list[float] = []
    outputs = []
    for image, truth in samples:
        messages = [Message.user(image)]
        if name == "named":
            messages = [Message.system(NAMED_INSTRUCTION), Message.user(image)]
        elif name == "tiny-random":
            messages = [Message.user(image, "Extract the receipt.")]
        started = time.perf_counter()
        try:
            completion = await model.generate(messages, Receipt, GenerateOptions(max_tokens=max_tokens))
            answer = Receipt.model_validate_json(completion.text).model_dump()
            valid += 1
        except (PolymodalError, ValueError) as exc:
            answer = {}
            outputs.append({"error": str(exc)[:200]})
        seconds.append(time.perf_counter() - started)
        outputs.append(answer)
        for field in FIELDS:
            e, n = score(field, answer.get(field), truth[field])
            exact[field] += e
            normalized[field] += n
    count = len(samples)
    return {
        "variant": name,
        "receipts": count,
        "valid_json": f"{valid}/{count}",
        "exact": {f: exact[f] / count for f in FIELDS},
        "normalized": {f: normalized[f] / count for f in FIELDS},
        "exact_mean": sum(exact.values()) / (count * len(FIELDS)),
        "normalized_mean": sum(normalized.values()) / (count * len(FIELDS)),
        "seconds_median": sorted(seconds)[count // 2],
        "outputs": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--variants", default="default,ungrounded,named,tiny-random")
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples = []
    for seed in range(args.n):
        canvas, truth = render(seed)
        samples.append((Image.from_pil(canvas, name=f"synthetic-receipt-{seed}.png"), truth))
    results = [asyncio.run(run_variant(v, samples, args.max_tokens)) for v in args.variants.split(",")]
    if args.json:
        json.dump({"results": results, "truth": [t for _, t in samples]}, sys.stdout, indent=2, default=str)
        print()
        return
    header = ["variant", "valid", *FIELDS, "mean", "s/receipt"]
    print(" | ".join(header))
    for r in results:
        cells = [r["variant"], r["valid_json"]]
        cells += [f"{r['exact'][f]:.2f}/{r['normalized'][f]:.2f}" for f in FIELDS]
        cells += [f"{r['exact_mean']:.2f}/{r['normalized_mean']:.2f}", f"{r['seconds_median']:.1f}"]
        print(" | ".join(cells))
    print("cells: exact/normalized accuracy over", args.n, "synthetic receipts")


if __name__ == "__main__":
    main()
