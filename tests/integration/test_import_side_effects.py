"""Importing the workers builds no Celery app and reads no settings: the app is built on demand
(workers.celery_app.get_app, or make_celery for a producer), and the tasks attach to whichever app runs them.

A fresh interpreter, so nothing another test built counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PROBE = """
import importlib, json, pkgutil
import workers
names = sorted(m.name for m in pkgutil.walk_packages(workers.__path__, "workers."))
for name in names:
    importlib.import_module(name)
from celery import _state
import gateway_core.settings
import workers.celery_app
print(json.dumps({"modules": names, "apps": len(list(_state._apps)),
                  "settings_read": gateway_core.settings.get_settings.cache_info().currsize,
                  "app_built": workers.celery_app.get_app.cache_info().currsize}))
"""


def test_importing_every_workers_module_builds_no_app_and_reads_no_settings() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"workers.tasks", "workers.webhooks", "workers.celery_app", "workers.flower_app"} <= set(found["modules"])
    assert found["apps"] == 0 and found["app_built"] == 0, "a Celery app was built at import"
    assert found["settings_read"] == 0, "settings were read at import"


def test_the_celery_command_finds_the_apps_with_their_tasks(tmp_path: Path) -> None:
    """`celery -A workers.celery_app` (fedgate worker's app) and `-A workers.flower_app` (fedgate flower's)."""
    probe = (
        "import json\nfrom celery.app.utils import find_app\n"
        "app = find_app('workers.celery_app'); app.loader.import_default_modules()\n"
        "flower = find_app('workers.flower_app')\n"
        "print(json.dumps({'tasks': sorted(t for t in app.tasks if t.startswith('fedgate.')),"
        " 'same': find_app('workers.celery_app:app') is app, 'flower_transport': flower.conf.broker_transport}))\n"
    )
    env = {**os.environ, "FEDGATE_HOME": str(tmp_path), "FEDGATE_FLOWER_BASIC_AUTH": "probe:not-a-real-login"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"tasks": ["fedgate.deliver_webhook", "fedgate.run_job"], "same": True, "flower_transport": None}
