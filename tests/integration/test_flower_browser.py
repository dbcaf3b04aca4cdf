"""Issue 7: Flower in a real browser (headless Chromium from Debian's `chromium` package).

Two workers, one per partner queue as in production, run jobs whose prompt carries a marker; one job is retried
and falls back. Chromium then loads Flower's pages with basic auth and the rendered DOM (after Flower's own
JavaScript has filled its tables) must list both workers online, the partner queues, and the recent
`fedgate.run_job` tasks with job id, partner and attempt as their arguments, and never the prompt text.
Without credentials Flower answers 401.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.helpers import FleetEnv, Proc, RedisDatabases, finish_job, http_ok, start_fleet, submit_job, wait_for

USER, PASSWORD = "operator", "test-flower-password"  # FEDGATE_FLOWER_BASIC_AUTH in tests/conftest.py
MARKER = "flower-browser-marker-7d1c"
PROMPT = f"Quarterly plan for project Bluebird ({MARKER}): summarise the risks in one line."
PARTNERS = ("sim-openai", "sim-anthropic")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
TASK_ID = re.compile(r"^(job_[0-9a-f]+)-(\d+)")  # Celery task id: <job id>-<attempt> (workers.enqueue)


def chromium_binary() -> str:
    """Chromium on this machine; a clear failure (never a skip) when it is missing."""
    override = os.environ.get("FEDGATE_TEST_CHROMIUM")
    found = override or next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if not found or not Path(found).exists():
        pytest.fail(
            "headless Chromium is needed to check Flower in a real browser and is not installed: run "
            "`apt-get install -y chromium` (Debian; scripts/test installs it), or point FEDGATE_TEST_CHROMIUM at a "
            "Chromium/Chrome binary", pytrace=False)
    return found


class Tables(HTMLParser):
    """The rendered DOM's tables by id: each a list of rows, each row its cells' text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[str | None] = []  # id of each open table (None: no id)
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table.append(dict(attrs).get("id"))
        elif tag == "tr" and self._table and self._table[-1]:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table_id = self._table[-1] if self._table else None
            if table_id and self._row:
                self.tables.setdefault(table_id, []).append(self._row)
            self._row = None
        elif tag == "table" and self._table:
            self._table.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@dataclass
class Page:
    dom: str

    def rows(self, table_id: str) -> list[list[str]]:
        parser = Tables()
        parser.feed(self.dom)
        return parser.tables.get(table_id, [])


@dataclass
class Browser:
    binary: str
    profile: Path
    base: str  # http://127.0.0.1:PORT

    def load(self, path: str, credentials: bool = True) -> Page:
        """The DOM after the page's scripts ran (Flower fills its tables from its JSON endpoints).

        Credentials go in the URL: Chromium sends them for the page and caches them for the page's own requests.
        """
        host = self.base.removeprefix("http://")
        url = f"http://{USER}:{PASSWORD}@{host}{path}" if credentials else f"{self.base}{path}"
        done = subprocess.run(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             f"--user-data-dir={self.profile}", "--virtual-time-budget=4000", "--dump-dom", url],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0, f"chromium failed on {path}: {done.stderr[-2000:]}"
        return Page(done.stdout)

    def wait_for_rows(self, path: str, table_id: str, ready: Callable[[list[list[str]]], bool],
                      what: str) -> list[list[str]]:
        """Reload `path` until `ready(rows)` holds (Flower learns of tasks from events, a moment later)."""
        def attempt() -> list[list[str]] | None:
            rows = self.load(path).rows(table_id)
            return rows if ready(rows) else None

        return wait_for(attempt, 20, interval=0.5, what=what)


@dataclass
class Seeded:
    flower: str
    workers: dict[str, str]  # partner -> Celery node name
    jobs: list[dict]  # finished jobs, as the API shows them
    retried: dict


def finish(api: httpx.Client, job_id: str) -> dict:
    return finish_job(api, job_id, timeout=60)


def submit(api: httpx.Client, partner: str) -> str:
    return submit_job(api, partner, PROMPT)


