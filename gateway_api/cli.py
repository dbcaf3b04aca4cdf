"""The `fedgate` command line.

Only typer (and the standard library) load with this module, so `fedgate --help` and the API-talking commands start
fast: every command imports what it uses (settings, httpx, the fleet, Celery, presidio) inside its own body.
tests/unit/test_startup.py holds that.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway_api.cli_http import fail, get_settings, print_json, request

cli = typer.Typer(help="fedgate: a federated AI partnership gateway run as a Celery worker fleet.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"fedgate {version('fedgate')}")
        raise typer.Exit()


@cli.callback()
def _options(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print fedgate's version and exit")] = False,
) -> None:
    """fedgate: a federated AI partnership gateway run as a Celery worker fleet."""


FINAL_STATUSES = ("succeeded", "dead_lettered", "cancelled")


@cli.command()
def submit(
    partner: Annotated[str, typer.Option(help="Partner name from the config")],
    prompt: Annotated[str, typer.Option(help="The prompt text")],
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish and print its output")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 120.0,
    max_tokens: Annotated[int | None, typer.Option(help="Output token limit")] = None,
    contract: Annotated[str | None, typer.Option(
        help="Output contract the answer must conform to: NAME or NAME@VERSION (see `fedgate contracts list`)")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: the accepted job, or with --wait the finished job with its history")] = False,
    stream: Annotated[bool, typer.Option(help="Print the answer as the partner generates it")] = False,
) -> None:
    """Submit one job; print its id, or with --wait its output (the validated JSON when it has a contract), or with
    --stream its answer as it comes.

    Exit code 1 when the job did not succeed (its error goes to stderr) or --wait ran out of time."""
    payload: dict[str, Any] = {"partner": partner, "prompt": prompt}
    if max_tokens:
        payload["max_tokens"] = max_tokens
    if contract:
        payload["contract"] = contract
    if stream:
        payload["stream"] = True
    accepted = request("POST", "/v1/jobs", json=payload)
    if stream:
        from gateway_api.cli_stream import print_as_it_comes

        finished = print_as_it_comes(accepted["id"], timeout)
        if finished["status"] != "succeeded":
            fail(f"job {accepted['id']} {finished['status']}: {finished.get('error') or 'no output'}")
        return
    if not wait:
        if as_json:
            print_json(accepted)
        else:
            typer.echo(accepted["id"])
        return
    job = _wait_for(accepted["id"], timeout)
    if as_json:
        print_json(job)
    elif job["status"] == "succeeded":
        typer.echo(json.dumps(job["parsed"], indent=2) if job.get("contract") else job["output"])
    if job["status"] != "succeeded":
        if not as_json:
            reason = job.get("error") or "no final status yet"
            typer.echo(f"fedgate: job {job['id']} {job['status']}: {reason}", err=True)
        raise typer.Exit(1)


def _wait_for(job_id: str, timeout: float) -> dict[str, Any]:
    """The job once it reached a final status, or as it is when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        job = request("GET", f"/v1/jobs/{job_id}", params={"wait": max(0, min(30, remaining))},
                      timeout=max(5, min(30, remaining) + 5))
        if job["status"] in FINAL_STATUSES or remaining <= 0:
            return job


@cli.command()
def job(job_id: str) -> None:
    """Show one job as JSON."""
    print_json(request("GET", f"/v1/jobs/{job_id}"))


