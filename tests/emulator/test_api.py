"""The Akkio emulator: the `/v1/datasets` contract, persistence and the loopback server."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from akkiosync.emulator import DEFAULT_API_KEY, Emulator, EmulatorServer, serve
from tests.emulator.helpers import add, create

KEY = DEFAULT_API_KEY
BAD_KEY_BODY = b'{"status": "missing or invalid API key"}'
NOT_FOUND = {"status": "error", "message": "dataset not found"}
# The extra endpoints live beside /v1, so relative to a client's /v1 base URL:
HEALTH, ROWS = "/../_emulator/health", "/../_emulator/rows"


def describe(client: httpx.Client, dataset_id: str) -> dict[str, Any]:
    response = client.get("/datasets", params={"api_key": KEY, "id": dataset_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestDatasetLifecycle:
    """List, create, describe, add rows and delete, in-process and over a loopback port."""

    def test_list_is_empty_at_first(self, any_client: httpx.Client) -> None:
        """A fresh emulator lists no datasets."""
        response = any_client.get("/datasets", params={"api_key": KEY})
        assert response.status_code == 200
        assert response.json() == {"status": "success", "datasets": []}

    def test_create_answers_an_akkio_shaped_id_and_the_name(self, any_client: httpx.Client) -> None:
        """Creating answers success, a 20-character alphanumeric id and the name."""
        body = any_client.post("/datasets", json={"api_key": KEY, "name": "orders"}).json()
        assert body["status"] == "success"
        assert body["dataset_name"] == "orders"
        assert re.fullmatch(r"[A-Za-z0-9]{20}", body["dataset_id"])

    def test_created_datasets_are_listed_in_creation_order(self, any_client: httpx.Client) -> None:
        """The list holds every dataset's id and name, oldest first."""
        first, second = create(any_client, "a"), create(any_client, "b")
        body = any_client.get("/datasets", params={"api_key": KEY}).json()
        assert body["datasets"] == [{"id": first, "name": "a"}, {"id": second, "name": "b"}]

    def test_new_dataset_has_no_rows_and_no_fields(self, any_client: httpx.Client) -> None:
        """Before any rows, a dataset describes itself with 0 rows and no fields."""
        dataset_id = create(any_client, "empty")
        assert describe(any_client, dataset_id) == {
            "status": "success",
            "name": "empty",
            "rows": 0,
            "fields": [],
        }

    def test_added_rows_are_counted_and_stored(
        self, any_client: httpx.Client, emu: Emulator
    ) -> None:
        """Adding rows answers success; the count and the stored rows follow, in order."""
        dataset_id = create(any_client)
        rows = [{"id": 1, "total": 9.5}, {"id": 2, "total": 3.0}]
        response = add(any_client, dataset_id, rows)
        assert response.status_code == 200
        assert response.json() == {"status": "success"}
        add(any_client, dataset_id, [{"id": 3, "total": 1.25}])
        assert describe(any_client, dataset_id)["rows"] == 3
        assert emu.rows(dataset_id) == [*rows, {"id": 3, "total": 1.25}]

    def test_delete_removes_the_dataset(self, any_client: httpx.Client, emu: Emulator) -> None:
        """After a delete the dataset is neither listed nor found."""
        dataset_id = create(any_client)
        response = any_client.request(
            "DELETE", "/datasets", json={"api_key": KEY, "id": dataset_id}
        )
        assert response.json() == {"status": "success"}
        assert emu.dataset_ids() == []
        get = any_client.get("/datasets", params={"api_key": KEY, "id": dataset_id})
        assert get.status_code == 404

    def test_parse_fields_answers_success(self, any_client: httpx.Client) -> None:
        """POST with an id and parse_fields true answers success."""
        dataset_id = create(any_client)
        body = {"api_key": KEY, "id": dataset_id, "parse_fields": True}
        response = any_client.post("/datasets", json=body)
        assert response.status_code == 200
        assert response.json() == {"status": "success"}

    def test_ids_are_unique(self, local: httpx.Client) -> None:
        """Every created dataset gets its own id."""
        ids = {create(local, f"d{n}") for n in range(100)}
        assert len(ids) == 100


