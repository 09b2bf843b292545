"""The fakes' uniform interface, as other test suites use it (the example in docs/providers.md)."""

from __future__ import annotations

import json

from polymodal.backends.messages import Message
from polymodal.backends.registry import load_chat_model
from tests.fakes import FakeProvider, text_reply


async def test_retry_then_answer(fake_provider: FakeProvider) -> None:
    fake_provider.fail(503).reply_json({"total": 12.5})
    settings = fake_provider.make_settings()
    model = load_chat_model(fake_provider.model_id, settings)
    completion = await model.generate([Message.user("total?")], {"type": "object"})
    assert json.loads(completion.text) == {"total": 12.5}
    assert len(fake_provider.requests) == 2
    assert all(r.method == "POST" and isinstance(r.body, dict) for r in fake_provider.requests)
    await model.aclose()


async def test_always_and_unscripted(fake_provider: FakeProvider) -> None:
    model = load_chat_model(fake_provider.model_id, fake_provider.make_settings())
    fake_provider.always(text_reply("same"))
    assert [(await model.generate([Message.user("x")])).text for _ in range(3)] == ["same"] * 3
    await model.aclose()
