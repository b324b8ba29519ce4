"""A strict schema check of our JSON against the official ``openai`` package's pydantic types, shared by the unit
and e2e tests.

The SDK reads a missing field as ``None``, so parsing alone proves nothing to a schema-strict client. ``check``
first looks for every field the type declares (by its wire name, e.g. ``async``), recursively: nested models,
lists and dicts of models, and unions (picked by the ``type`` a JSON object carries, as OpenAI's discriminated
unions are); then it validates the JSON with the type. ``check_event`` does the same for one stream event, against
the member of ``openai.types.responses.ResponseStreamEvent`` its ``type`` names.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_tags(model: type[BaseModel]) -> tuple[Any, ...]:
    """The values a model's ``type`` field may take (empty when it has no literal ``type``)."""
    field = model.model_fields.get("type")
    annotation = field.annotation if field is not None else None
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def union_missing(value: Any, members: tuple[Any, ...], path: str) -> list[str]:
    """The union member the value is meant to be: the models whose ``type`` matches, else any model or container;
    when several fit, the one the value misses least of."""
    if value is None:
        return []
    models = [member for member in members if is_model(member)]
    if isinstance(value, dict) and models:
        tagged = [model for model in models if value.get("type") in type_tags(model)]
        candidates: list[Any] = tagged or models
    else:
        candidates = [member for member in members if get_origin(member) in (list, dict)]
    results = [missing_fields(value, member, path) for member in candidates]
    return min(results, key=len) if results else []


def missing_fields(value: Any, annotation: Any, path: str = "") -> list[str]:
    """The paths of the fields ``annotation`` declares that ``value`` lacks."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return missing_fields(value, get_args(annotation)[0], path)
    if origin in (Union, types.UnionType):
        return union_missing(value, get_args(annotation), path)
    if origin is list and isinstance(value, list):
        (item,) = get_args(annotation)
        return [name for i, element in enumerate(value) for name in missing_fields(element, item, f"{path}[{i}]")]
    if origin is dict and isinstance(value, dict):
        item = get_args(annotation)[1]
        return [name for key, element in value.items() for name in missing_fields(element, item, f"{path}.{key}")]
    if not is_model(annotation) or not isinstance(value, dict):
        return []  # a scalar, or the wrong shape (which validation reports)
    missing = []
    for name, field in annotation.model_fields.items():
        key = field.alias or name
        where = f"{path}.{key}" if path else key
        if key not in value:
            missing.append(where)
        else:
            missing.extend(missing_fields(value[key], field.annotation, where))
    return missing


def check(data: Any, model: type[Model]) -> Model:
    """``data`` has every field of ``model`` (recursively) and validates as one; the parsed object is returned."""
    assert isinstance(data, dict), f"expected a JSON object for {model.__name__}, got {type(data).__name__}"
    missing = missing_fields(data, model)
    assert not missing, f"{model.__name__} lacks {missing}"
    return model.model_validate(data)


def event_types() -> dict[str, type[BaseModel]]:
    """Every stream event's class by its ``type``."""
    members = get_args(get_args(ResponseStreamEvent)[0])
    return {tag: member for member in members for tag in type_tags(member)}


EVENTS = event_types()


def check_event(data: Any) -> BaseModel:
    """One stream event against the event type its ``type`` names."""
    assert isinstance(data, dict) and data.get("type") in EVENTS, f"not a Responses stream event: {data!r:.200}"
    return check(data, EVENTS[data["type"]])
