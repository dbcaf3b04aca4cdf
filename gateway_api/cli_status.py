"""`fedgate status [--watch]`: one screen with each partner's queue, in-flight calls, buckets, breaker, error rate,
fallbacks and dead letters, from `GET /v1/admin/status` (admin API key)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway_api.cli_http import api_key, api_url, fail, print_json

if TYPE_CHECKING:
    from gateway_core.fleet.fleet_state import BucketState, FleetState, PartnerState

PATH = "/v1/admin/status"
WIDE = 160  # the table's width when the output is not a terminal (a pipe, a test)


class StatusUnavailable(Exception):
    """The API could not be asked, or said no: the message says why."""


def fetch_state(timeout_s: float = 10.0) -> FleetState:
    """The fleet state from the API; StatusUnavailable says what went wrong (so --watch can keep trying)."""
    import httpx

    from gateway_core.fleet.fleet_state import FleetState

    url = api_url()
    try:
        response = httpx.get(url + PATH, headers={"authorization": f"Bearer {api_key()}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise StatusUnavailable(f"cannot reach the API at {url} ({exc.__class__.__name__}): is the fleet up "
                                "(`fedgate up`)?") from None
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise StatusUnavailable(message or f"the API answered {response.status_code}")
    return FleetState.model_validate(body)


def _bucket(bucket: BucketState | None) -> Text:
    if bucket is None:
        return Text("no limit", style="dim")
    text = f"{bucket.level:,.1f}/{bucket.capacity:,.0f}"
    if bucket.wait_s > 0:
        return Text(f"{text} wait {bucket.wait_s:.1f}s", style="yellow")
    return Text(f"{text} ({bucket.fill:.0%})")


# by gateway_core.partners.breaker.BreakerState
_BREAKER_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


def _breaker(partner: PartnerState, now: float) -> Text:
    breaker = partner.breaker
    if not breaker.enabled:
        return Text("disabled", style="dim")
    text = breaker.state.value.replace("_", "-")
    if breaker.opened_at is not None:
        text += f" {max(0.0, now - breaker.opened_at):.0f}s"
    return Text(text, style=_BREAKER_STYLE[breaker.state.value])


def _error_rate(partner: PartnerState) -> Text:
    rate = partner.breaker.error_rate
    if rate is None:
        return Text("-", style="dim")
    style = "red" if rate >= 0.5 else "yellow" if rate > 0 else ""
    return Text(f"{rate:.0%} of {partner.breaker.calls}", style=style)


def _count(value: int, warn: bool = False) -> Text:
    return Text(f"{value:,}", style="yellow" if warn and value else "" if value else "dim")


def render(state: FleetState) -> Group:
    window_min = max(1, state.recent_window_s // 60)
    when = datetime.fromtimestamp(state.at).strftime("%Y-%m-%d %H:%M:%S")
    table = Table(title=f"fedgate fleet at {when}", title_justify="left")
    columns = ("Partner", "Queue", "Delayed", "In flight", "Requests bucket", "Tokens bucket", "Breaker",
               "Error rate", f"Fallbacks {window_min}m", "Dead letters")
    for column in columns:
        table.add_column(column, no_wrap=True, justify="left" if column == "Partner" else "right")
    for p in state.partners:
        table.add_row(
            Text(p.name, style="bold"), _count(p.queue_depth), _count(p.delayed), _count(p.in_flight),
            _bucket(p.buckets.get("requests")), _bucket(p.buckets.get("tokens")), _breaker(p, state.at),
            _error_rate(p), _count(p.recent.get("fallback_out", 0), warn=True), _count(p.dead_letters, warn=True),
        )
    summary = (f"queued {state.queued:,} · delayed {state.delayed:,} · unacked {state.unacked:,} · "
               f"dead letters {state.dead_letters:,}")
    if state.dead_letters_unattributed:
        summary += f" ({state.dead_letters_unattributed:,} expired or for unknown partners)"
    lines: list[Any] = [table, Text(summary)]
    if state.truncated:
        lines.append(Text(f"counts stopped at the scan cap: {', '.join(state.truncated)}", style="yellow"))
    return Group(*lines)


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch", min=0.2)] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fleet state as JSON once")] = False,
) -> None:
    """Show each partner's queue, in-flight calls, buckets, breaker, error rate, fallbacks and dead letters."""
    if as_json and watch:
        fail("--json prints once; leave out --watch")
    if not watch:
        try:
            state = fetch_state()
        except StatusUnavailable as exc:
            fail(str(exc))
        if as_json:
            print_json(state.model_dump(mode="json"))
        else:
            _console().print(render(state))
        return
    console = _console()
    try:
        with Live(Text("reading the fleet state…"), console=console, auto_refresh=False,
                  screen=console.is_terminal) as live:
            while True:
                try:
                    view: Any = render(fetch_state())
                except StatusUnavailable as exc:
                    view = Text(f"fedgate: {exc} (retrying every {interval:g}s; Ctrl-C stops)", style="red")
                live.update(view, refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=WIDE)
    return console
