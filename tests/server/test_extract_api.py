import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from polymodal.backends import registry
from polymodal.backends.base import Capabilities
from polymodal.backends.testing import FakeChatModel
from polymodal.config import Settings
from polymodal.errors import BackendError, ErrorCategory
from polymodal.samples import synthetic
from polymodal.server.app import create_app


@pytest.fixture
def fake(monkeypatch):
    model = FakeChatModel(default=synthetic.receipt(2).label, capabilities=Capabilities(structured="grammar"))
    monkeypatch.setitem(registry.BUILTIN_CHAT_PROVIDERS, "scripted", lambda spec, settings: model)
    return model


def client(**settings):
    return TestClient(create_app(Settings(default_model="scripted:x", **settings)))


def test_extract_upload(fake):
    png = synthetic.receipt(2).png
    response = client().post(
        "/v1/extract", files={"file": ("r.png", png, "image/png")}, data={"schema": "receipt"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["source"] == "r.png"
    assert body["data"]["total"] == synthetic.receipt(2).label["total"]


def test_bad_upload_is_422_naming_the_file(fake):
    response = client().post(
        "/v1/extract", files={"file": ("x.png", b"", "image/png")}, data={"schema": "receipt"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "InputError"


def test_api_key_and_limits(fake):
    c = client(server_api_keys=[SecretStr("k1")], server_max_upload_bytes=100)
    files = {"file": ("r.png", synthetic.receipt(2).png, "image/png")}
    assert c.post("/v1/extract", files=files, data={"schema": "receipt"}).status_code == 401
    headers = {"Authorization": "Bearer k1"}
    assert c.post("/v1/extract", files=files, data={"schema": "receipt"}, headers=headers).status_code == 413
    assert c.post("/v1/extract", files=files, data={"schema": "nope"}, headers=headers).status_code == 400
    assert c.get("/healthz").json() == {"status": "ok"}


def test_backend_errors_map_to_http(fake):
    fake.queue(BackendError("spend limit", category=ErrorCategory.QUOTA, provider="x", retry_after=2.5))
    files = {"file": ("r.png", synthetic.receipt(2).png, "image/png")}
    response = client().post("/v1/extract", files=files, data={"schema": "receipt"})
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    assert response.json()["category"] == "quota"
