"""What every `fedgate` command that talks to the API shares: where it is, the key, and how errors print.

The CLI starts fast: this module and the commands' modules import only typer at load time. Settings, httpx and the
domain modules are imported inside the commands that use them (tests/unit/test_startup.py holds that).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from gateway_core.settings import Settings


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"fedgate: {message}", err=True)
    raise typer.Exit(code)


def get_settings() -> Settings:
    """gateway_core.settings.get_settings, imported on first use (pydantic-settings and the domain package)."""
    from gateway_core.settings import get_settings as settings_of_this_process

    return settings_of_this_process()


def api_url() -> str:
    url = os.environ.get("FEDGATE_API_URL")
    if not url:
        found = get_settings()
        url = f"http://{found.api_host}:{found.api_port}"
    return url.rstrip("/")


def first_key(path: Path) -> str:
    """A key file may hold several keys while one is rotated (one per line); the first is the one to send."""
    return next((line.strip() for line in path.read_text().splitlines() if line.strip()), "")


def api_key() -> str:
    key = os.environ.get("FEDGATE_API_KEY")
    if key:
        return key
    path = get_settings().home_dir() / "dev-api-key"
    if path.exists():
        return first_key(path)
    fail("no API key: set FEDGATE_API_KEY, or run `fedgate up` once to create the development key")
    return ""


def request(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.request(
            method,
            api_url() + path,
            headers={"authorization": f"Bearer {api_key()}"},
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the API at {api_url()} ({exc.__class__.__name__}): is the fleet up (`fedgate up`)?")
    body = response.json()
    if response.status_code >= 400:
        fail(body.get("error", {}).get("message", response.text))
    return body  # type: ignore[no-any-return]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))
