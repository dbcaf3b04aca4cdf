"""`fedgate dlq ...`: inspect, replay and purge dead letters through the HTTP API (admin key needed)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway_api.cli_http import fail, print_json, request

BASE = "/v1/admin/dead-letters"

dlq_app = typer.Typer(
    help="Inspect, replay and purge dead letters (needs an admin tenant's API key).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _when(unix_s: float | None) -> str:
    return datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M:%S") if unix_s else "-"


def _short(text: str | None, width: int = 80) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq_app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="Entries per page (1-500)")] = 50,
    offset: Annotated[int, typer.Option(help="Matching entries to skip (the next offset a page shows)")] = 0,
    partner: Annotated[str | None, typer.Option(help="Only jobs requested for, or last tried on, this partner")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's jobs")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON")] = False,
) -> None:
    """List dead letters, newest first (no prompt or output text)."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if partner:
        params["partner"] = partner
    if tenant:
        params["tenant"] = tenant
    page = request("GET", BASE, params=params)
    if as_json:
        print_json(page)
        return
    console = Console()
    if not page["items"]:
        console.print(f"No dead letters{' match' if partner or tenant else ''} (queue holds {page['total']}).")
        return
    table = Table(title=f"Dead letters ({page['total']} in the queue)")
    for column in ("Job", "Tenant", "Requested", "Last partner", "Dead-lettered", "Attempts", "Status", "Error"):
        table.add_column(column, overflow="fold" if column in ("Job", "Error") else "ellipsis")
    for item in page["items"]:
        table.add_row(
            item["id"],
            item["tenant"],
            item["requested_partner"],
            item["last_partner"],
            _when(item["dead_lettered_at"]),
            str(item["attempts"]),
            str(item["last_status_code"] or "-"),
            _short(item["error"]),
        )
    console.print(table)
    if page.get("next_offset") is not None:
        console.print(f"More: fedgate dlq list --offset {page['next_offset']}")


@dlq_app.command()
def show(job_id: Annotated[str, typer.Argument(help="The dead-lettered job's id")]) -> None:
    """Show one dead letter with its full attempt history, as JSON."""
    print_json(request("GET", f"{BASE}/{job_id}"))


@dlq_app.command()
def replay(
    job_id: Annotated[str, typer.Argument(help="The dead-lettered job's id")],
    partner: Annotated[
        str | None, typer.Option(help="Send it to this partner (default: the one it was submitted for)")
    ] = None,
) -> None:
    """Send a dead letter back to a partner, keeping its job id; prints where it went."""
    body = {"partner": partner} if partner else None
    result = request("POST", f"{BASE}/{job_id}/replay", json=body)
    typer.echo(
        f"replayed {result['id']} to {result['partner']} (attempt {result['attempt']}); "
        f"follow it with `fedgate dlq show` or `fedgate job {result['id']}`"
    )


@dlq_app.command()
def purge(
    job_id: Annotated[str | None, typer.Argument(help="The dead letter to delete; or use --all")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Delete every dead letter (with --older-than, only old ones)")
    ] = False,
    older_than: Annotated[
        float | None, typer.Option(help="With --all: only those dead-lettered this many seconds ago or more", min=0)
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete one dead letter, or with --all many of them. Deleted dead letters cannot be replayed."""
    if job_id and all_:
        fail("give a job id or --all, not both")
    if not job_id and not all_:
        fail("give the job id to purge, or --all (optionally with --older-than SECONDS) to purge many")
    if older_than is not None and not all_:
        fail("--older-than goes with --all")
    if job_id:
        request("DELETE", f"{BASE}/{job_id}")
        typer.echo(f"purged {job_id}")
        return
    scope = f"dead-lettered more than {older_than:g}s ago" if older_than is not None else "in the queue"
    if not yes:
        if not sys.stdin.isatty():
            fail(f"this deletes every dead letter {scope} and cannot be undone: add --yes to confirm")
        typer.confirm(f"Delete every dead letter {scope}? This cannot be undone", abort=True)
    params = {"older_than_s": older_than} if older_than is not None else {}
    result = request("DELETE", BASE, params=params)
    typer.echo(f"purged {result['purged']} dead letter{'s' if result['purged'] != 1 else ''}")