class TestParameterSources:
    """Fields come from the query string, a JSON body or a form body; the body wins."""

    def test_query_string_alone(self, local: httpx.Client) -> None:
        """A body-less POST with everything in the query string creates a dataset."""
        response = local.post("/datasets", params={"api_key": KEY, "name": "q"})
        assert response.json()["dataset_name"] == "q"

    def test_form_body(self, local: httpx.Client, emu: Emulator) -> None:
        """A form-encoded body carries the key, the id and rows as a JSON string."""
        created = local.post("/datasets", data={"api_key": KEY, "name": "f"}).json()
        dataset_id = created["dataset_id"]
        form = {"api_key": KEY, "id": dataset_id, "rows": json.dumps([{"a": 1}])}
        assert local.post("/datasets", data=form).json() == {"status": "success"}
        assert emu.rows(dataset_id) == [{"a": 1}]

    def test_form_parse_fields_true(self, local: httpx.Client) -> None:
        """parse_fields arrives as the string "true" in a form."""
        dataset_id = create(local)
        form = {"api_key": KEY, "id": dataset_id, "parse_fields": "true"}
        assert local.post("/datasets", data=form).status_code == 200

    def test_json_body_without_content_type_is_recognised(self, local: httpx.Client) -> None:
        """A body that looks like a JSON object is read as JSON even without a content type."""
        content = json.dumps({"api_key": KEY, "name": "sniffed"}).encode()
        response = local.post("/datasets", content=content)
        assert response.json()["dataset_name"] == "sniffed"

    def test_body_wins_over_query_string(self, local: httpx.Client) -> None:
        """A field present in both places is taken from the body."""
        response = local.post(
            "/datasets",
            params={"api_key": "wrong", "name": "from-query"},
            json={"api_key": KEY, "name": "from-body"},
        )
        assert response.status_code == 200
        assert response.json()["dataset_name"] == "from-body"

    def test_query_and_body_are_merged(self, local: httpx.Client, emu: Emulator) -> None:
        """The key may travel in the query string while the rows travel in the body."""
        dataset_id = create(local)
        response = local.post(
            "/datasets", params={"api_key": KEY, "id": dataset_id}, json={"rows": [{"a": 1}]}
        )
        assert response.status_code == 200
        assert emu.rows(dataset_id) == [{"a": 1}]

    def test_delete_with_query_string(self, local: httpx.Client, emu: Emulator) -> None:
        """The docs' cURL form of a delete puts the id in the query string."""
        dataset_id = create(local)
        assert local.delete("/datasets", params={"api_key": KEY, "id": dataset_id}).is_success
        assert emu.dataset_ids() == []

    def test_trailing_slash_is_the_same_url(self, local: httpx.Client) -> None:
        """/v1/datasets/ answers like /v1/datasets."""
        response = local.get("/datasets/", params={"api_key": KEY})
        assert response.json() == {"status": "success", "datasets": []}


class TestRowsEncoding:
    """rows is a JSON array of objects or a JSON-encoded string of one; anything else is 400."""

    def test_array_and_string_store_the_same_rows(self, local: httpx.Client, emu: Emulator) -> None:
        """Both encodings of the same rows store the same rows."""
        rows = [{"name": "Ann", "age": 31}, {"name": "Bob", "age": None}]
        as_array, as_string = create(local, "array"), create(local, "string")
        assert add(local, as_array, rows).status_code == 200
        assert add(local, as_string, json.dumps(rows)).status_code == 200
        assert emu.rows(as_array) == emu.rows(as_string) == rows
        assert describe(local, as_array)["fields"] == describe(local, as_string)["fields"]

    @pytest.mark.parametrize(
        "rows",
        [
            pytest.param("[{not json", id="bad-json-string"),
            pytest.param({"a": 1}, id="object-not-array"),
            pytest.param(42, id="number"),
            pytest.param([{"a": 1}, 2], id="non-object-row"),
            pytest.param('"[]"', id="string-of-a-string"),
            pytest.param([{"a": [1, 2]}], id="array-value"),
            pytest.param([{"a": {"b": 1}}], id="object-value"),
            pytest.param([{}], id="first-row-without-fields"),
        ],
    )
    def test_malformed_rows_are_400(self, local: httpx.Client, emu: Emulator, rows: Any) -> None:
        """Rows that are not an array of flat objects answer 400 and store nothing."""
        dataset_id = create(local)
        response = add(local, dataset_id, rows)
        assert response.status_code == 400
        assert response.json()["status"] == "error"
        assert response.json()["message"]
        assert emu.rows(dataset_id) == []

    def test_empty_batch_is_accepted_and_fixes_nothing(self, local: httpx.Client) -> None:
        """An empty array succeeds and leaves the fields unfixed."""
        dataset_id = create(local)
        assert add(local, dataset_id, []).status_code == 200
        assert add(local, dataset_id, [{"x": 1}]).status_code == 200
        assert describe(local, dataset_id)["fields"] == [{"name": "x", "type": "integer"}]


