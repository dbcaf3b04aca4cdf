"""fedgate's Redis Lua scripts, one job per `.lua` file in this package, read once per process.

Each file opens with a comment block in the Redis docs' manner: what the script does, each `KEYS[n]` and `ARGV[n]`
by name, and what it returns; the body then names them (`local job_key = KEYS[1]`). Callers register the text
with redis-py (`client.register_script(script("job_cancel"))`), which runs it by SHA (EVALSHA) and loads it on
a NOSCRIPT reply, so nothing here needs Redis Functions (Redis 6.2 compatible).

Shared helpers live in their own file and are pulled in by a line of its own, `-- include: batch_counter.lua`,
which `script()` replaces with that file's text when it first reads the script. Nothing is templated into a
script at run time: values a script needs (key prefixes included) arrive as ARGV.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

INCLUDE = re.compile(r"^--\s*include:\s*(\S+\.lua)\s*$", re.MULTILINE)


def _read(filename: str) -> str:
    resource = files(__name__).joinpath(filename)
    if not resource.is_file():
        raise FileNotFoundError(f"no Lua script {filename!r} in {__name__} (see names())")
    return resource.read_text(encoding="utf-8")


@cache
def script(name: str) -> str:
    """The text of `<name>.lua`, its `-- include: <file>.lua` lines replaced by those files' text."""
    included: list[str] = []

    def expand(match: re.Match[str]) -> str:
        filename = match.group(1)
        if filename in included:
            raise ValueError(f"{name}.lua includes {filename} twice")
        included.append(filename)
        text = _read(filename)
        if INCLUDE.search(text):
            raise ValueError(f"{filename} (included by {name}.lua) may not include other files")
        return text.rstrip("\n")

    return INCLUDE.sub(expand, _read(f"{name}.lua"))


def names() -> list[str]:
    """Every script in this package (without `.lua`), included helpers too, sorted."""
    return sorted(entry.name[: -len(".lua")] for entry in files(__name__).iterdir() if entry.name.endswith(".lua"))


def includes(name: str) -> list[str]:
    """The files `<name>.lua` includes, in order."""
    return INCLUDE.findall(_read(f"{name}.lua"))
