"""Structured grader output (`--grader-structured`): the rubric grader's requests carry the reply's
JSON Schema, the openai backend sends it as `response_format` in the form the server takes, an
in-process backend refuses it instead of returning unconstrained text, and requests without a
schema keep their old cache keys."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from harness.backends.openai_api import OpenAIBackend
from harness.cli import main
from harness.errors import CapabilityError
from harness.protocols.rubric import grader_generation
from harness.scoring.rubric_grading import REPLY_SCHEMA, parse_reply
from harness.types import GenerationConfig, GenerationRequest, Message
from tests.openai_server import FaultServer

MESSAGES = (Message("user", "Grade this."),)


def test_a_request_without_schema_keeps_its_old_key():
    req = GenerationRequest(messages=MESSAGES, config=GenerationConfig(max_tokens=8))
    old = {k: v for k, v in asdict(req.config).items() if k != "json_schema"}
    assert req.key()["config"] == old
    schema = json.dumps(REPLY_SCHEMA, sort_keys=True)
    constrained = GenerationRequest(messages=MESSAGES, config=GenerationConfig(max_tokens=8, json_schema=schema))
    assert constrained.key()["config"]["json_schema"] == schema and constrained.key() != req.key()


@pytest.mark.parametrize(("form", "expected"), [
    ("json_schema", {"type": "json_schema", "json_schema": {"name": "reply", "schema": REPLY_SCHEMA, "strict": True}}),
    ("json_object", {"type": "json_object", "schema": REPLY_SCHEMA}),
])
def test_openai_backend_sends_the_schema_in_the_servers_form(form, expected):
    reply = '{"explanation": "ok", "criteria_met": true}'
    with FaultServer(reply=lambda body: reply) as server:
        backend = OpenAIBackend("m", base_url=server.url, response_format=form, timeout=5.0)
        try:
            schema = json.dumps(REPLY_SCHEMA, sort_keys=True)
            free, constrained = backend.generate([
                GenerationRequest(messages=MESSAGES, config=GenerationConfig(max_tokens=8)),
                GenerationRequest(messages=MESSAGES, config=GenerationConfig(max_tokens=8, json_schema=schema)),
            ])
        finally:
            backend.close()
    bodies = sorted(server.requests, key=lambda b: "response_format" in b)
    assert "response_format" not in bodies[0]
    assert bodies[1]["response_format"] == expected
    assert parse_reply(constrained.text).met is True and free.text == reply


def test_unknown_response_format_is_one_clear_error():
    with pytest.raises(Exception, match="response_format='xml'"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", response_format="xml")


def test_in_process_backend_refuses_a_schema(hf_backend):
    schema = json.dumps(REPLY_SCHEMA)
    with pytest.raises(CapabilityError, match="cannot enforce a JSON schema"):
        hf_backend.generate([GenerationRequest(messages=MESSAGES, config=GenerationConfig(json_schema=schema))])


def test_grader_generation_carries_the_schema_only_when_asked():
    from types import SimpleNamespace

    plain = SimpleNamespace(family_settings={"rubric": {}})
    structured = SimpleNamespace(family_settings={"rubric": {"structured": True}})
    assert grader_generation(plain).json_schema is None  # type: ignore[arg-type]
    assert json.loads(grader_generation(structured).json_schema or "") == REPLY_SCHEMA  # type: ignore[arg-type]


def test_cli_refuses_structured_grading_on_an_in_process_grader(tmp_path, capsys):
    rc = main(["run", "--tasks", "healthbench", "--data-source", "bundled", "--limit", "1",
               "--grader-model", "default", "--grader-structured", "--output", str(tmp_path / "r")])
    assert rc == 2
    assert "--grader-structured needs every grader on --grader-backend openai" in capsys.readouterr().err