class TestSchema:
    """The first rows fix the fields and their types; every later row must have the same keys."""

    def test_fields_follow_the_first_rows_key_order(self, local: httpx.Client) -> None:
        """The fields are the first row's keys, in that order."""
        dataset_id = create(local)
        add(local, dataset_id, [{"z": 1, "a": 2, "m": 3}])
        names = [f["name"] for f in describe(local, dataset_id)["fields"]]
        assert names == ["z", "a", "m"]

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (True, "category"),
            (7, "integer"),
            (2.5, "float"),
            ("2024-01-15", "date"),
            ("2024-01-15T10:30:00", "date"),
            ("2024-01-15T10:30:00.123+02:00", "date"),
            ("2024-01-15T10:30:00Z", "date"),
            ("2024-13-45", "string"),
            ("20240115", "string"),
            ("hello", "string"),
            (None, "string"),
        ],
    )
    def test_type_inference(self, local: httpx.Client, value: Any, expected: str) -> None:
        """Each JSON value maps to the documented Akkio field type."""
        dataset_id = create(local)
        add(local, dataset_id, [{"v": value}])
        assert describe(local, dataset_id)["fields"] == [{"name": "v", "type": expected}]

    def test_type_comes_from_the_first_non_null_value_in_the_batch(
        self, local: httpx.Client
    ) -> None:
        """Leading nulls are skipped when a field's type is inferred."""
        dataset_id = create(local)
        add(local, dataset_id, [{"v": None}, {"v": None}, {"v": 3.5}, {"v": "x"}])
        assert describe(local, dataset_id)["fields"] == [{"name": "v", "type": "float"}]

    def test_later_batches_do_not_change_the_fields(self, local: httpx.Client) -> None:
        """Once fixed, the types stay as inferred from the first batch."""
        dataset_id = create(local)
        add(local, dataset_id, [{"v": None}])
        assert add(local, dataset_id, [{"v": 5}]).status_code == 200
        assert describe(local, dataset_id)["fields"] == [{"name": "v", "type": "string"}]

    def test_key_order_of_later_rows_does_not_matter(self, local: httpx.Client) -> None:
        """Rows are compared by key set, not key order."""
        dataset_id = create(local)
        add(local, dataset_id, [{"a": 1, "b": 2}])
        assert add(local, dataset_id, [{"b": 4, "a": 3}]).status_code == 200

    def test_mismatch_in_the_first_batch_stores_nothing(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """A bad row anywhere in the first batch refuses it whole, fields included."""
        dataset_id = create(local)
        response = add(local, dataset_id, [{"a": 1, "b": 2}, {"a": 1, "c": 3}])
        assert response.status_code == 400
        message = response.json()["message"]
        assert "'c'" in message
        assert "'b'" in message
        assert describe(local, dataset_id) == {
            "status": "success",
            "name": "orders",
            "rows": 0,
            "fields": [],
        }
        assert add(local, dataset_id, [{"x": 1}]).status_code == 200
        assert emu.rows(dataset_id) == [{"x": 1}]

    def test_mismatch_in_a_later_batch_stores_nothing(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """An extra key in a later batch refuses that whole batch and names the key."""
        dataset_id = create(local)
        add(local, dataset_id, [{"a": 1}])
        response = add(local, dataset_id, [{"a": 2}, {"a": 3, "extra": 4}])
        assert response.status_code == 400
        assert response.json()["status"] == "error"
        assert "'extra'" in response.json()["message"]
        assert emu.rows(dataset_id) == [{"a": 1}]

    def test_missing_key_in_a_later_batch_is_named(self, local: httpx.Client) -> None:
        """A missing key is named in the error too."""
        dataset_id = create(local)
        add(local, dataset_id, [{"a": 1, "gone": 2}])
        response = add(local, dataset_id, [{"a": 2}])
        assert response.status_code == 400
        assert "'gone'" in response.json()["message"]


class TestAuthentication:
    """A missing or wrong api_key answers 401 with Akkio's exact body and changes nothing."""

    @pytest.mark.parametrize(
        ("method", "params"),
        [
            ("GET", {}),
            ("GET", {"id": "x"}),
            ("POST", {"name": "n"}),
            ("POST", {"id": "x", "rows": "[]"}),
            ("DELETE", {"id": "x"}),
        ],
    )
    def test_missing_key_is_401(
        self, any_client: httpx.Client, method: str, params: dict[str, str]
    ) -> None:
        """Every action without a key answers 401 and the documented body."""
        response = any_client.request(method, "/datasets", params=params)
        assert response.status_code == 401
        assert response.content == BAD_KEY_BODY

    def test_wrong_key_is_401(self, local: httpx.Client, emu: Emulator) -> None:
        """A wrong key is refused and creates nothing."""
        response = local.post("/datasets", json={"api_key": "nope", "name": "n"})
        assert response.status_code == 401
        assert response.json() == {"status": "missing or invalid API key"}
        assert emu.dataset_ids() == []

    def test_non_string_key_is_401(self, local: httpx.Client) -> None:
        """A key that is not a string is an invalid key, not a crash."""
        response = local.post("/datasets", json={"api_key": 123, "name": "n"})
        assert response.status_code == 401

    def test_custom_key(self) -> None:
        """An emulator made with its own key accepts it and refuses the default."""
        emu = Emulator(api_key="s3cret")
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            assert c.get("/datasets", params={"api_key": "s3cret"}).status_code == 200
            assert c.get("/datasets", params={"api_key": KEY}).status_code == 401

    def test_rows_endpoint_needs_the_key(self, local: httpx.Client) -> None:
        """/_emulator/rows is guarded like the API."""
        dataset_id = create(local)
        response = local.get(ROWS, params={"id": dataset_id})
        assert response.status_code == 401


class TestErrors:
    """Unknown ids are 404, malformed requests 400, unknown paths 404, other methods 405."""

    @pytest.mark.parametrize(
        ("method", "params"),
        [
            ("GET", {"id": "missingmissingmissin"}),
            ("POST", {"id": "missingmissingmissin", "rows": '[{"a": 1}]'}),
            ("POST", {"id": "missingmissingmissin", "parse_fields": "true"}),
            ("DELETE", {"id": "missingmissingmissin"}),
        ],
    )
    def test_unknown_id_is_404(
        self, any_client: httpx.Client, method: str, params: dict[str, str]
    ) -> None:
        """Every action on an unknown dataset answers 404 "dataset not found"."""
        response = any_client.request(method, "/datasets", params={"api_key": KEY, **params})
        assert response.status_code == 404
        assert response.json() == NOT_FOUND

    @pytest.mark.parametrize(
        ("content", "headers"),
        [
            pytest.param(b'{"api_key": ', {"Content-Type": "application/json"}, id="truncated"),
            pytest.param(b"[1, 2]", {"Content-Type": "application/json"}, id="array-body"),
            pytest.param(b"{oops}", {}, id="sniffed-json"),
        ],
    )
    def test_malformed_json_body_is_400(
        self, local: httpx.Client, content: bytes, headers: dict[str, str]
    ) -> None:
        """A body that claims or looks like JSON but is not a JSON object answers 400."""
        response = local.post("/datasets", content=content, headers=headers)
        assert response.status_code == 400
        assert response.json()["status"] == "error"

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({}, id="post-without-id-or-name"),
            pytest.param({"name": 5}, id="name-not-a-string"),
            pytest.param({"id": 5, "rows": []}, id="id-not-a-string"),
        ],
    )
    def test_missing_or_wrong_fields_are_400(
        self, local: httpx.Client, body: dict[str, Any]
    ) -> None:
        """A POST whose fields pick no action answers 400 with a message."""
        create(local)
        response = local.post("/datasets", json={"api_key": KEY, **body})
        assert response.status_code == 400
        assert response.json()["status"] == "error"

    def test_post_with_a_known_id_and_nothing_to_do_is_400(self, local: httpx.Client) -> None:
        """A known id without rows or parse_fields is 400, not a silent success."""
        dataset_id = create(local)
        response = local.post("/datasets", json={"api_key": KEY, "id": dataset_id})
        assert response.status_code == 400

    def test_delete_without_id_is_400(self, local: httpx.Client) -> None:
        """A delete must name its dataset."""
        response = local.delete("/datasets", params={"api_key": KEY})
        assert response.status_code == 400

    @pytest.mark.parametrize("path", ["/v1/projects", "/v2/datasets", "/", "/v1"])
    def test_unknown_path_is_404(self, any_client: httpx.Client, path: str) -> None:
        """Only /v1/datasets and the /_emulator endpoints exist."""
        response = any_client.get(path, params={"api_key": KEY})
        assert response.status_code == 404

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "BREW"])
    def test_other_methods_are_405(self, any_client: httpx.Client, method: str) -> None:
        """Methods the API does not use answer 405 with an Allow header."""
        response = any_client.request(method, "/datasets", params={"api_key": KEY})
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, POST, DELETE"

    def test_head_is_405_without_a_body(self, http: httpx.Client) -> None:
        """HEAD is refused over the socket, and no body follows the headers."""
        response = http.head("/datasets", params={"api_key": KEY})
        assert response.status_code == 405
        assert response.content == b""

    def test_request_count_counts_every_v1_request(
        self, local: httpx.Client, emu: Emulator
    ) -> None:
        """request_count includes refusals and excludes the /_emulator endpoints."""
        create(local)
        local.get("/datasets")
        local.get("/nowhere")
        local.get(HEALTH)
        assert emu.request_count() == 3


