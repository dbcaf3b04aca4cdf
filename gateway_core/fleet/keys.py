"""Every Redis key fedgate writes, in one place."""

PREFIX = "fg"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


INTERACTIVE = "interactive"
BATCH = "batch"
LANES = (INTERACTIVE, BATCH)


def partner_queue(partner: str, lane: str = INTERACTIVE) -> str:
    """The Celery queue (a Redis list of the same name) that a partner's workers consume, per lane: batch jobs
    wait in `partner.<name>.batch`, which workers read only when the interactive queue is empty."""
    return f"partner.{partner}" if lane == INTERACTIVE else f"partner.{partner}.{lane}"


def lane_of_queue(queue: str) -> str | None:
    """'interactive' or 'batch' for a partner queue name, None for any other queue."""
    if not queue.startswith("partner."):
        return None
    return BATCH if queue.endswith(f".{BATCH}") else INTERACTIVE


def done_channel(lane: str = INTERACTIVE) -> str:
    """Where a finished job is announced. Batch jobs get their own channel so that processes waiting for
    interactive jobs (the API's long-polls) do not read every batch completion; batch progress is counters."""
    return DONE_CHANNEL if lane == INTERACTIVE else f"{DONE_CHANNEL}:{lane}"


def delayed(lane: str = INTERACTIVE) -> str:
    """The delay queue of a lane (retries, budget waits, fallbacks, new batch jobs), moved by that lane's workers."""
    return DELAYED if lane == INTERACTIVE else f"{DELAYED}:{lane}"


def delayed_wake(lane: str = INTERACTIVE) -> str:
    return DELAYED_WAKE if lane == INTERACTIVE else f"{DELAYED_WAKE}:{lane}"


DELAYED = f"{PREFIX}:delayed"
DEAD_LETTERS = f"{PREFIX}:dlq"
DONE_CHANNEL = f"{PREFIX}:events:done"
RETENTION = f"{PREFIX}:retention"  # job ids whose payload is deleted when their score (ms) is due
DELAYED_WAKE = f"{PREFIX}:delayed:wake"
UNFINISHED = f"{PREFIX}:unfinished"  # ids of jobs not yet finished (score: ms when last looked at), for the sweeper
SWEEPER_LOCK = f"{PREFIX}:sweeper:lock"  # the process sweeping now (gateway_core.jobs.sweeper)


def run_owner_alive(owner: str) -> str:
    """Present while the worker process `owner` runs (a heartbeat with a short TTL; gateway_core.jobs.run_owners)."""
    return f"{PREFIX}:alive:{owner}"


def job_stream(job_id: str) -> str:
    """A job's answer as it is generated (a Redis stream; gateway_core.jobs.job_stream), for the API process that
    holds the client's request and for followers of GET /v1/jobs/{id}/stream."""
    return f"{PREFIX}:jobstream:{job_id}"


def bucket(partner: str, kind: str) -> str:
    return f"{PREFIX}:bucket:{partner}:{kind}"


def breaker(partner: str) -> str:
    return f"{PREFIX}:breaker:{partner}"


def idempotency(tenant: str, key_digest: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{key_digest}"


def usage(tenant: str, period: str) -> str:
    """A tenant's metered usage for one UTC day ("YYYY-MM-DD") or month ("YYYY-MM"): field "partner:counter"."""
    return f"{PREFIX}:usage:{tenant}:{period}"
