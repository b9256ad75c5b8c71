"""docs/asyncapi.yaml: generated from the code, in step with it, consistent with the contract's topic
table and the consumer schemas, and valid for the official AsyncAPI parser (@asyncapi/parser, run
by Node from the folder `./dev setup` installs it into)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from punchgate.gateway import contract_asyncapi, contract_schemas
from punchgate.sync.contract import SCHEMA_DIR
from punchgate.sync.topics import Topics

DOCS = SCHEMA_DIR.parent
VALIDATE = Path(__file__).with_name("asyncapi_validate.mjs")
# `./dev setup` installs the parser into the venv the tests run in ($VENV/asyncapi-validator).
VALIDATOR_DIR = Path(sys.prefix) / "asyncapi-validator"


@functools.cache
def generated() -> dict[str, Any]:
    return contract_asyncapi.document(contract_schemas.vocabulary())


def run_validator(document: Path) -> tuple[int, Any, str]:
    """The official parser's verdict on `document`: (exit status, the YAML as it reads it, diagnostics).
    Fails the test, naming `./dev setup`, when node or the parser is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; run ./dev setup (it installs Debian's nodejs and npm)")
    done = subprocess.run(
        [node, str(VALIDATE), str(VALIDATOR_DIR), str(document)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 3:
        pytest.fail(done.stderr.strip())
    assert done.returncode in (0, 1), f"the validator failed: {done.stderr}"
    return done.returncode, json.loads(done.stdout), done.stderr


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local `$ref` (`#/a/b~1c`) within `document`; KeyError when it points nowhere."""
    assert ref.startswith("#/"), f"not a reference within the document: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in refs(item)]
    return []


def test_checked_in_document_matches_the_generator(tmp_path: Path) -> None:
    vocabulary = contract_schemas.vocabulary()
    assert not contract_asyncapi.is_stale(vocabulary), (
        "docs/asyncapi.yaml is stale: run `python -m punchgate.gateway.contract_schemas`"
    )
    # The check notices a missing and a changed document.
    copy = tmp_path / "asyncapi.yaml"
    assert contract_asyncapi.is_stale(vocabulary, copy)
    contract_asyncapi.write(vocabulary, copy)
    assert not contract_asyncapi.is_stale(vocabulary, copy)
    copy.write_text(copy.read_text().replace("qos: 1", "qos: 2", 1))
    assert contract_asyncapi.is_stale(vocabulary, copy)


def test_a_topic_the_generator_does_not_describe_fails_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Topics, "extra", property(lambda self: f"{self.base}/extra"), raising=False)
    with pytest.raises(ValueError, match="extra"):
        contract_asyncapi.document(contract_schemas.vocabulary())


def test_every_reference_and_payload_schema_exists() -> None:
    document = generated()
    for ref in refs(document):
        try:
            resolve(document, ref)
        except KeyError:
            pytest.fail(f"{ref} points nowhere")
    schemas = document["components"]["schemas"]
    for name, message in document["components"]["messages"].items():
        # Each payload is the consumer schema it names, as contract_asyncapi embeds it.
        file = DOCS / message["x-schema-file"]
        assert file.is_file(), f"message {name}: {file} does not exist"
        root, definitions = contract_asyncapi.embeddable(json.loads(file.read_text()))
        assert resolve(document, message["payload"]["$ref"]) == root, f"message {name}: not {file}"
        for definition, schema in definitions.items():
            assert schemas[definition] == schema, f"message {name}: {definition} differs from {file}"
    for operation in document["operations"].values():
        for message in operation["messages"]:
            channel = message["$ref"].removesuffix("/messages/" + message["$ref"].rsplit("/", 1)[-1])
            assert channel == operation["channel"]["$ref"], f"{message} is not a message of its channel"


def test_channels_say_what_the_contract_s_topic_table_says() -> None:
    """Every row of docs/mqtt-contract.md's topic table has its channel, with its QoS, retain flag,
    schema and direction (the rows central publishes are what the gateway receives)."""
    row = re.compile(r"^\| `\{base\}(/[^`]*)` \| (\d) \| (yes|no) \| (.*) \| `([a-z-]+\.json)` \|$")
    rows = [
        match for line in (DOCS / "mqtt-contract.md").read_text().splitlines() if (match := row.match(line))
    ]
    assert len(rows) >= 8, "the topic table in docs/mqtt-contract.md was not found"
    document = generated()
    channels = {channel["address"]: name for name, channel in document["channels"].items()}
    operations = {operation["channel"]["$ref"]: operation for operation in document["operations"].values()}
    for match in rows:
        topic, qos, retained, payload, schema = match.groups()
        address = "{prefix}/{gateway_id}" + topic
        assert address in channels, f"{address} (docs/mqtt-contract.md) is not a channel"
        operation = operations["#/channels/" + channels[address]]
        assert operation["bindings"]["mqtt"]["qos"] == int(qos), address
        assert operation["bindings"]["mqtt"]["retain"] == (retained == "yes"), address
        assert operation["action"] == ("receive" if "published by central" in payload else "send"), address
        message = resolve(document, resolve(document, operation["messages"][0]["$ref"])["$ref"])
        assert message["x-schema-file"] == f"schemas/{schema}", address


def test_the_official_parser_accepts_the_document() -> None:
    status, read, diagnostics = run_validator(DOCS / "asyncapi.yaml")
    assert status == 0, f"@asyncapi/parser finds errors in docs/asyncapi.yaml:\n{diagnostics}"
    # ... and reads the YAML as what the generator meant.
    assert read == generated()


def test_the_parser_reports_errors_and_the_yaml_writer_keeps_every_string(tmp_path: Path) -> None:
    """The validator is not vacuous: a broken document fails. Its YAML reader gets back exactly
    the strings that need quoting, escaping or a block."""
    document = json.loads(json.dumps(generated()))
    document["operations"]["publishDevicePunches"]["bindings"]["mqtt"]["qos"] = 3
    document["x-strings"] = {
        "plain": ["yes", "No", "null", "", " lead", "trail ", "a: b", "a #b", "#c", "-d", "1.0", "3.0.0"],
        "quoted": ['"q"', "back\\slash", "tab\there", "nel\x85", "ls\u2028ps\u2029", "bom\ufeff", "del\x7f"],
        "unicode": ["␟ — é 漢字 🙂"],
        "blocks": [
            "two\nlines",
            "trail \nx",
            "para\n\n  indented\nend",
            "trailing\n",
            "\nleading",
            " x\ny",
            "sp \n  \nz",
        ],
        "values": [0, 1.5, -2, True, False, None, {}, [], [[1, 2], {"k": "v"}]],
    }
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(contract_asyncapi.to_yaml(document), encoding="utf-8")
    status, read, diagnostics = run_validator(broken)
    assert status == 1
    assert "publishDevicePunches/bindings/mqtt/qos" in diagnostics
    assert read == document
