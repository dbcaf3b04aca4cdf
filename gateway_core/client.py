"""A small Python client for apps: submit jobs, wait for them, iterate results, verify webhooks.

    from gateway_core.client import FedgateClient
    with FedgateClient("http://127.0.0.1:8700", api_key) as fg:
        job = fg.wait(fg.submit("sim-openai", "Hello"))
        print(job.output)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx

from gateway_core.errors import FedgateError
from gateway_core.jobs.models import JobView
from gateway_core.webhooks import WebhookEvent, verify


class FedgateClientError(FedgateError):
    def __init__(self, status_code: int, message: str, code: str | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.code = code


class FedgateClient:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers={"authorization": f"Bearer {api_key}"},
                                  timeout=timeout_s, transport=transport)

    def __enter__(self) -> FedgateClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        partner: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        contract: str | None = None,
        webhook_url: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_tokens: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Submit one job; returns its id."""
        body: dict[str, Any] = {"partner": partner, "prompt": prompt, "messages": messages, "contract": contract,
                                "webhook_url": webhook_url, "metadata": dict(metadata or {}), "max_tokens": max_tokens}
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        data = self._call("POST", "/v1/jobs", json={k: v for k, v in body.items() if v is not None}, headers=headers)
        return str(data["id"])

    def job(self, job_id: str, *, wait_s: float = 0) -> JobView:
        data = self._call("GET", f"/v1/jobs/{job_id}", params={"wait": wait_s} if wait_s else None,
                          timeout=wait_s + 30)
        return JobView.model_validate(data)

    def wait(self, job_id: str, timeout_s: float = 300) -> JobView:
        """Long-poll until the job finishes; raises TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            job = self.job(job_id, wait_s=max(0.0, min(30.0, remaining)))
            if job.status.terminal:
                return job
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout_s:g}s")

    def results(self, job_ids: Iterable[str], timeout_s: float = 600) -> Iterator[JobView]:
        """Yield each job once it has finished, in the order they finish (roughly)."""
        pending = list(job_ids)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} jobs still unfinished after {timeout_s:g}s")
            head = self.job(pending[0], wait_s=5)
            still: list[str] = []
            for job_id in pending:
                job = head if job_id == head.id else self.job(job_id)
                if job.status.terminal:
                    yield job
                else:
                    still.append(job_id)
            pending = still

    def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    @staticmethod
    def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Check a delivery's Standard Webhooks signature and timestamp; returns the event."""
        verify(secret, headers, body)
        return WebhookEvent.model_validate_json(body)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise FedgateClientError(response.status_code, error.get("message", response.text), error.get("code"))
        return data  # type: ignore[no-any-return]
