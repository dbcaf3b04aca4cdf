"""What fedgate assumes about its dependencies, checked against the installed versions.

workers/broker.py, workers/aiopool.py, workers/consumer_steps.py and workers/enqueue.py override or call private
parts of kombu and Celery (and gateway_core/fleet/redis_clients.py and gateway_core/__init__.py of redis-py). Nothing in
those libraries promises them, so pyproject.toml pins celery and kombu to the tested minor, and this file fails when
an upgrade renames or removes one: in CI, not as `503 broker_unavailable` in production.

The rest: every third-party module the shipped packages import is declared in pyproject.toml, module-level imports
only from the base dependencies (an extra's module is imported where it is used), never a test-only dependency.
That the otel extra is optional is checked in fresh interpreters, in tests/integration/test_dependency_contract.py.
"""

from __future__ import annotations

import ast
import glob
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celery
import kombu
import kombu.messaging
import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
import redis.utils
import vine.funtools
from celery import bootsteps
from celery.concurrency import base as celery_pool_base
from celery.events.dispatcher import EventDispatcher
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.events import Events
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import encoding as kombu_encoding
from kombu.utils import json as kombu_json

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SHIPPED = ("gateway_core", "workers", "gateway_api", "partner_simulator")
NOT_SHIPPED = ("tests", "scripts", "devtools")
# Extras shipped code may import where it uses them; `bench` and `test` serve tooling only.
RUNTIME_EXTRAS = ("otel", "ner")


