"""The handler the scenario's saves change."""


def hello(_request: dict) -> dict:
    """``GET /``."""
    return {"status": 200, "body": "Hello, World!"}
