"""`fedgate contracts ...`: add, list and show output contracts through the HTTP API (admin key needed)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway_api.cli_http import api_key, api_url, fail, print_json, request

BASE = "/v1/admin/contracts"

contracts_app = typer.Typer(
    help="Add, list and show output contracts (needs an admin tenant's API key).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST keeping the error body (cli.request stops at the message; a 409 also lists the problems)."""
    import httpx

    try:
        response = httpx.post(api_url() + path, json=body, headers={"authorization": f"Bearer {api_key()}"}, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the API at {api_url()} ({exc.__class__.__name__}): is the fleet up (`fedgate up`)?")
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"error": {"message": response.text}}


def _when(unix_s: float | None) -> str:
    return datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M:%S") if unix_s else "-"


@contracts_app.command()
def add(
    name: Annotated[str, typer.Argument(help="Contract name (lowercase letters, digits, '-', '_', '.')")],
    schema_file: Annotated[
        Path,
        typer.Argument(
            help="A JSON file holding a JSON Schema (draft 2020-12)", exists=True, dir_okay=False, readable=True
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Store it even if it breaks callers of the previous version")
    ] = False,
) -> None:
    """Add a contract, or a new version of one; prints the version and the compatibility verdict."""
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        fail(f"{schema_file} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {schema_file}: {exc}")
    status, body = _post(BASE, {"name": name, "schema": schema, "force": force})
    if status == 409 and "problems" in body:
        lines = [
            f"fedgate: {name}: refused, the new version breaks callers of version {body.get('previous_version', '?')}:"
        ]
        lines += [f"  - {problem}" for problem in body["problems"]]
        lines.append("Keep the old promises, use a new contract name, or add --force.")
        typer.echo("\n".join(lines), err=True)
        raise typer.Exit(1)
    if status >= 400:
        fail(body.get("error", {}).get("message") or f"HTTP {status}")
    typer.echo(f"{body['name']} version {body['version']} added")
    problems = body["compatibility"]["problems"]
    if body.get("forced"):
        typer.echo(f"forced over {len(problems)} compatibility problem{'s' if len(problems) != 1 else ''}:")
        for problem in problems:
            typer.echo(f"  - {problem}")
    elif body["version"] > 1:
        typer.echo(f"compatible with version {body['version'] - 1}")


@contracts_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON")] = False,
) -> None:
    """List contracts with their latest version."""
    page = request("GET", BASE)
    if as_json:
        print_json(page)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not page["data"]:
        console.print("No contracts yet: add one with `fedgate contracts add NAME SCHEMA.json`.")
        return
    table = Table(title=f"Contracts ({len(page['data'])})")
    for column in ("Name", "Latest", "Versions", "Source", "Updated"):
        table.add_column(column)
    for item in page["data"]:
        table.add_row(
            item["name"], str(item["latest_version"]), str(item["versions"]), item["source"], _when(item["updated_at"])
        )
    console.print(table)


@contracts_app.command()
def show(
    name: Annotated[str, typer.Argument(help="Contract name, or NAME@VERSION")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="A version number (default: the latest)")
    ] = None,
) -> None:
    """Show one version of a contract (the latest by default) as JSON, schema included."""
    from gateway_core.contracts import parse_reference

    try:
        name, pinned = parse_reference(name)
    except ValueError as exc:
        fail(str(exc))
    if pinned is not None and version is not None and pinned != version:
        fail(f"give the version once: {name}@{pinned} or --version {version}")
    chosen = version if version is not None else pinned
    print_json(request("GET", f"{BASE}/{name}", params={"version": chosen} if chosen else {}))
