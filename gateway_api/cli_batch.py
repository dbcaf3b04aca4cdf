"""`fedgate batch ...`: submit a JSONL batch with a live progress bar, and inspect, cancel or download batches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway_api.cli_http import api_key, api_url, fail, print_json, request

batch_app = typer.Typer(help="Batches in the OpenAI Batch API shape (JSONL in, output and error JSONL out).",
                        no_args_is_help=True, pretty_exceptions_enable=False)

FINISHED = {"completed", "failed", "cancelled", "expired"}


def _upload(path: Path) -> str:
    import httpx

    try:
        with path.open("rb") as fh:
            response = httpx.post(f"{api_url()}/v1/files", headers={"authorization": f"Bearer {api_key()}"},
                                  data={"purpose": "batch"}, files={"file": (path.name, fh)}, timeout=300)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the API at {api_url()} ({exc.__class__.__name__}): is the fleet up (`fedgate up`)?")
    body = response.json()
    if response.status_code >= 400:
        fail(body.get("error", {}).get("message", response.text))
    return str(body["id"])


def _download(file_id: str | None, target: Path) -> Path | None:
    import httpx

    if not file_id:
        return None
    response = httpx.get(f"{api_url()}/v1/files/{file_id}/content",
                         headers={"authorization": f"Bearer {api_key()}"}, timeout=300)
    if response.status_code >= 400:
        fail(f"cannot download {file_id}: HTTP {response.status_code}")
    target.write_bytes(response.content)
    return target


def _describe_failure(batch: dict[str, Any]) -> str:
    errors = (batch.get("errors") or {}).get("data") or []
    lines = [f"line {e.get('line')}: {e.get('message')}" for e in errors[:10]]
    return f"batch {batch['id']} {batch['status']}" + (":\n  " + "\n  ".join(lines) if lines else "")


@batch_app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL: one {custom_id, method, url, body} request per line")],
    wait: Annotated[bool, typer.Option(help="Show progress until the batch finishes, then write the results")]
    = False,
    out_dir: Annotated[Path, typer.Option(help="Where --wait writes <batch>.output.jsonl and .errors.jsonl")]
    = Path("."),
    poll_s: Annotated[float, typer.Option(help="Seconds between progress updates")] = 1.0,
) -> None:
    """Upload FILE and start a batch; with --wait, a live progress bar (done / failed / rate / ETA) and the results."""
    batch = request("POST", "/v1/batches", json={"input_file_id": _upload(file), "endpoint": "/v1/chat/completions",
                                                 "completion_window": "24h"}, timeout=300)
    if not wait:
        typer.echo(batch["id"])
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    started = time.monotonic()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[failed]} failed"), TextColumn("{task.fields[rate]:.1f}/s"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(batch["id"], total=None, failed=0, rate=0.0)
        while batch["status"] not in FINISHED:
            time.sleep(poll_s)  # the pace of a progress display, not synchronisation
            batch = request("GET", f"/v1/batches/{batch['id']}", timeout=60)
            counts = batch.get("request_counts") or {}
            done = int(counts.get("completed", 0)) + int(counts.get("failed", 0))
            progress.update(task, total=counts.get("total") or None, completed=done,
                            failed=counts.get("failed", 0), rate=done / max(1e-6, time.monotonic() - started))
    if batch["status"] != "completed":
        fail(_describe_failure(batch))
    _write_results(batch, out_dir)


def _write_results(batch: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    output = _download(batch.get("output_file_id"), out_dir / f"{batch['id']}.output.jsonl")
    errors = _download(batch.get("error_file_id"), out_dir / f"{batch['id']}.errors.jsonl")
    counts = batch.get("request_counts") or {}
    typer.echo(f"batch {batch['id']} completed: {counts.get('completed', 0)} succeeded, "
               f"{counts.get('failed', 0)} failed")
    for path in (output, errors):
        if path is not None:
            typer.echo(f"  {path}")


@batch_app.command()
def status(batch_id: str) -> None:
    """Show one batch as JSON (status, request_counts, output and error file ids)."""
    print_json(request("GET", f"/v1/batches/{batch_id}"))


@batch_app.command()
def cancel(batch_id: str) -> None:
    """Cancel a batch: unfinished requests are cancelled, finished ones keep their results."""
    print_json(request("POST", f"/v1/batches/{batch_id}/cancel"))


@batch_app.command()
def results(
    batch_id: str,
    out_dir: Annotated[Path, typer.Option(help="Where to write the output and error JSONL")] = Path("."),
) -> None:
    """Download a finished batch's output and error files."""
    batch = request("GET", f"/v1/batches/{batch_id}")
    if batch["status"] not in FINISHED:
        fail(f"batch {batch_id} is {batch['status']}: results are written when it finishes")
    _write_results(batch, out_dir)
