"""Tool schemas as clients write them: pydantic's ``$ref``/``$defs`` for nested arguments still resolve once the
``tool_choice: "required"`` plan nests every tool's schema inside one array-of-calls schema."""

from __future__ import annotations

from typing import Any

import pytest
import xgrammar
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from pydantic import BaseModel

from openai_routes.pipeline.constraints import rebased, required_schema
from openai_routes.protocol.tools import ChatCompletionTool


class Address(BaseModel):
    city: str
    country: str | None = None


class Person(BaseModel):
    name: str
    home: Address
    friends: list[Person] = []  # recursive: a reference to the tool schema's own root definition


def tool(name: str, parameters: dict[str, Any]) -> ChatCompletionTool:
    return ChatCompletionTool.model_validate({"type": "function", "function": {"name": name, "parameters": parameters}})


TOOLS = [
    tool("add_person", Person.model_json_schema()),
    tool("add_address", Address.model_json_schema()),
    tool(
        "ping",
        {"type": "object", "properties": {"target": {"$ref": "#/$defs/host"}}, "$defs": {"host": {"type": "string"}}},
    ),
]


def test_pydantic_writes_references() -> None:
    assert "$defs" in Person.model_json_schema() and "$ref" in str(Person.model_json_schema())


@pytest.mark.parametrize("parallel", [True, False])
def test_required_schema_keeps_every_reference_resolvable(parallel: bool) -> None:
    validator = Draft202012Validator(required_schema(TOOLS, parallel))
    call = {"name": "add_person", "parameters": {"name": "Ada", "home": {"city": "London"}, "friends": [
        {"name": "Bob", "home": {"city": "Paris", "country": "FR"}}]}}  # fmt: skip
    validator.validate([call])
    validator.validate([{"name": "ping", "parameters": {"target": "example"}}])
    with pytest.raises(ValidationError):
        validator.validate([{"name": "add_person", "parameters": {"name": "Ada", "home": {"country": "FR"}}}])
    with pytest.raises(ValidationError):
        validator.validate([{"name": "ping", "parameters": {"target": 7}}])


def test_the_grammar_backend_compiles_it() -> None:
    xgrammar.Grammar.from_json_schema(required_schema(TOOLS, parallel=True))


def test_rebased_moves_local_references_only() -> None:
    schema = {"$ref": "#", "items": [{"$ref": "#/$defs/a"}], "x": {"$ref": "https://example.com/s.json"}}
    assert rebased(schema, "#/$defs/tool_0") == {
        "$ref": "#/$defs/tool_0",
        "items": [{"$ref": "#/$defs/tool_0/$defs/a"}],
        "x": {"$ref": "https://example.com/s.json"},
    }
