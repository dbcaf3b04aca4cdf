"""The layout's dependency rules (DESIGN.md, "Principles"), checked by import-linter against pyproject.toml's
[tool.importlinter] contracts: gateway_api -> workers -> gateway_core, the simulator apart, devtools unshipped.

Run in this process, since unit tests start no processes: import-linter's use case, the one the `lint-imports`
command runs (without the command's logging set-up, whose dictConfig would disable every logger already made);
`lint-imports` from the repository root gives the same answer.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter import configuration
from importlinter.application import use_cases

from tests.helpers import ROOT

EXPECTED_CONTRACTS = {"layers", "simulator-apart", "domain-without-simulator", "shipped-without-devtools"}


def run_lint_imports(root: Path, monkeypatch: pytest.MonkeyPatch, config: Path) -> int:
    """0 when every contract is kept, 1 otherwise, as `lint-imports` exits; the report goes to stdout."""
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))  # the packages are found from the root, as the command finds them
    configuration.configure()
    kept = use_cases.lint_imports(config_filename=str(config), cache_dir=None, no_logo=True)
    return 0 if kept else 1


def test_the_contracts_are_configured() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {contract["id"] for contract in config["contracts"]} == EXPECTED_CONTRACTS
    [layers] = [contract for contract in config["contracts"] if contract["id"] == "layers"]
    assert layers["layers"] == ["gateway_api", "workers", "gateway_core"]


def test_dependencies_run_one_way(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = run_lint_imports(ROOT, monkeypatch, ROOT / "pyproject.toml")
    report = capsys.readouterr().out
    assert exit_code == 0, f"an import breaks the layering:\n{report}"
    assert f"{len(EXPECTED_CONTRACTS)} kept, 0 broken" in report


def test_an_import_inside_a_function_breaks_the_contract_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the contracts catch: a lower layer importing a higher one lazily (as gateway_core.jobs.batches did)."""
    for package, body in {
        "fg_layer_top": "",
        "fg_layer_low": "def parse() -> object:\n    from fg_layer_top import thing\n    return thing\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(body)
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["fg_layer_top", "fg_layer_low"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "top over low"\ntype = "layers"\n'
                      'layers = ["fg_layer_top", "fg_layer_low"]\n')
    assert run_lint_imports(tmp_path, monkeypatch, config) == 1
    report = capsys.readouterr().out
    assert "BROKEN" in report and "fg_layer_low -> fg_layer_top" in report
