"""Local WebSocket/HTTP servers on 127.0.0.1 that speak providers' documented wire protocols, for tests."""
