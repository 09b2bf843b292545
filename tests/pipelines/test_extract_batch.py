import asyncio
import json
import time

import pytest

from polymodal.backends.base import Capabilities
from polymodal.backends.testing import FakeChatModel
from polymodal.errors import BackendError, ErrorCategory
from polymodal.pipelines.extract_batch import RateLimiter, aextract_many
from polymodal.samples import synthetic
from polymodal.schemas import Receipt

GRAMMAR = Capabilities(images=False, structured="grammar")


def by_content(labels):
    """A fake answer function: look the receipt up by the text the pipeline sent (its OCR-free image)."""

    def reply(call):
        image = call.messages[1].images[0].image
        return json.dumps(labels[image.content_hash])

    return reply


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    labels = {}
    for seed in range(4):
        doc = synthetic.receipt(seed)
        path = src / f"r{seed}.png"
        path.write_bytes(doc.png)
        from polymodal.media.image import Image

        labels[Image.from_path(path).content_hash] = doc.label
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (src / "empty.pdf").write_bytes(b"")
    return src, labels


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_every_input_ends_as_one_record_and_rerun_makes_no_calls(folder, tmp_path):
    src, labels = folder
    out = tmp_path / "out"
    fake = FakeChatModel(default=by_content(labels), capabilities=GRAMMAR)
    missing = tmp_path / "nope.pdf"
    summary = await aextract_many([src, missing], Receipt, fake, out_dir=out, concurrency=3, progress=False)
    assert summary.total == 7 and summary.accepted == 4 and summary.rejected == 3
    results, rejects = read_jsonl(out / "results.jsonl"), read_jsonl(out / "rejects.jsonl")
    assert len(results) == 4 and len(rejects) == 3
    assert {r["source"] for r in results} == {str(src / f"r{i}.png") for i in range(4)}
    reasons = {r["source"]: " ".join(r["errors"]) for r in rejects}
    assert "broken.jpg" in reasons[str(src / "broken.jpg")]
    assert "empty.pdf" in reasons[str(src / "empty.pdf")]
    assert "nope.pdf" in reasons[str(missing)]
    assert len(fake.calls) == 4

    again = await aextract_many([src, missing], Receipt, fake, out_dir=out, concurrency=3, progress=False)
    assert len(fake.calls) == 4, "a second run must not call the model for finished documents"
    assert again.cached == 4 and again.accepted == 4 and not again.model_calls_made
    assert len(read_jsonl(out / "results.jsonl")) == 4 and len(read_jsonl(out / "rejects.jsonl")) == 3


async def test_concurrency_is_bounded(folder, tmp_path):
    src, labels = folder
    in_flight = peak = 0
    inner = by_content(labels)

    class Tracking(FakeChatModel):
        async def _generate(self, messages, schema, options):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            return await super()._generate(messages, schema, options)

    fake = Tracking(default=inner, capabilities=GRAMMAR)
    await aextract_many([src], Receipt, fake, out_dir=tmp_path / "o", concurrency=2, progress=False)
    assert peak == 2


async def test_validation_rejects_are_cached_unless_retried(folder, tmp_path):
    src, _ = folder
    fake = FakeChatModel(default={"merchant": "x"}, capabilities=GRAMMAR)
    out = tmp_path / "o"
    first = await aextract_many([src], Receipt, fake, out_dir=out, progress=False)
    assert first.rejected == 6 and len(fake.calls) == 12  # 4 readable docs x 3 attempts
    await aextract_many([src], Receipt, fake, out_dir=out, progress=False)
    assert len(fake.calls) == 12
    await aextract_many([src], Receipt, fake, out_dir=out, progress=False, retry_rejects=True)
    assert len(fake.calls) == 24


async def test_auth_failure_stops_calling_and_is_not_cached(folder, tmp_path):
    src, labels = folder
    auth = BackendError("bad key", category=ErrorCategory.AUTH, provider="fake", status=401)
    fake = FakeChatModel([auth], default=by_content(labels), capabilities=GRAMMAR)
    out = tmp_path / "o"
    summary = await aextract_many([src], Receipt, fake, out_dir=out, concurrency=1, progress=False)
    assert summary.accepted == 0 and len(fake.calls) == 1
    assert all(r["retryable"] for r in read_jsonl(out / "rejects.jsonl"))
    retry = await aextract_many([src], Receipt, fake, out_dir=out, concurrency=1, progress=False)
    assert retry.accepted == 4


async def test_rate_limiter_spaces_calls():
    limiter = RateLimiter(20.0)
    started = time.monotonic()
    for _ in range(5):
        await limiter.wait()
    assert time.monotonic() - started >= 0.19
    unlimited = RateLimiter(None)
    started = time.monotonic()
    for _ in range(100):
        await unlimited.wait()
    assert time.monotonic() - started < 0.05
