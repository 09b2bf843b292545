"""Extraction pipeline overhead and throughput.

1. Overhead per page, model time excluded: open + render (worker process) + encode for the wire + parse and
   validate, measured stage by stage on synthetic one-page invoices (PDF) and receipts (PNG).
2. Throughput vs concurrency through the real OpenAI-compatible adapter against a local server (its own
   process) that answers every request after an injected latency (default 500 ms).

    python benchmarks/extract_bench.py            # table
    python benchmarks/extract_bench.py --json     # {"pages_per_s", "concurrency", "model_latency_ms", ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polymodal.backends.base import Completion  # noqa: E402
from polymodal.backends.registry import load_chat_model  # noqa: E402
from polymodal.config import Settings  # noqa: E402
from polymodal.media.document import Document  # noqa: E402
from polymodal.pipelines.extract import check_answer  # noqa: E402
from polymodal.pipelines.extract_batch import aextract_many  # noqa: E402
from polymodal.samples import synthetic  # noqa: E402
from polymodal.schemas import Invoice, Receipt  # noqa: E402

SERVER = """
import sys, time, json
sys.path.insert(0, {root!r})
from tests.fakes import OpenAIFake, json_reply
fake = OpenAIFake(latency_s={latency}).start()
fake.always(json_reply(json.loads({answer!r})))
print(fake.model_id, flush=True)
print(json.dumps(fake.endpoint_settings()), flush=True)
while True:
    time.sleep(3600)
"""


def make_corpus(folder: Path, n: int) -> list[Path]:
    """n one-page documents: half invoices (PDF with text), half receipts (PNG)."""
    paths = []
    for i in range(n):
        if i % 2:
            path = folder / f"receipt-{i}.png"
            path.write_bytes(synthetic.receipt(i).png or b"")
        else:
            path = folder / f"invoice-{i}.pdf"
            path.write_bytes(synthetic.invoice(i).pdf or b"")
        paths.append(path)
    return paths


def overhead(paths: list[Path], max_pixels: int) -> dict[str, float]:
    """Median milliseconds per page for each stage, model excluded."""
    stages: dict[str, list[float]] = {"render_ms": [], "encode_ms": [], "validate_ms": []}
    answers = {
        "invoice": json.dumps(synthetic.invoice(0).label),
        "receipt": json.dumps(synthetic.receipt(1).label),
    }
    for path in paths:
        t0 = time.perf_counter()
        pages = Document.open(path).pages(max_pixels=max_pixels)
        t1 = time.perf_counter()
        for page in pages:
            page.image.encode("JPEG", max_pixels=max_pixels)
        t2 = time.perf_counter()
        kind = "receipt" if path.suffix == ".png" else "invoice"
        schema = Receipt if kind == "receipt" else Invoice
        result = check_answer(Completion(text=answers[kind]), schema, False, 4096)
        assert result.value is not None
        t3 = time.perf_counter()
        stages["render_ms"].append((t1 - t0) * 1000)
        stages["encode_ms"].append((t2 - t1) * 1000)
        stages["validate_ms"].append((t3 - t2) * 1000)
    table = {k: statistics.median(v) for k, v in stages.items()}
    table["total_ms"] = sum(table.values())
    return table


def start_server(latency_s: float) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    answer = json.dumps({"data": synthetic.receipt(1).label, "evidence": []})  # vision models get an envelope
    code = SERVER.format(root=str(ROOT), latency=latency_s, answer=answer)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    model_id = proc.stdout.readline().strip()
    endpoint = json.loads(proc.stdout.readline())
    return proc, model_id, endpoint


async def throughput(
    paths: list[Path], model_id: str, settings: Settings, concurrency: int, out: Path
) -> float:
    chat = load_chat_model(model_id, settings)
    summary = await aextract_many(
        paths, Receipt, chat, out_dir=out, concurrency=concurrency, progress=False, settings=settings
    )
    assert summary.accepted == len(paths), summary.records[:2]
    return len(paths) / summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--latency-ms", type=float, default=500.0)
    parser.add_argument("--pages", type=int, default=320, help="documents available to the throughput runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = make_corpus(folder, args.pages)
        costs = overhead(corpus[:40], max_pixels=1_000_000)
        proc, model_id, endpoint = start_server(args.latency_ms / 1000)
        try:
            settings = Settings(**endpoint, request_timeout=60)
            # Warm-up, not recorded: SDK import, TLS context, the render worker's start (once per process).
            asyncio.run(throughput(corpus[:8], model_id, settings, 4, folder / "warm-up"))
            rates = {}
            for c in args.concurrency:
                n = min(len(corpus), max(8, int(c * 1000 / args.latency_ms * 8)))  # ~8 latencies of work
                rates[c] = asyncio.run(throughput(corpus[:n], model_id, settings, c, folder / f"out-{c}"))
        finally:
            proc.terminate()
            proc.wait()
    focus = 16 if 16 in rates else max(rates)
    report = {
        "pages_per_s": round(rates[focus], 2),
        "concurrency": focus,
        "model_latency_ms": args.latency_ms,
        "ideal_pages_per_s": round(focus * 1000 / args.latency_ms, 2),
        "by_concurrency": {str(c): round(r, 2) for c, r in rates.items()},
        "overhead_ms_per_page": {k: round(v, 2) for k, v in costs.items()},
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report))
        return
    print("Pipeline overhead per page (median ms, model excluded)")
    for name, value in costs.items():
        print(f"  {name:<12} {value:8.2f}")
    print(f"\nThroughput, model latency {args.latency_ms:.0f} ms (OpenAI-compatible adapter, local server)")
    print(f"  {'concurrency':>11} {'pages/s':>9} {'ideal':>7} {'efficiency':>10}")
    for c, rate in rates.items():
        ideal = c * 1000 / args.latency_ms
        print(f"  {c:>11} {rate:9.2f} {ideal:7.1f} {rate / ideal:10.0%}")


if __name__ == "__main__":
    main()
