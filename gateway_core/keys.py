"""Every Redis key fedgate writes, in one place."""

PREFIX = "fg"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def partner_queue(partner: str) -> str:
    """The Celery queue (a Redis list of the same name) that a partner's workers consume."""
    return f"partner.{partner}"


DELAYED = f"{PREFIX}:delayed"
DEAD_LETTERS = f"{PREFIX}:dlq"
DONE_CHANNEL = f"{PREFIX}:events:done"
RETENTION = f"{PREFIX}:retention"  # job ids whose payload is deleted when their score (ms) is due
DELAYED_WAKE = f"{PREFIX}:delayed:wake"


def bucket(partner: str, kind: str) -> str:
    return f"{PREFIX}:bucket:{partner}:{kind}"


def breaker(partner: str) -> str:
    return f"{PREFIX}:breaker:{partner}"


def idempotency(tenant: str, key_digest: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{key_digest}"