class TestEmulatorEndpoints:
    """The non-Akkio endpoints and accessors expose what was stored."""

    def test_health_needs_no_key(self, any_client: httpx.Client) -> None:
        """/_emulator/health answers success to anyone."""
        response = any_client.get(HEALTH)
        assert response.status_code == 200
        assert response.json() == {"status": "success"}

    def test_rows_endpoint_returns_rows_in_order(self, http: httpx.Client) -> None:
        """/_emulator/rows returns every stored row, in the order added."""
        dataset_id = create(http)
        add(http, dataset_id, [{"n": 1}, {"n": 2}])
        add(http, dataset_id, json.dumps([{"n": 3}]))
        response = http.get(ROWS, params={"api_key": KEY, "id": dataset_id})
        assert response.json() == {"status": "success", "rows": [{"n": 1}, {"n": 2}, {"n": 3}]}

    def test_rows_endpoint_unknown_id_is_404(self, local: httpx.Client) -> None:
        """/_emulator/rows answers 404 for an unknown dataset."""
        response = local.get(ROWS, params={"api_key": KEY, "id": "nope"})
        assert response.status_code == 404
        assert response.json() == NOT_FOUND

    def test_rows_accessor_returns_a_copy(self, local: httpx.Client, emu: Emulator) -> None:
        """Mutating what rows() returns does not change the stored rows."""
        dataset_id = create(local)
        add(local, dataset_id, [{"n": 1}])
        emu.rows(dataset_id)[0]["n"] = 99
        emu.rows(dataset_id).append({"n": 2})
        assert emu.rows(dataset_id) == [{"n": 1}]

    def test_rows_accessor_unknown_id_is_key_error(self, emu: Emulator) -> None:
        """rows() raises KeyError for an unknown dataset."""
        with pytest.raises(KeyError):
            emu.rows("nope")

    def test_handle_is_usable_without_httpx(self, emu: Emulator) -> None:
        """handle() takes a raw exchange and returns status, headers and body."""
        status, headers, body = emu.handle(
            "POST",
            "/v1/datasets?api_key=emulator-key",
            {"content-type": "application/json"},
            b'{"name": "raw"}',
        )
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["dataset_name"] == "raw"