def flower_workers(url: str) -> dict[str, dict]:
    """Workers on Flower's dashboard (what it learned from worker events), by node name."""
    response = httpx.get(f"{url}/workers", params={"json": 1}, auth=(USER, PASSWORD), timeout=5)
    return {w["hostname"]: w for w in response.json()["data"]} if response.status_code == 200 else {}


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Browser:
    binary = chromium_binary()  # checked first: no fleet is started for a test that cannot run
    fleet: FleetEnv = request.getfixturevalue("fleet")
    return Browser(binary, tmp_path_factory.mktemp("chromium-profile"),
                   f"http://127.0.0.1:{fleet.env['FEDGATE_FLOWER_PORT']}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_databases: RedisDatabases) -> Iterator[FleetEnv]:
    """A simulator and an API of this module's own, on a Redis database of its own: sim-openai fails here and
    its breaker may open, which no other module sees."""
    own = start_fleet(tmp_path_factory.mktemp("flower-fleet"), redis_databases.url())
    yield own
    own.stop_all()


@pytest.fixture(scope="module")
def seeded(browser: Browser, fleet: FleetEnv) -> Iterator[Seeded]:
    procs: list[Proc] = [fleet.start_worker(partner, concurrency=20) for partner in PARTNERS]
    flower = fleet.spawn("flower", "flower")
    procs.append(flower)
    url = browser.base
    nodes = {partner: f"{partner}@{socket.gethostname()}" for partner in PARTNERS}
    api = httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-dev"},
                       timeout=60)
    sim = httpx.Client(base_url=fleet.env["FEDGATE_SIMULATOR_URL"], timeout=10)
    try:
        wait_for(lambda: http_ok(f"{url}/healthcheck"), 60, what="flower to answer")
        # Flower sees only events sent after it connected: wait until both workers' heartbeats reached it.
        wait_for(lambda: all(flower_workers(url).get(n, {}).get("status") for n in nodes.values()), 30,
                 interval=0.2, what="flower to see both workers online")
        sim.post("/_sim/reset")
        jobs = [finish(api, job_id) for job_id in [submit(api, "sim-openai"), submit(api, "sim-anthropic")]]
        sim.put("/_sim/partners/sim-openai", json={"error_rate": 1, "error_status": 503})
        retried = finish(api, submit(api, "sim-openai"))  # 503 twice, then the fallback partner answers
        assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], jobs
        assert retried["status"] == "succeeded" and retried["answered_by"] == "sim-anthropic", retried
        yield Seeded(url, nodes, [*jobs, retried], retried)
    finally:
        api.close()
        sim.close()
        for proc in reversed(procs):
            proc.stop()


def task_rows(rows: list[list[str]]) -> list[tuple[str, int, list[str]]]:
    """(job id, attempt, cells) for each fedgate.run_job row of the tasks table."""
    found = []
    for row in rows:
        if len(row) > 1 and row[0] == "fedgate.run_job" and (match := TASK_ID.match(row[1])):
            found.append((match[1], int(match[2]), row))
    return found


def test_flower_refuses_requests_without_credentials(seeded: Seeded, browser: Browser) -> None:
    for path in ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks"):
        assert httpx.get(seeded.flower + path, timeout=5).status_code == 401, path
        wrong = httpx.get(seeded.flower + path, auth=(USER, "not-the-password"), timeout=5)
        assert wrong.status_code == 401, path
    page = browser.load("/workers", credentials=False)  # Chromium renders nothing behind the 401 challenge
    assert not any(node in page.dom for node in seeded.workers.values())
    assert "Online workers" not in page.dom


def test_dashboard_lists_every_worker_online(seeded: Seeded, browser: Browser) -> None:
    def both_online(rows: list[list[str]]) -> bool:
        shown = {row[0]: row for row in rows}
        return all(shown.get(node, ["", ""])[1] == "Online" for node in seeded.workers.values())

    rows = browser.wait_for_rows("/workers", "workers-table", both_online, "the dashboard to list both workers")
    by_node = {row[0]: row for row in rows}
    # Columns: Worker, Status, Active, Processed, Failed, Succeeded, Load Average.
    assert int(by_node[seeded.workers["sim-openai"]][3]) >= 3  # its job and the retried job's two attempts
    assert int(by_node[seeded.workers["sim-anthropic"]][5]) >= 2  # its job and the fallback


def test_broker_page_lists_every_partner_queue(seeded: Seeded, browser: Browser) -> None:
    page = browser.load("/broker")
    queues = {row[0] for row in page.rows("queue-table")}
    assert {f"partner.{p}" for p in PARTNERS} <= queues, queues
    assert "redis://" in page.dom and PASSWORD not in page.dom


def test_tasks_page_shows_recent_jobs_by_id_partner_and_attempt(seeded: Seeded, browser: Browser) -> None:
    expected = {job["id"] for job in seeded.jobs}

    def all_listed(rows: list[list[str]]) -> bool:
        return expected <= {job_id for job_id, _, _ in task_rows(rows)}

    rows = task_rows(browser.wait_for_rows("/tasks", "tasks-table", all_listed, "the tasks page to list every job"))
    # Columns (`fedgate flower` sets them): name, uuid, state, args, kwargs, received, runtime, retries, worker.
    for job_id, attempt, row in rows:
        if job_id not in expected:
            continue
        _, _, state, args, kwargs = row[:5]
        assert args == "()"
        assert re.fullmatch(rf"\{{'job_id': '{job_id}', 'partner': 'sim-[a-z]+', 'attempt': {attempt}\}}",
                            kwargs), kwargs
        assert state == "SUCCESS" and row[-1] in seeded.workers.values(), row
    retried = [row[4] for job_id, _, row in rows if job_id == seeded.retried["id"]]
    assert f"{{'job_id': '{seeded.retried['id']}', 'partner': 'sim-openai', 'attempt': 2}}" in retried
    assert any("'partner': 'sim-anthropic'" in kwargs for kwargs in retried), retried


def test_no_page_shows_the_prompt(seeded: Seeded, browser: Browser) -> None:
    retried_task = f"/task/{seeded.retried['id']}-2"
    pages = {path: browser.load(path).dom for path in ("/workers", "/tasks", "/broker", retried_task)}
    assert f"'job_id': '{seeded.retried['id']}'" in pages[retried_task]  # the page rendered the task
    assert "'attempt': 2" in pages[retried_task]
    for path, dom in pages.items():
        assert MARKER not in dom and "Bluebird" not in dom, f"the prompt shows on Flower's {path}"