def _parameters(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _source(obj: Any) -> str:
    return inspect.getsource(obj)


# --- pins -------------------------------------------------------------------------------------------------------


def _declared(extra: str | None = None) -> list[str]:
    if extra is None:
        return list(PYPROJECT["project"]["dependencies"])
    return list(PYPROJECT["project"]["optional-dependencies"][extra])


def _requirement_name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found, requirement
    return _normalise(found.group(0))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(("requirement", "module"), [("celery[redis]", celery), ("kombu", kombu)])
def test_celery_and_kombu_are_pinned_to_the_tested_minor(requirement: str, module: Any) -> None:
    pins = [r for r in _declared() if r.startswith(requirement + "~=") or r.startswith(requirement + " ~=")]
    assert len(pins) == 1, f"pyproject.toml must pin {requirement} with ~=X.Y.0 (the minor the suite passed with)"
    pinned = pins[0].partition("~=")[2].strip()
    major, minor, *_ = pinned.split(".")
    installed_major, installed_minor, *_ = module.__version__.split(".")
    assert (major, minor) == (installed_major, installed_minor), (
        f"{requirement} is pinned to {pinned} but {module.__version__} is installed: re-run the suite on the new minor "
        "and move the pin (and constraints.txt) together")


def test_the_constraints_file_names_the_installed_celery_and_kombu() -> None:
    pinned = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    normalised = {_normalise(name): version.strip() for name, version in pinned.items()}
    assert "fedgate" not in normalised, "constraints.txt must not pin the project itself"
    for name, module in (("celery", celery), ("kombu", kombu)):
        assert normalised.get(name) == module.__version__, (
            f"constraints.txt pins {name} {normalised.get(name)}, the suite runs {module.__version__}: "
            "regenerate it with scripts/lock")


def _lock_script() -> Any:
    spec = importlib.util.spec_from_file_location("fedgate_lock", ROOT / "scripts" / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_constraints_file_pins_everything_the_tests_install() -> None:
    """What `scripts/test` installs (fedgate[test]) is pinned; scripts/lock.py pins the other extras too."""
    lock = _lock_script()
    needed = set(lock.closure(lock.declared_requirements(["test"])))
    pinned = {_normalise(line.split("==", 1)[0]) for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert not needed - pinned, f"not in constraints.txt: {sorted(needed - pinned)}; regenerate it with scripts/lock.py"


def test_every_installer_installs_at_the_tested_versions() -> None:
    assert '-c "$ROOT/constraints.txt"' in (ROOT / "scripts" / "_venv.sh").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install .* -c constraints\.txt", dockerfile, re.MULTILINE)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    installs = [line for line in ci if re.search(r"\b(pip|apt-get|apt)\b", line)]
    assert any("scripts/test" in line for line in ci) and not installs, (
        ".ci/run must do nothing but run scripts/test, which installs what the tests need")


# --- kombu's Redis transport (workers/broker.py) ----------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "_create_client", "create_publish_batch", "_get_pool", "_brpop_start", "_brpop_read", "_flush_brpop_reauth",
    "_q_for_pri", "conn_or_acquire", "basic_publish", "QoS", "priority_steps", "global_keyprefix", "_brpop_sent_at",
    "_in_poll",
])
def test_kombu_redis_channel_still_has(name: str) -> None:
    assert hasattr(kombu_redis.Channel, name), f"kombu.transport.redis.Channel.{name} is gone"


def test_kombu_redis_channel_signatures_we_override() -> None:
    assert _parameters(kombu_redis.Channel._create_client) == ["self", "asynchronous"]
    assert _parameters(kombu_redis.Channel._get_pool) == ["self", "asynchronous"]
    assert _parameters(kombu_redis.Channel.create_publish_batch) == ["self", "max_size"]
    assert _parameters(kombu_redis.Channel._brpop_start) == ["self", "timeout"]
    assert _parameters(kombu_redis.Channel._brpop_read) == ["self", "options"]
    assert kombu_redis.Channel._brpop_sent_at is None  # a class default our _brpop_start replaces per call


def test_kombu_redis_channel_internals_our_brpop_relies_on() -> None:
    """Instance state set in kombu's own methods: our _brpop_start/_brpop_read read and write the same names."""
    channel = _source(kombu_redis.Channel)
    for used in ("self._queue_cycle", "self._in_poll", "self._brpop_sent_at", "self.active_queues",
                 "self.client.connection", "self.connection._deliver", "self._flush_brpop_reauth()",
                 "self.brpop_timeout =", "self.connection_errors =", "self.client._prefix_args("):
        assert used in channel, f"kombu.transport.redis.Channel no longer uses {used}"
    assert hasattr(kombu_redis.PrefixedStrictRedis, "_prefix_args")
    assert "_publish_batch" in _source(kombu_redis.Channel._put) + _source(kombu_redis.Channel._put_fanout)
    assert "kwargs" in _parameters(kombu_redis.Channel.basic_publish), "_RecordedPublishes passes _publish_batch"
    assert _parameters(virtual.Transport._deliver)[:3] == ["self", "message", "queue"]


def test_our_recorded_publishes_offer_everything_kombus_publish_batch_does() -> None:
    from workers.broker import _RecordedPublishes

    public = {name for name, value in vars(kombu_redis.PublishBatch).items()
              if callable(value) and not name.startswith("_")}
    missing = public - set(dir(_RecordedPublishes))
    assert not missing, f"kombu's PublishBatch grew {sorted(missing)}: workers.broker._RecordedPublishes needs them"
    assert "create_publish_batch" in _source(kombu.messaging), "kombu's Producer no longer asks its channel for a batch"
    assert _parameters(kombu.Producer.batch) == ["self", "max_size"]


@pytest.mark.parametrize("name", [
    "append", "ack", "restore_unacked_once", "unacked_index_key", "unacked_key", "can_consume_max_estimate",
])
def test_kombu_redis_qos_still_has(name: str) -> None:
    assert hasattr(kombu_redis.QoS, name), f"kombu.transport.redis.QoS.{name} is gone"


def test_kombu_qos_records_unacked_messages_as_our_lua_does() -> None:
    """workers.broker's _TAKE_MORE writes the unacked record itself, in the format QoS.append writes."""
    append = _source(kombu_redis.QoS.append)
    for part in ("message._raw", "'exchange'", "'routing_key'", "unacked_index_key", "unacked_key"):
        assert part in append, f"kombu's QoS.append no longer writes {part}: re-check workers.broker._TAKE_MORE"
    assert _parameters(kombu_redis.QoS.append) == ["self", "message", "delivery_tag"]
    assert _parameters(kombu_redis.QoS.restore_unacked_once)[:2] == ["self", "stderr"]
    assert hasattr(virtual.QoS, "append") and hasattr(virtual.QoS, "ack")


def test_kombu_redis_transports_we_subclass() -> None:
    assert _parameters(kombu_redis.Transport.register_with_event_loop) == ["self", "connection", "loop"]
    assert issubclass(kombu_redis.SentinelChannel, kombu_redis.Channel)
    assert issubclass(kombu_redis.SentinelTransport, kombu_redis.Transport)
    assert kombu_redis.SentinelTransport.default_port
    assert issubclass(kombu_redis.Empty, Exception)
    assert callable(kombu_encoding.bytes_to_str) and callable(kombu_json.loads)


# --- Celery's pool and consumer (workers/aiopool.py, workers/consumer_steps.py, workers/bridge.py) -------------


@pytest.mark.parametrize("name", [
    "on_start", "on_apply", "on_stop", "on_terminate", "_get_info", "limit", "signal_safe", "body_can_be_buffer",
])
def test_celery_base_pool_still_has(name: str) -> None:
    assert hasattr(celery_pool_base.BasePool, name) or name in _source(celery_pool_base.BasePool.__init__), (
        f"celery.concurrency.base.BasePool.{name} is gone")


def test_celery_apply_target_takes_what_the_pool_passes() -> None:
    assert _parameters(celery_pool_base.apply_target)[:6] == [
        "target", "args", "kwargs", "callback", "accept_callback", "pid"]


def test_celery_consumer_still_has_what_ours_overrides() -> None:
    assert _parameters(CeleryConsumer.call_soon_ack) == ["self", "p", "args", "kwargs"]
    assert isinstance(inspect.getattr_static(CeleryConsumer, "max_prefetch_count"), property)
    assert callable(CeleryConsumer._flush_events)
    init = _source(CeleryConsumer.__init__)
    for attribute in ("self.initial_prefetch_count", "self.hub", "self.pool"):
        assert attribute in init, f"celery's Consumer no longer sets {attribute}"
    assert "c.event_dispatcher =" in _source(Events.__init__), "celery's Events step no longer sets its dispatcher"
    assert "call_soon_ack" in _source(CeleryConsumer), "celery's Consumer no longer routes acks via call_soon_ack"


def test_celery_event_dispatcher_buffer_knobs() -> None:
    assert {"buffer_limit", "on_send_buffered"} <= set(_parameters(EventDispatcher.__init__))
    for attribute in ("self.buffer_limit", "self.on_send_buffered"):
        assert attribute in _source(EventDispatcher.__init__)


def test_celery_bootsteps_and_vine() -> None:
    assert issubclass(Events, bootsteps.StartStopStep)
    assert {"start", "stop"} <= set(dir(bootsteps.StartStopStep))
    assert callable(vine.funtools.ppartial)
    app = celery.Celery("fedgate-contract", set_as_current=False)
    assert isinstance(app.steps["consumer"], set), "celery_app adds BatchedBrokerWrites to app.steps['consumer']"
    assert hasattr(app, "producer_or_acquire")
    assert {"task_id", "producer"} <= set(_parameters(app.send_task))
    assert {"argsrepr", "kwargsrepr"} <= set(_parameters(app.amqp.as_task_v2)), "workers.enqueue sets both"


# --- redis-py (gateway_core/__init__.py, gateway_core/fleet/redis_clients.py) -----------------------------------------


def test_redis_internals_we_patch_or_override() -> None:
    assert callable(redis.utils.get_lib_version)
    assert _parameters(redis.sentinel.SentinelManagedConnection._connect_retry) == ["self"]
    assert inspect.iscoroutinefunction(redis.asyncio.sentinel.SentinelManagedConnection._connect_retry)
    assert hasattr(redis.sentinel.SentinelConnectionPool, "service_name") or \
        "self.service_name" in _source(redis.sentinel.SentinelConnectionPool.__init__)


# --- what the shipped code imports is declared --------------------------------------------------------------------


def _files(packages: tuple[str, ...]) -> Iterator[Path]:
    for package in packages:
        if (ROOT / package).is_dir():
            yield from sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(module, at module level) for each absolute import; `if TYPE_CHECKING:` blocks are not imports."""

    def visit(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (found for branch in child.orelse for found in visit(branch, top))
                continue
            if isinstance(child, ast.Import):
                yield from ((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                # `from a import b`: b may be a module (a namespace package's part), so a.b is what is imported
                yield from ((f"{child.module}.{alias.name}", top) for alias in child.names)
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from visit(child, top and not nested)

    yield from visit(tree, True)


@cache
def _distribution_of_files() -> dict[str, str]:
    owners: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = _normalise(distribution.metadata["Name"])
        for file in distribution.files or ():
            if file.suffix in (".py", ".so", ".pyd"):
                owners[os.path.normpath(str(distribution.locate_file(file)))] = name
    return owners


def _distribution_of(module: str) -> str | None:
    """The installed distribution whose files hold `module`, found on sys.path without importing anything (the
    deepest part that is a file: a namespace package such as opentelemetry spans several distributions)."""
    parts = module.split(".")
    owners = _distribution_of_files()
    for depth in range(len(parts), 0, -1):
        for entry in sys.path:
            base = os.path.join(entry or ".", *parts[:depth])
            for candidate in (base + ".py", os.path.join(base, "__init__.py"), *glob.glob(base + ".*.so")):
                owner = owners.get(os.path.normpath(candidate))
                if owner:
                    return owner
    return None


def _local(root: str) -> bool:
    """The project's own code: its packages, and modules the tests and scripts import by path."""
    return root in SHIPPED or any((ROOT / where / root).exists() or (ROOT / where / f"{root}.py").exists()
                                  for where in (".", "scripts", "tests"))


def _third_party_imports(packages: tuple[str, ...] = SHIPPED) -> dict[tuple[str, bool], list[str]]:
    found: dict[tuple[str, bool], list[str]] = {}
    for path in _files(packages):
        for module, top in _imports(ast.parse(path.read_text(), str(path))):
            root = module.split(".")[0]
            if root in sys.stdlib_module_names or root == "__future__" or (root not in NOT_SHIPPED and _local(root)):
                continue
            found.setdefault((module, top), []).append(str(path.relative_to(ROOT)))
    return found


def _required(names: list[str]) -> set[str]:
    return {_requirement_name(r) for r in names if not r.startswith("fedgate")}


def test_shipped_code_imports_only_declared_dependencies() -> None:
    base = _required(_declared())
    runtime_extras = set().union(*(_required(_declared(extra)) for extra in RUNTIME_EXTRAS))
    problems = []
    for (module, top), files in sorted(_third_party_imports().items()):
        where = ", ".join(sorted(set(files)))
        root = module.split(".")[0]
        if root in NOT_SHIPPED:
            problems.append(f"{module} (not shipped) imported by {where}")
            continue
        distribution = _distribution_of(module)
        if distribution is None:
            problems.append(f"{module}: no installed distribution provides it ({where})")
        elif top and distribution not in base:
            extra = "an extra" if distribution in runtime_extras else "nothing (or only tooling)"
            problems.append(f"{module} ({distribution}) is imported at module level by {where} but declared by "
                            f"{extra}: declare it, or import it where it is used")
        elif distribution not in base | runtime_extras:
            problems.append(f"{module} ({distribution}) is imported by {where}, declared by no runtime dependency "
                            "or extra (otel, ner)")
    assert not problems, "\n".join(problems)


def test_the_base_dependencies_are_all_used() -> None:
    """`packaging` was declared and never imported: a declared dependency must be imported by shipped code, or be
    there for a reason this test knows (a server or transport fedgate runs through another package)."""
    used_by_others = {
        "hiredis",  # redis-py's parser, found at run time
        "backports-zstd",  # aiohttp's zstd decoder (the adapters' transport) before Python 3.14
        "flower",  # `fedgate flower` runs `python -m celery ... flower`
        "python-multipart",  # FastAPI's form parsing (batch file uploads)
        "uvloop",  # imported by workers.bridge inside a function; also uvicorn's loop
    }
    imported = {_distribution_of(module) for module, _ in _third_party_imports()}
    unused = _required(_declared()) - imported - used_by_others
    assert not unused, f"declared in pyproject.toml but imported nowhere in {', '.join(SHIPPED)}: {sorted(unused)}"


def test_tests_and_tooling_import_only_declared_dependencies() -> None:
    """tests/, scripts/ and devtools/ may use any extra (`scripts/test` installs `test`, `scripts/bench` `test,bench`),
    but what they import must be declared somewhere, or a fresh machine cannot run them."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = _required(_declared()).union(*(_required(lines) for lines in extras.values()))
    problems = []
    for (module, _), files in sorted(_third_party_imports(NOT_SHIPPED).items()):
        if module.split(".")[0] in NOT_SHIPPED:
            continue
        distribution = _distribution_of(module)
        if distribution is None or distribution not in declared:
            problems.append(f"{module} ({distribution or 'not installed'}) imported by {', '.join(sorted(set(files)))}")
    assert not problems, "declared by no dependency or extra in pyproject.toml:\n" + "\n".join(problems)