class TestPersistence:
    """With a data_file, every change is journalled and replayed on start."""

    def test_round_trip(self, tmp_path: Path) -> None:
        """A new emulator on the same file sees the datasets, rows and fields."""
        journal = tmp_path / "emulator.jsonl"
        first = Emulator(data_file=journal)
        with httpx.Client(transport=first.transport(), base_url="http://emulator/v1") as c:
            kept, dropped = create(c, "kept"), create(c, "dropped")
            add(c, kept, [{"a": 1, "when": "2024-01-01"}, {"a": 2, "when": None}])
            add(c, kept, [{"a": 3, "when": "2024-01-03"}])
            c.request("DELETE", "/datasets", json={"api_key": KEY, "id": dropped})
            before = describe(c, kept)
        second = Emulator(data_file=journal)
        assert second.dataset_ids() == [kept]
        assert second.rows(kept) == first.rows(kept)
        with httpx.Client(transport=second.transport(), base_url="http://emulator/v1") as c:
            assert describe(c, kept) == before
            assert before["fields"] == [
                {"name": "a", "type": "integer"},
                {"name": "when", "type": "date"},
            ]

    def test_one_journal_line_per_change_and_none_per_refusal(self, tmp_path: Path) -> None:
        """Only successful changes are appended: one line each; reads and refusals add none."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal)
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            dataset_id = create(c)
            add(c, dataset_id, [{"a": 1}])
            assert add(c, dataset_id, [{"b": 1}]).status_code == 400
            assert add(c, dataset_id, []).status_code == 200
            describe(c, dataset_id)
            c.get("/datasets", params={"api_key": "wrong"})
        lines = journal.read_bytes().splitlines()
        assert [json.loads(line)["op"] for line in lines] == ["create", "add"]

    def test_torn_last_line_is_ignored_and_cut(self, tmp_path: Path) -> None:
        """A line cut short by a crash is dropped, and later appends start on a clean line."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal)
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            dataset_id = create(c)
            add(c, dataset_id, [{"a": 1}])
        intact = journal.read_bytes()
        with journal.open("ab") as f:
            f.write(b'{"op":"add","id":"' + dataset_id.encode() + b'","rows":[{"a":')
        restarted = Emulator(data_file=journal)
        assert restarted.rows(dataset_id) == [{"a": 1}]
        assert journal.read_bytes() == intact
        with httpx.Client(transport=restarted.transport(), base_url="http://emulator/v1") as c:
            add(c, dataset_id, [{"a": 2}])
        assert Emulator(data_file=journal).rows(dataset_id) == [{"a": 1}, {"a": 2}]

    def test_torn_last_line_ending_in_a_newline_is_ignored(self, tmp_path: Path) -> None:
        """An unparsable final line is treated as torn even if a newline follows it."""
        journal = tmp_path / "emulator.jsonl"
        journal.write_bytes(b'{"op":"create","id":"abc","name":"n"}\n{"op":"cre\n')
        assert Emulator(data_file=journal).dataset_ids() == ["abc"]

    def test_corruption_before_the_last_line_is_an_error(self, tmp_path: Path) -> None:
        """A bad line followed by good ones is corruption, not a crash, and is refused."""
        journal = tmp_path / "emulator.jsonl"
        entry = b'{"op":"create","id":"abc","name":"n"}\n'
        journal.write_bytes(entry + b"garbage\n" + entry)
        with pytest.raises(ValueError, match="corrupt emulator journal"):
            Emulator(data_file=journal)

    def test_missing_file_and_directories_are_created(self, tmp_path: Path) -> None:
        """The journal and its directory appear with the first change."""
        journal = tmp_path / "deep" / "er" / "emulator.jsonl"
        emu = Emulator(data_file=journal)
        assert not journal.exists()
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            create(c)
        assert len(journal.read_bytes().splitlines()) == 1

    def test_failed_journal_write_is_500_and_stores_nothing(self, tmp_path: Path) -> None:
        """When the journal cannot be written, the change is refused, not half-made."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal)
        journal.mkdir()  # opening a directory for appending fails
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            response = c.post("/datasets", json={"api_key": KEY, "name": "n"})
        assert response.status_code == 500
        assert response.json()["status"] == "error"
        assert emu.dataset_ids() == []

    def test_large_dataset_survives_restart(self, tmp_path: Path) -> None:
        """A dataset of 100k rows replays exactly."""
        journal = tmp_path / "emulator.jsonl"
        emu = Emulator(data_file=journal)
        with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
            dataset_id = create(c)
            for start in range(0, 100_000, 25_000):
                rows = [{"n": n, "s": f"row {n}"} for n in range(start, start + 25_000)]
                assert add(c, dataset_id, rows).status_code == 200
        replayed = Emulator(data_file=journal).rows(dataset_id)
        assert len(replayed) == 100_000
        assert replayed[-1] == {"n": 99_999, "s": "row 99999"}


class TestLoopbackServer:
    """serve() runs a real threaded HTTP server that is safe under concurrency."""

    def test_url_is_the_api_base(self, server: EmulatorServer) -> None:
        """url points at /v1 on a loopback port."""
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", server.url)

    def test_concurrent_adds_are_all_stored(self, http: httpx.Client, emu: Emulator) -> None:
        """8 threads adding 50 batches each lose and duplicate nothing."""
        dataset_id = create(http)
        add(http, dataset_id, [{"thread": -1, "batch": -1, "item": -1}])

        def worker(thread: int) -> None:
            for batch in range(50):
                rows = [{"thread": thread, "batch": batch, "item": i} for i in range(3)]
                response = add(http, dataset_id, rows)
                assert response.status_code == 200, response.text

        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(worker, t) for t in range(8)]:
                future.result()
        assert describe(http, dataset_id)["rows"] == 1 + 8 * 50 * 3
        stored = emu.rows(dataset_id)[1:]
        for thread in range(8):
            mine = [(r["batch"], r["item"]) for r in stored if r["thread"] == thread]
            assert mine == [(b, i) for b in range(50) for i in range(3)]

    def test_concurrent_creates_get_distinct_ids(self, http: httpx.Client) -> None:
        """Datasets created from many threads all exist, each with its own id."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(lambda n: create(http, f"d{n}"), range(40)))
        assert len(set(ids)) == 40
        listed = http.get("/datasets", params={"api_key": KEY}).json()["datasets"]
        assert {d["id"] for d in listed} == set(ids)

    def test_close_releases_the_port_and_is_idempotent(self, emu: Emulator) -> None:
        """After close() nothing answers on the port, and a second close() is harmless."""
        server = serve(emu)
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            assert c.get(HEALTH).status_code == 200
        server.close()
        server.close()
        with (
            httpx.Client(base_url=server.url, trust_env=False) as c,
            pytest.raises(httpx.ConnectError),
        ):
            c.get(HEALTH)

    def test_api_key_is_never_logged(
        self, server: EmulatorServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Request logs and http.server's error logs both keep the key out."""
        caplog.set_level(logging.DEBUG, logger="akkiosync.emulator")
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            c.get("/datasets", params={"api_key": KEY})
        host, port = server.url.removeprefix("http://").removesuffix("/v1").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            # Four words: http.server logs "Bad request syntax" with the whole request line.
            sock.sendall(f"GET /v1/datasets?api_key={KEY} extra HTTP/1.1\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 400")
        assert "/v1/datasets" in caplog.text
        assert "Bad request syntax" in caplog.text
        assert "api_key=***" in caplog.text
        assert KEY not in caplog.text

    def test_serve_forever_returns_on_interrupt(self) -> None:
        """The blocking CLI server starts, answers, and exits cleanly on Ctrl-C."""
        script = (
            "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
            "from akkiosync.emulator import Emulator, serve_forever;"
            "serve_forever(Emulator(), '127.0.0.1', 0); print('stopped', flush=True)"
        )
        with subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            url = re.search(r"http://\S+", banner)
            assert url, banner
            with httpx.Client(base_url=url.group(0), trust_env=False) as c:
                assert c.get("/datasets", params={"api_key": KEY}).status_code == 200
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "stopped" in out