@cli.command()
def up(
    detach: Annotated[bool, typer.Option(help="Start in the background and return")] = False,
    simulator: Annotated[bool, typer.Option(help="Also run the bundled partner simulator")] = True,
    flower: Annotated[bool, typer.Option(help="Also run Flower")] = True,
    demo: Annotated[bool, typer.Option(help="Send one job to each partner once the fleet is up")] = False,
) -> None:
    """Start the fleet: Redis (embedded unless REDIS_URL), API, a worker per partner, Flower, simulator."""
    from gateway_api.fleet import Fleet, ensure_dev_secrets, read_fleet_file
    from gateway_core.errors import FedgateError

    settings = get_settings()
    if read_fleet_file(settings.home_dir()) and _supervisor_alive(settings):
        fail(f"a fleet is already running from {settings.home_dir()}: `fedgate down` stops it")
    if detach:
        args = [sys.executable, "-m", "gateway_api.cli", "up"]
        args += [] if simulator else ["--no-simulator"]
        args += [] if flower else ["--no-flower"]
        log = (settings.home_dir() / "fleet.log").open("ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        fleet = Fleet(settings, with_simulator=simulator, with_flower=flower)
        _wait_detached(proc, fleet)
        _announce(fleet, ensure_dev_secrets(settings))
        return
    fleet = Fleet(settings, with_simulator=simulator, with_flower=flower)
    try:
        fleet.start()
        fleet.wait_healthy()
    except FedgateError as exc:
        fleet.stop()
        fail(str(exc))
    _announce(fleet, ensure_dev_secrets(settings))
    if demo:
        _demo(fleet, ensure_dev_secrets(settings))
    typer.echo("Press Ctrl-C to stop the fleet.")
    try:
        fleet.watch()
    finally:
        typer.echo("fedgate: stopping the fleet")
        fleet.stop()


def _wait_detached(proc: subprocess.Popen[bytes], fleet: Any) -> None:
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the fleet did not start; see {fleet.settings.home_dir() / 'fleet.log'}")
        try:
            if httpx.get(f"{fleet.api_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    fail("the fleet did not become healthy within 90s")


def _announce(fleet: Any, key: str) -> None:
    home = fleet.settings.home_dir()
    typer.echo(f"fedgate API:    {fleet.api_url}   (OpenAPI docs at {fleet.api_url}/docs)")
    if fleet.with_flower:
        from gateway_core.fleet.credentials import flower_auth_file

        login = "FEDGATE_FLOWER_BASIC_AUTH" if fleet.settings.flower_basic_auth else flower_auth_file(fleet.settings)
        typer.echo(f"Flower:         {fleet.flower_url}   (login in {login})")
    typer.echo(f"Dev API key:    {key}   (also in {home / 'dev-api-key'})")
    typer.echo(f"Logs:           {home / 'logs'}")


def _demo(fleet: Any, key: str) -> None:
    """Show the fleet working: one job per partner, through the API, the queues and the workers."""
    import httpx

    from gateway_core.config import load_config

    config = load_config(fleet.settings.config, home=fleet.settings.home_dir())
    headers = {"authorization": f"Bearer {key}"}
    for partner in config.partners:
        accepted = httpx.post(f"{fleet.api_url}/v1/jobs", headers=headers, timeout=30,
                              json={"partner": partner, "prompt": "Say hello to the fleet."}).json()
        job = httpx.get(f"{fleet.api_url}/v1/jobs/{accepted['id']}", params={"wait": 30}, headers=headers,
                        timeout=40).json()
        typer.echo(f"demo job {job['id']} via {partner}: {job['status']} in {job['timings_ms'].get('total_ms')} ms"
                   f" -> {job.get('output')!r}")
    typer.echo(f"Try: FEDGATE_HOME={fleet.settings.home_dir()} fedgate submit --partner sim-openai "
               "--prompt 'Hello' --wait")  # add --json for the whole job


def _supervisor_alive(settings: Any) -> bool:
    from gateway_api.fleet import read_fleet_file

    data = read_fleet_file(settings.home_dir()) or {}
    pid = data.get("supervisor")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@cli.command()
def down() -> None:
    """Stop a fleet started with `fedgate up --detach`."""
    from gateway_api.fleet import read_fleet_file

    settings = get_settings()
    data = read_fleet_file(settings.home_dir())
    if not data or not _supervisor_alive(settings):
        (settings.home_dir() / "fleet.json").unlink(missing_ok=True)
        typer.echo("fedgate: no fleet is running")
        return
    pid = int(data["supervisor"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            typer.echo("fedgate: fleet stopped")
            return
        time.sleep(0.2)
    fail(f"fleet supervisor {pid} did not stop within 60s")


@cli.command()
def reload(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the API's verdict in its log")] = 10.0,
) -> None:
    """Make the API of the fleet `fedgate up` started re-read its config (SIGHUP). Workers need a restart."""
    from gateway_api.app import RELOAD_APPLIED, RELOAD_REFUSED
    from gateway_api.fleet import read_fleet_file

    settings = get_settings()
    home = settings.home_dir()
    children = (read_fleet_file(home) or {}).get("children")
    apis = {name: pid for name, pid in children.items() if name.startswith("api")} if isinstance(children, dict) else {}
    if not apis or not _supervisor_alive(settings):
        fail(f"no fleet is running from {home}: start one with `fedgate up`, or send SIGHUP to your API process "
             "(kill -HUP <pid>)")
    all_applied = True
    for name, pid in apis.items():
        log_file = home / "logs" / f"{name}.log"
        seen = log_file.stat().st_size if log_file.exists() else 0
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            fail(f"the fleet's {name} process {pid} is gone: restart the fleet (`fedgate down`, `fedgate up`)")
        verdict = _logged_after(log_file, seen, (RELOAD_APPLIED, RELOAD_REFUSED), timeout)
        applied = verdict is not None and verdict.startswith(RELOAD_APPLIED)
        all_applied = all_applied and applied
        typer.echo(f"fedgate: {name} (pid {pid}): {verdict or f'no answer within {timeout:g}s, see {log_file}'}",
                   err=not applied)
    if not all_applied:
        raise typer.Exit(1)


def _logged_after(log_file: Path, offset: int, markers: tuple[str, ...], timeout: float) -> str | None:
    """The first message logged after byte `offset` that contains a marker, from the marker on; None if none came
    within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_file.exists():
            with log_file.open("rb") as log:
                log.seek(offset)
                for message in map(_log_message, log.read().decode(errors="replace").splitlines()):
                    found = [message.index(m) for m in markers if m in message]
                    if found:
                        return message[min(found):]
        time.sleep(0.2)
    return None


def _log_message(line: str) -> str:
    """A JSON log line's "message"; a text line as it is."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(line).get("message", ""))
    return line


@cli.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from gateway_api.app import create_app
    from gateway_core.fleet.logs import configure_logging
    from gateway_core.fleet.redis_clients import check_reachable
    from gateway_core.fleet.tracing import configure_tracing

    settings = get_settings()
    _refuse_missing_exporter(settings)
    check_reachable(settings)  # the API cannot start without it: say so in one line, not a startup traceback
    configure_logging("api", settings)
    configure_tracing("api", settings)
    # log_config=None: uvicorn's own lines go through the handler configure_logging installed.
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning",
                access_log=False, log_config=None)


@cli.command()
def worker(
    partners: Annotated[str, typer.Option(help="Comma-separated partner names whose queues to consume")],
    concurrency: Annotated[int | None, typer.Option(help="Calls in flight in this process")] = None,
    lanes: Annotated[str, typer.Option(help="Lanes to consume: interactive, batch or both (batch only when no "
                                            "interactive job waits)")] = "interactive,batch",
    nice: Annotated[int, typer.Option(help="Lower this worker's CPU priority by this much (e.g. 19 for a "
                                           "batch-lane worker sharing a host with interactive ones)", min=0,
                                      max=19)] = 0,
    idle_cpu: Annotated[bool, typer.Option(help="Run only on CPU time no other process wants (Linux SCHED_IDLE): "
                                                "for batch-lane workers beside interactive ones")] = False,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run a Celery worker consuming the named partners' queues (webhook deliveries are `fedgate webhook-worker`'s)."""
    from gateway_core.fleet import keys
    from gateway_core.settings import reset_settings_cache
    from workers.celery_app import get_app

    if concurrency:  # the HTTP pool and the call slots are sized from settings too, not only Celery's pool
        os.environ["FEDGATE_WORKER_CONCURRENCY"] = str(concurrency)
        reset_settings_cache()
    names = [p.strip() for p in partners.split(",") if p.strip()]
    chosen = [lane.strip() for lane in lanes.split(",") if lane.strip()]
    unknown = sorted(set(chosen) - set(keys.LANES))
    if unknown or not chosen:
        fail(f"--lanes: {', '.join(unknown) or 'nothing given'} is not a lane; use interactive, batch or both", code=2)
    _refuse_unsafe_config()
    if nice:
        os.nice(nice)
    if idle_cpu:
        _use_idle_cpu_only()
    queues = ",".join(keys.partner_queue(p, lane) for lane in keys.LANES if lane in chosen for p in names)
    suffix = "" if set(chosen) == set(keys.LANES) else f"-{chosen[0]}"
    argv = ["worker", "-Q", queues, "-n", f"{'+'.join(names)}{suffix}@%h", "--loglevel", loglevel, "-E",
            "--without-mingle", "--without-gossip"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    get_app().worker_main(argv)  # built now, after the settings above


@cli.command("webhook-worker")
def webhook_worker(
    concurrency: Annotated[int | None, typer.Option(help="Deliveries in flight in this process (default: "
                                                         "FEDGATE_WEBHOOK_WORKER_CONCURRENCY)", min=1)] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run a Celery worker delivering webhooks: queue `webhooks` and the webhook delay queue, nothing else.

    Each attempt has a total deadline (FEDGATE_WEBHOOK_TIMEOUT_S) and a tenant has at most
    FEDGATE_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT deliveries in flight across the fleet; the rest wait in Redis."""
    from gateway_core.settings import reset_settings_cache
    from gateway_core.webhooks import WEBHOOK_QUEUE
    from gateway_core.webhooks.delivery import lease_ms
    from workers.celery_app import get_app

    settings = get_settings()
    slots = concurrency or settings.webhook_worker_concurrency
    os.environ["FEDGATE_WORKER_CONCURRENCY"] = str(slots)  # sizes the HTTP pool like Celery's pool
    reset_settings_cache()
    settings = get_settings()
    if lease_ms(settings.webhook_timeout_s) >= settings.visibility_timeout_s * 1000:
        fail(f"FEDGATE_WEBHOOK_TIMEOUT_S ({settings.webhook_timeout_s:g} s, plus a few seconds to sign and record) "
             f"must stay below FEDGATE_VISIBILITY_TIMEOUT_S ({settings.visibility_timeout_s} s), or a slow delivery "
             "would be handed to a second worker while the first still makes it", code=2)
    argv = ["worker", "-Q", WEBHOOK_QUEUE, "-n", "webhooks@%h", "--loglevel", loglevel, "-E",
            "--without-mingle", "--without-gossip", "-c", str(slots)]
    get_app().worker_main(argv)  # built now, after the settings above


def _use_idle_cpu_only() -> None:
    """SCHED_IDLE: a waking interactive process takes the CPU at once; threads started later inherit it."""
    if not hasattr(os, "SCHED_IDLE"):
        print("fedgate: --idle-cpu needs Linux's SCHED_IDLE; running at normal priority", file=sys.stderr)
        return
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _refuse_missing_exporter(settings: Any) -> None:
    """Traces asked for without the `otel` extra installed: say so before starting, not as a trace-less process."""
    from gateway_core.fleet.tracing import missing_exporter_packages

    problem = missing_exporter_packages(settings)
    if problem:
        fail(problem, code=2)


def _refuse_unsafe_config() -> None:
    """A worker must not start if it cannot detect what a partner's policy requires (any job may fall back to any
    partner), if a partner's calls can outlast the broker's visibility timeout, or if the traces it is configured to
    export cannot be (the `otel` extra is missing)."""
    from gateway_core.config import load_config
    from gateway_core.jobs.redelivery import visibility_timeout_problem
    from gateway_core.redaction import PolicyNotSupportedError, check_policy_supported

    settings = get_settings()
    _refuse_missing_exporter(settings)
    config = load_config(settings.config, home=settings.home_dir())
    for name, partner in config.partners.items():
        try:
            check_policy_supported(partner.policy)
        except PolicyNotSupportedError as exc:
            fail(f"partner {name!r}: {exc}", code=2)
    problem = visibility_timeout_problem(settings, config)
    if problem:
        fail(problem, code=2)


@cli.command()
def redact(
    partner: Annotated[str, typer.Option(help="Partner whose data policy to apply")],
    jsonl: Annotated[bool, typer.Option(help='Read one {"text": ...} object per line; write one result per line')]
    = False,
) -> None:
    """Redact text from stdin with a partner's policy; print {"text", "entities": [{type, start, end, placeholder}]}."""
    from gateway_core.config import load_config
    from gateway_core.crypto import load_cipher
    from gateway_core.redaction import PlaceholderMap, RedactionError, Redactor

    settings = get_settings()
    config = load_config(settings.config, home=settings.home_dir())
    if partner not in config.partners:
        fail(f"unknown partner {partner!r}: use one of {', '.join(sorted(config.partners))}")
    redactor = Redactor(config.partners[partner].policy)
    salt = load_cipher(settings).derive("redaction-salt:cli")
    try:
        if not jsonl:
            typer.echo(json.dumps(redactor.redact(sys.stdin.read(), PlaceholderMap(), salt=salt).to_dict()))
            return
        for number, line in enumerate(sys.stdin, start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
                if not isinstance(text, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                fail(f'line {number}: expected a JSON object like {{"text": "..."}}')
            typer.echo(json.dumps(redactor.redact(text, PlaceholderMap(), salt=salt).to_dict()))
    except RedactionError as exc:
        fail(str(exc))


@cli.command()
def flower() -> None:
    """Run Flower against the fleet's broker, behind basic auth: FEDGATE_FLOWER_BASIC_AUTH, else the logins in
    FEDGATE_FLOWER_AUTH_FILE, else a login generated into $FEDGATE_HOME/flower-auth (user operator, mode 0600)."""
    from gateway_core.fleet.credentials import flower_auth_file, flower_basic_auth

    settings = get_settings()
    flower_basic_auth(settings, create=True)  # a bad or missing login file stops here, in one line
    if not settings.flower_basic_auth:
        typer.echo(f"fedgate: Flower's login is in {flower_auth_file(settings)}", err=True)
    # workers.flower_app: the workers' app on kombu's stock transport, so Flower's Broker page can list the
    # partner queues. Task args are {job_id, partner, attempt} only, so the task list may show them. The Flower
    # process reads its login itself (workers.flower_app): a password never goes on a command line.
    args = [sys.executable, "-m", "celery", "-A", "workers.flower_app", "flower",
            f"--port={settings.flower_port}", f"--address={settings.flower_host}",
            "--tasks-columns=name,uuid,state,args,kwargs,received,runtime,retries,worker"]
    os.execv(sys.executable, args)


@cli.command()
def simulate(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Run the partner simulator (OpenAI and Anthropic wire formats)."""
    from gateway_core.fleet.logs import configure_logging
    from partner_simulator import SimulatorConfig
    from partner_simulator.app import serve

    settings = get_settings()
    configure_logging("simulator", settings)
    serve(host or settings.simulator_host, port or settings.simulator_port, SimulatorConfig.from_env())


from gateway_api.cli_batch import batch_app  # noqa: E402
from gateway_api.cli_contracts import contracts_app  # noqa: E402
from gateway_api.cli_dlq import dlq_app  # noqa: E402
from gateway_api.cli_status import status  # noqa: E402
from gateway_api.cli_usage import usage  # noqa: E402

cli.command()(status)
cli.command()(usage)

cli.add_typer(dlq_app, name="dlq", help="Inspect, replay and purge dead letters (admin API key).")
cli.add_typer(batch_app, name="batch", help="Submit, watch, cancel and download batches (OpenAI Batch API shape).")
cli.add_typer(contracts_app, name="contracts", help="Add, list and show output contracts (admin API key).")


def main() -> None:
    try:
        cli()
    except Exception as exc:
        from gateway_core.errors import FedgateError  # already loaded if one was raised

        if not isinstance(exc, FedgateError):
            raise
        typer.echo(f"fedgate: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
