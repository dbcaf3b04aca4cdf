"""`fedgate usage [--tenant T] [--by partner,day] [--days 30] [--json]`: jobs, calls, tokens and cost as a table.

Without --tenant it shows the calling tenant's own usage (`GET /v1/usage`); with it, any tenant's (admin key,
`GET /v1/admin/usage`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway_api.cli_http import fail, print_json, request

# gateway_core.tenants.metering.DIMENSIONS, spelled out so `fedgate --help` need not load the domain
# (test_startup checks)
DIMENSIONS_HELP = "partner, day, month"
WIDE = 160  # the table's width when the output is not a terminal (a pipe, a test)
NUMBERS = (("jobs", "Jobs"), ("calls", "Calls"), ("prompt_tokens", "Prompt tokens"),
           ("completion_tokens", "Completion tokens"))


def usage(
    tenant: Annotated[str | None, typer.Option(help="Tenant name (admin key); default: the key's own tenant")] = None,
    by: Annotated[str, typer.Option(help=f"Group by any of {DIMENSIONS_HELP} (comma-separated)")] = "partner",
    days: Annotated[int, typer.Option(help="The last N UTC days, today included", min=1, max=400)] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Usage and cost per partner, day or month, with totals and where the tenant stands against its budgets."""
    from gateway_core.tenants.metering import format_usd, parse_by
    from gateway_core.tenants.spending import span

    try:
        parse_by(by)
    except ValueError as exc:
        fail(str(exc))
    params: dict[str, Any] = {"by": by, "days": days}
    if tenant:
        params["tenant"] = tenant
    report = request("GET", "/v1/admin/usage" if tenant else "/v1/usage", params=params)
    if as_json:
        print_json(report)
        return
    console = Console() if Console().is_terminal else Console(width=WIDE)
    console.print(render(report))
    for budget in report["budgets"]:
        console.print(
            f"{budget['period'].capitalize()} budget: {format_usd(budget['spent_usd'])} of "
            f"{format_usd(budget['budget_usd'])} ({budget['used_ratio']:.0%}, {budget['state']}); "
            f"resets in {span(budget['resets_in_s'])}"
        )


def render(report: dict[str, Any]) -> Table:
    from gateway_core.tenants.metering import format_usd

    by: list[str] = report["by"]
    table = Table(title=f"Usage of {report['tenant']}, {report['first_day']} to {report['last_day']} (UTC)",
                  show_footer=bool(by))
    total = report["total"]
    for position, dimension in enumerate(by):
        table.add_column(dimension.capitalize(), footer="Total" if position == 0 else "")
    for field, title in NUMBERS:
        table.add_column(title, justify="right", footer=f"{total[field]:,}")
    table.add_column("Cost (USD)", justify="right", footer=format_usd(total["cost_usd"]))
    for row in report["rows"] if by else [total]:
        table.add_row(*(row[d] for d in by), *(f"{row[f]:,}" for f, _ in NUMBERS), format_usd(row["cost_usd"]))
    if not report["rows"]:
        table.caption = "No usage in this window."
    return table
