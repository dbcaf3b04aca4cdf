"""Operators manage output contracts through the running API and the CLI: add, list, show, and the refusals.

Contracts get fresh random names and their keys are deleted afterwards; nothing is flushed."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gateway_api.cli_contracts import contracts_app
from tests.helpers import FleetEnv

BASE = "/v1/admin/contracts"
INVOICE = {
    "type": "object",
    "properties": {"customer_id": {"type": "string"}, "total": {"type": ["number", "string"]}},
    "required": ["customer_id", "total"],
}


@pytest.fixture()
def names() -> list[str]:
    """The test's contract names (call `new()`): fresh random names, so the test sees only contracts of its own in
    the fleet's shared registry."""
    return []


def new(made: list[str]) -> str:
    name = f"it-{secrets.token_hex(5)}"
    made.append(name)
    return name


def test_add_list_show_and_versions(api: httpx.Client, names: list[str]) -> None:
    name = new(names)
    created = api.post(BASE, json={"name": name, "schema": INVOICE})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": name, "version": 1, "forced": False,
                              "compatibility": {"compatible": True, "problems": []}}
    wider = {**INVOICE, "properties": {**INVOICE["properties"], "currency": {"type": "string"}}}
    second = api.post(BASE, json={"name": name, "schema": wider})
    assert second.status_code == 201 and second.json()["version"] == 2

    listed = api.get(BASE)
    assert listed.status_code == 200
    mine = [c for c in listed.json()["data"] if c["name"] == name]
    assert len(mine) == 1 and mine[0]["latest_version"] == 2 and mine[0]["versions"] == 2

    latest = api.get(f"{BASE}/{name}").json()
    assert (latest["version"], latest["schema"], latest["forced"], latest["source"]) == (2, wider, False, "json_schema")
    assert api.get(f"{BASE}/{name}", params={"version": 1}).json()["schema"] == INVOICE
    versions = api.get(f"{BASE}/{name}/versions").json()["data"]
    assert [v["version"] for v in versions] == [1, 2]

    missing = api.get(f"{BASE}/{name}", params={"version": 9})
    assert missing.status_code == 404 and "has no version 9 (latest is 2)" in missing.json()["error"]["message"]
    unknown = api.get(f"{BASE}/{new(names)}")
    assert unknown.status_code == 404 and "no contract named" in unknown.json()["error"]["message"]


def test_a_bad_schema_gets_a_422_pointing_at_the_problem(api: httpx.Client, names: list[str]) -> None:
    name = new(names)
    bad = api.post(BASE, json={"name": name, "schema": {"type": "object", "properties": {"a": {"type": "strnig"}}}})
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert "properties.a.type" in error["message"] and "strnig" in error["message"]
    assert error["param"] == "schema.properties.a.type" and error["type"] == "invalid_request_error"

    dangling = api.post(BASE, json={"name": name, "schema": {"type": "array", "items": {"$ref": "#/$defs/Line"}}})
    assert dangling.status_code == 422 and "$.items.$ref" in dangling.json()["error"]["message"]
    not_object = api.post(BASE, json={"name": name, "schema": [1]})
    assert not_object.status_code == 422 and "schema" in not_object.json()["error"]["message"]
    bad_name = api.post(BASE, json={"name": "Has Spaces", "schema": INVOICE})
    assert bad_name.status_code == 422 and bad_name.json()["error"]["param"] == "name"
    assert "invalid contract name" in bad_name.json()["error"]["message"]
    assert api.get(f"{BASE}/Not%20A%20Name").status_code == 422
    assert api.get(f"{BASE}/{name}").status_code == 404  # nothing was stored


def test_an_incompatible_version_gets_a_409_listing_the_problems(api: httpx.Client, names: list[str]) -> None:
    name = new(names)
    assert api.post(BASE, json={"name": name, "schema": INVOICE}).status_code == 201
    breaking = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    refused = api.post(BASE, json={"name": name, "schema": breaking})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["problems"] == ["required field 'customer_id' removed",
                                "properties.total: type narrowed from ['number','string'] to 'number'"]
    assert "required field 'customer_id' removed" in body["error"]["message"]
    assert body["error"]["code"] == "incompatible_contract"
    assert api.get(f"{BASE}/{name}").json()["version"] == 1

    forced = api.post(BASE, json={"name": name, "schema": breaking, "force": True})
    assert forced.status_code == 201
    assert forced.json()["forced"] is True and forced.json()["compatibility"]["compatible"] is False
    shown = api.get(f"{BASE}/{name}").json()
    assert shown["version"] == 2 and shown["forced"] is True and len(shown["problems"]) == 2


def test_only_admin_tenants_manage_contracts(fleet: FleetEnv, names: list[str]) -> None:
    name = new(names)
    url = fleet.env["FEDGATE_API_URL"]
    other = {"authorization": "Bearer test-key-other"}
    for method, path, body in (("POST", BASE, {"name": name, "schema": INVOICE}), ("GET", BASE, None),
                               ("GET", f"{BASE}/{name}", None), ("GET", f"{BASE}/{name}/versions", None)):
        refused = httpx.request(method, url + path, json=body, headers=other, timeout=10)
        assert refused.status_code == 403, refused.text
        assert "is not an operator" in refused.json()["error"]["message"]
        assert refused.json()["error"]["code"] == "admin_required"
        assert httpx.request(method, url + path, json=body, timeout=10).status_code == 401
    assert httpx.get(url + f"{BASE}/{name}", headers={"authorization": "Bearer test-key-dev"}).status_code == 404


def test_cli_add_list_show(fleet: FleetEnv, names: list[str], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGATE_API_URL", fleet.env["FEDGATE_API_URL"])
    monkeypatch.setenv("FEDGATE_API_KEY", "test-key-dev")
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    name = new(names)
    schema_file = tmp_path / "invoice.json"
    schema_file.write_text(json.dumps(INVOICE))

    added = runner.invoke(contracts_app, ["add", name, str(schema_file)])
    assert added.exit_code == 0, added.output
    assert f"{name} version 1 added" in added.output

    schema_file.write_text(json.dumps({**INVOICE, "required": ["total"]}))
    refused = runner.invoke(contracts_app, ["add", name, str(schema_file)])
    assert refused.exit_code == 1
    assert "breaks callers of version 1" in refused.output
    assert "  - required field 'customer_id' removed" in refused.output
    forced = runner.invoke(contracts_app, ["add", name, str(schema_file), "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"{name} version 2 added" in forced.output and "forced over 1 compatibility problem" in forced.output

    listed = runner.invoke(contracts_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert any(c["name"] == name and c["latest_version"] == 2 for c in json.loads(listed.output)["data"])
    table = runner.invoke(contracts_app, ["list"])
    assert table.exit_code == 0 and name in table.output

    shown = runner.invoke(contracts_app, ["show", name, "--version", "1"])
    assert shown.exit_code == 0 and json.loads(shown.output)["schema"] == INVOICE
    pinned = runner.invoke(contracts_app, ["show", f"{name}@2"])
    assert pinned.exit_code == 0 and json.loads(pinned.output)["forced"] is True

    schema_file.write_text('{"type": "object",')
    broken = runner.invoke(contracts_app, ["add", name, str(schema_file)])
    assert broken.exit_code == 1 and "is not valid JSON" in broken.output
    schema_file.write_text(json.dumps({"type": "strnig"}))
    invalid = runner.invoke(contracts_app, ["add", name, str(schema_file)])
    assert invalid.exit_code == 1 and "$.type" in invalid.output
