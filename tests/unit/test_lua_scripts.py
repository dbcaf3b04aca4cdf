"""The Lua scripts in gateway_core/fleet/lua: each reads like the Redis docs (a header naming its KEYS and ARGV, which
the body then names) and each is used by the code. tests/integration/test_lua_scripts.py loads them on a real
redis-server and checks what the job settle scripts do there."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_core.fleet import lua

ROOT = Path(__file__).resolve().parents[2]
INCLUDED = sorted({included[: -len(".lua")] for name in lua.names() for included in lua.includes(name)})
SCRIPTS = [name for name in lua.names() if name not in INCLUDED]

# "-- KEYS[1] job_key  the job hash", "-- ARGV[4..] fields  field, value, ...", "-- KEYS[1..n] buckets  ..."
ENTRY = re.compile(r"^--\s+(KEYS|ARGV)\[(\d+)(\.\.\w*)?\]\s+(\w+)\s+\S")
REFERENCE = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
NAMING = re.compile(r"^local (\w+) = ")


@dataclass(frozen=True)
class Entry:
    kind: str  # KEYS or ARGV
    index: int
    open_ended: bool  # "ARGV[4..]": this and every later index
    name: str


@dataclass(frozen=True)
class Parsed:
    header: list[str]
    entries: list[Entry]
    body: list[str]  # code lines after the header, comments removed


def parse(name: str) -> Parsed:
    lines = (Path(lua.__file__).parent / f"{name}.lua").read_text().splitlines()
    header: list[str] = []
    while lines and lines[0].startswith("--"):
        header.append(lines.pop(0))
    entries = []
    for line in header:
        match = ENTRY.match(line)
        if match:
            kind, index, open_ended, entry_name = match.groups()
            entries.append(Entry(kind, int(index), open_ended is not None, entry_name))
    body = [line.split("--", 1)[0].rstrip() for line in lines]
    return Parsed(header, entries, [line for line in body if line])


def covering(entries: list[Entry], kind: str, index: int) -> Entry | None:
    for entry in entries:
        if entry.kind == kind and (entry.index == index or (entry.open_ended and index > entry.index)):
            return entry
    return None


# --- the files ---------------------------------------------------------------------------------------------------


def test_the_scripts_are_found() -> None:
    assert "job_settle_success" in SCRIPTS and "job_settle_failure" in SCRIPTS and "job_settle_move_on" in SCRIPTS
    assert INCLUDED == ["batch_counter", "webhook_delivery_store"]
    assert len(SCRIPTS) >= 20


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_opens_with_what_it_does_its_keys_and_arguments_and_what_it_returns(name: str) -> None:
    parsed = parse(name)
    assert parsed.header, f"{name}.lua has no header comment"
    assert not ENTRY.match(parsed.header[0]) and len(parsed.header[0]) > 20, (
        f"{name}.lua: the header starts with what the script does"
    )
    assert any(line.startswith("-- Returns") for line in parsed.header), f"{name}.lua: the header says what it returns"
    assert any(e.kind == "KEYS" for e in parsed.entries), f"{name}.lua names no KEYS (a script touches a key)"
    for kind in ("KEYS", "ARGV"):
        declared = [e for e in parsed.entries if e.kind == kind]
        assert [e.index for e in declared] == list(range(1, len(declared) + 1)), (
            f"{name}.lua: {kind} are named in order from 1, without gaps"
        )
        assert all(not e.open_ended for e in declared[:-1]), f"{name}.lua: only the last {kind} entry may be open"
    names = [e.name for e in parsed.entries]
    assert len(names) == len(set(names)), f"{name}.lua names two entries alike"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_and_argument_the_body_uses_is_named_in_the_header_and_then_in_a_local(name: str) -> None:
    parsed = parse(name)
    named: set[Entry] = set()
    for line in parsed.body:
        for kind, index in REFERENCE.findall(line):
            entry = covering(parsed.entries, kind, int(index))
            assert entry is not None, f"{name}.lua uses {kind}[{index}], which its header does not name: {line!r}"
            assert not entry.open_ended, f"{name}.lua reads {kind}[{index}] of an open list by number: {line!r}"
            naming = NAMING.match(line)
            assert naming and naming.group(1) == entry.name, (
                f"{name}.lua: {kind}[{index}] is read only as `local {entry.name} = ...`, not in {line!r}"
            )
            named.add(entry)
    unused = [f"{e.kind}[{e.index}] {e.name}" for e in parsed.entries if not e.open_ended and e not in named]
    assert not unused, f"{name}.lua names {unused} in its header but never reads them"


@pytest.mark.parametrize("name", INCLUDED)
def test_included_files_take_what_they_need_as_parameters(name: str) -> None:
    parsed = parse(name)
    assert parsed.header and parsed.header[0].startswith("-- Included")
    assert not any(REFERENCE.search(line) or "KEYS" in line or "ARGV" in line for line in parsed.body)
    assert all(line.startswith(("local function", " ", "end")) for line in parsed.body), (
        f"{name}.lua only defines local functions"
    )


def test_an_include_is_replaced_by_the_file_and_nothing_is_left_to_fill_in() -> None:
    for name in SCRIPTS:
        text = lua.script(name)
        assert not lua.INCLUDE.search(text), name
        assert "@" not in text, f"{name}.lua looks templated"
        for included in lua.includes(name):
            assert (Path(lua.__file__).parent / included).read_text().rstrip("\n") in text
    counting = [name for name in SCRIPTS if "count_in_batch(" in lua.script(name)]
    assert sorted(counting) == ["dlq_replay", "job_cancel", "job_settle_failure", "job_settle_success"]
    assert all("batch_counter.lua" in lua.includes(name) for name in counting)
    storing = [name for name in SCRIPTS if "store_webhook_delivery(" in lua.script(name)]
    assert sorted(storing) == ["job_cancel", "job_settle_failure", "job_settle_success"]
    assert all("webhook_delivery_store.lua" in lua.includes(name) for name in storing)


def test_scripts_are_read_once_per_process() -> None:
    assert lua.script("job_cancel") is lua.script("job_cancel")


def test_an_unknown_script_is_an_error_that_names_it() -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_script\.lua"):
        lua.script("no_such_script")


def test_every_script_is_used_by_the_code_and_every_use_names_a_script() -> None:
    used: set[str] = set()
    for package in ("gateway_core", "workers", "gateway_api"):
        for path in (ROOT / package).rglob("*.py"):
            if path.parent.name == "lua":
                continue  # the loader's docstring shows a call
            used.update(re.findall(r"""\bscript\(["'](\w+)["']\)""", path.read_text()))
    assert used == set(SCRIPTS)


def test_the_package_ships_the_scripts() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch("lua/job_cancel.lua", pattern) for pattern in package_data.get("gateway_core", []))
