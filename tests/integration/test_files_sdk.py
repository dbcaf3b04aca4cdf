"""`/v1/files` as the official openai SDK uses it: list (paged, filtered, newest first), retrieve, delete; a tenant
only ever sees its own files."""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.helpers import FleetEnv


def client(fleet: FleetEnv, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key=key, max_retries=0)


def line(custom_id: str) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "sim-openai", "messages": [{"role": "user", "content": "hi"}]}}).encode()


def test_list_retrieve_and_delete_own_files_only(fleet: FleetEnv) -> None:
    sdk, other = client(fleet, "test-key-dev"), client(fleet, "test-key-other")
    mine = [sdk.files.create(file=(f"in-{i}.jsonl", io.BytesIO(line(f"r{i}") + b"\n")), purpose="batch").id
            for i in range(5)]
    theirs = other.files.create(file=("theirs.jsonl", io.BytesIO(line("x") + b"\n")), purpose="batch").id

    listed = [f.id for f in sdk.files.list()]
    assert [i for i in listed if i in mine] == mine[::-1]  # newest first, as OpenAI lists
    assert theirs not in listed and theirs in [f.id for f in other.files.list()]
    assert not set(mine) & {f.id for f in other.files.list()}

    first_page = sdk.files.list(limit=2)
    assert first_page.has_more and len(first_page.data) == 2
    assert [f.id for f in sdk.files.list(limit=2).iter_pages().__next__().data] == [f.id for f in first_page.data]
    paged = [f.id for f in sdk.files.list(limit=2)]  # the SDK follows `after` through every page
    assert [i for i in paged if i in mine] == mine[::-1] and len(paged) == len(set(paged))
    assert [i for i in (f.id for f in sdk.files.list(order="asc")) if i in mine] == mine
    assert all(f.purpose == "batch" for f in sdk.files.list(purpose="batch"))
    outputs = list(sdk.files.list(purpose="batch_output"))  # other tests' batches leave theirs
    assert all(f.purpose == "batch_output" for f in outputs) and not set(mine) & {f.id for f in outputs}

    shown = sdk.files.retrieve(mine[0])
    assert (shown.id, shown.filename, shown.purpose) == (mine[0], "in-0.jsonl", "batch")

    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(theirs)
    assert other.files.retrieve(theirs).id == theirs  # still there
    deleted = sdk.files.delete(mine[0])
    assert deleted.deleted and deleted.id == mine[0]
    assert mine[0] not in [f.id for f in sdk.files.list()]
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(mine[0])
    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(mine[0])
    for file_id in mine[1:]:
        sdk.files.delete(file_id)
    other.files.delete(theirs)


def test_a_bad_listing_parameter_is_a_400_naming_it(fleet: FleetEnv) -> None:
    sdk = client(fleet, "test-key-dev")
    with pytest.raises(openai.BadRequestError, match="order"):
        sdk.files.list(order="sideways")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="limit"):
        sdk.files.list(limit=0)
