"""What importing the redaction package costs: the policy model only. Presidio, spaCy and phonenumbers load when a
Redactor is built, and shipped code never imports the corpus tooling (faker, devtools, presidio-evaluator)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("presidio_analyzer", "presidio_anonymizer", "spacy", "phonenumbers")
SHIPPED = ("gateway_core", "workers", "gateway_api")
TOOLING = ("faker", "devtools", "presidio_evaluator")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_importing_the_policy_and_the_package_loads_no_presidio_or_spacy() -> None:
    assert _loaded_after("import gateway_core.redaction.policy") == []
    assert _loaded_after("import gateway_core.config") == []
    assert _loaded_after("from gateway_core.redaction import PlaceholderMap, RedactionPolicy, Redactor") == []


def test_building_a_redactor_loads_the_detectors() -> None:
    loaded = _loaded_after(
        "from gateway_core.redaction import RedactionPolicy, Redactor\nRedactor(RedactionPolicy())"
    )
    assert {"presidio_analyzer", "phonenumbers"} <= set(loaded)


def test_shipped_packages_never_import_corpus_tooling() -> None:
    offenders = []
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in TOOLING]
    assert offenders == []
