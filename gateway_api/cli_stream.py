"""`fedgate submit --stream`: follow a job's stream (GET /v1/jobs/{id}/stream) and print its answer as it comes."""

from __future__ import annotations

import json
from typing import Any

import typer

from gateway_api.cli_http import api_key, api_url, fail


def print_as_it_comes(job_id: str, timeout: float) -> dict[str, Any]:
    """Print each delta as it arrives (a run that failed after its answer began is said on stderr, and the next
    run's answer follows); return the finished job."""
    import httpx

    finished: dict[str, Any] | None = None
    started = False
    try:
        with httpx.stream("GET", f"{api_url()}/v1/jobs/{job_id}/stream",
                          headers={"authorization": f"Bearer {api_key()}"},
                          timeout=httpx.Timeout(timeout, connect=10)) as response:
            if response.status_code >= 400:
                response.read()
                fail(response.json().get("error", {}).get("message", response.text))
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "delta":
                        typer.echo(data["text"], nl=False)
                        started = True
                    elif event == "error":
                        if started:
                            typer.echo("")
                        typer.echo(f"fedgate: {data['error']['message']} (the job goes on)", err=True)
                        started = False
                    elif event == "job":
                        finished = data
    except httpx.HTTPError as exc:
        fail(f"lost the stream of {job_id} ({exc.__class__.__name__}): see `fedgate job {job_id}`")
    if started:
        typer.echo("")
    if finished is None:
        fail(f"the stream of {job_id} ended before the job did: see `fedgate job {job_id}`")
    return finished
