"""The vLLM adapter's error translation and output reading, with vLLM's own exception and output classes (no
engine): validation errors keep their param without echoing values, grammar failures name the schema's field
without native paths, queue overflow is busy, ``finish_reason: "error"`` is a failure, and closing a stream
closes vLLM's generator explicitly."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any

import pytest
from vllm import SamplingParams
from vllm.exceptions import QueueOverflowError, VLLMValidationError
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.engine.exceptions import EngineGenerateError
from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

from engines.vllm_errors import plain, translate
from engines.vllm_generator import VLLMGenerator
from openai_routes.core.context import RequestContext, bind
from openai_routes.core.engine import (
    EngineBusyError,
    EngineFailedError,
    EngineInputError,
    EngineUnavailableError,
    SamplingOptions,
    StructuredOutput,
)


def sampling_error(**kwargs: Any) -> VLLMValidationError:
    with pytest.raises(VLLMValidationError) as raised:
        SamplingParams(**kwargs)
    return raised.value


def grammar_error(schema: dict[str, Any]) -> VLLMValidationError:
    params = SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))
    with pytest.raises(VLLMValidationError) as raised:
        validate_xgrammar_grammar(params)
    return raised.value


@pytest.mark.parametrize(
    ("kwargs", "param", "echoed"),
    [
        ({"temperature": -1.5}, "temperature", "-1.5"),
        ({"max_tokens": 4, "min_tokens": 9}, "min_tokens", "9"),
        ({"repetition_penalty": -3.0}, "repetition_penalty", "-3"),
    ],
)
def test_validation_errors_keep_their_param_and_echo_no_value(kwargs: dict[str, Any], param: str, echoed: str) -> None:
    error = translate(sampling_error(**kwargs))
    assert isinstance(error, EngineInputError)
    assert error.param == param
    assert str(error).startswith(f"Invalid value for '{param}': ")
    assert echoed not in str(error), str(error)


def test_the_out_of_vocab_logit_bias_ids_are_not_echoed() -> None:
    exc = VLLMValidationError(
        "token_id(s) [987654] in logit_bias contain out-of-vocab token ids. Vocabulary size: 49152",
        parameter="logit_bias",
        value=[987654],
    )
    error = translate(exc)
    assert isinstance(error, EngineInputError)
    assert error.param == "logit_bias"
    assert "987654" not in str(error)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/missing"},
        {"type": "string", "pattern": "(?<=a)b"},
        {"type": "array", "minItems": 3, "maxItems": 1},
    ],
)
def test_a_schema_the_grammar_cannot_compile_names_its_field_in_plain_words(schema: dict[str, Any]) -> None:
    native = grammar_error(schema)
    assert ".cc:" in str(native)  # what xgrammar says, and what the client must not see
    param = "response_format.json_schema.schema"
    error = translate(native, StructuredOutput(json_schema=schema, param=param))
    assert isinstance(error, EngineInputError)
    assert error.param == param
    message = str(error)
    assert message.startswith(f"The JSON schema in '{param}' cannot be enforced by constrained decoding: ")
    assert ".cc" not in message and "/project" not in message and "[" not in message.split(":", 1)[1][:4]


def test_queue_overflow_is_busy() -> None:
    assert isinstance(translate(QueueOverflowError()), EngineBusyError)  # type: ignore[no-untyped-call]


def test_other_failures_are_engine_failures_without_their_text() -> None:
    error = translate(EngineGenerateError("RuntimeError at /srv/secret/kernel.cu:12"))
    assert isinstance(error, EngineFailedError)
    assert "secret" not in str(error)


def test_plain_drops_values_and_native_locations() -> None:
    assert plain(
        "[12:01:02] /project/cpp/json_schema_converter.cc:4944: Invalid range: minimum greater than maximum"
    ) == ("Invalid range: minimum greater than maximum.")
    assert plain("min_tokens must be less than or equal to max_tokens=16, got 20.") == (
        "min_tokens must be less than or equal to max_tokens."
    )


# --- the adapter's output reading --------------------------------------------------------------------------------


class FakeTokenizer:
    def __len__(self) -> int:
        return 100


class FakeModelConfig:
    is_multimodal_model = False  # a text-only model: it takes no images
    multimodal_config = None

    def get_diff_sampling_param(self) -> dict[str, Any]:
        return {}  # a model without sampling defaults in its generation_config.json


class FakeLLM:
    """What ``VLLMGenerator`` uses of ``AsyncLLM``: its tokenizer, its model config and a ``generate`` that plays
    outputs back."""

    def __init__(self, outputs: list[RequestOutput]) -> None:
        self.model_config = FakeModelConfig()
        self.vllm_config = SimpleNamespace(scheduler_config=SimpleNamespace(policy="fcfs"))
        self.outputs = outputs
        self.closed = False
        self.errored = False
        self.lora_requests: list[Any] = []
        self.priorities: list[int] = []
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    async def generate(
        self, *_args: Any, lora_request: Any = None, priority: int = 0
    ) -> AsyncGenerator[RequestOutput, None]:
        self.lora_requests.append(lora_request)
        self.priorities.append(priority)
        try:
            for output in self.outputs:
                yield output
        except GeneratorExit:
            self.closed = True
            raise


def output(text: str, finish_reason: str | None, finished: bool = False) -> RequestOutput:
    choice = CompletionOutput(
        index=0, text=text, token_ids=[1] if text else [], cumulative_logprob=None, logprobs=None,
        finish_reason=finish_reason,
    )  # fmt: skip
    return RequestOutput(
        request_id="r", prompt=None, prompt_token_ids=[1, 2], prompt_logprobs=None, outputs=[choice],
        finished=finished,
    )  # fmt: skip


def generator(outputs: list[RequestOutput]) -> tuple[VLLMGenerator, FakeLLM]:
    llm = FakeLLM(outputs)
    return VLLMGenerator(llm), llm  # type: ignore[arg-type]


async def test_finish_reason_error_is_a_failure_not_a_stop() -> None:
    engine, _ = generator([output("The capital", None), output("", "error", finished=True)])
    steps = engine.generate([1, 2], SamplingOptions(max_tokens=8), "r")
    first = await anext(steps)
    assert first.choices[0].text == "The capital"
    with pytest.raises(EngineFailedError):
        await anext(steps)


async def test_an_abort_from_the_engine_is_unavailable() -> None:
    engine, _ = generator([output("", "abort", finished=True)])
    with pytest.raises(EngineUnavailableError):
        await anext(engine.generate([1, 2], SamplingOptions(max_tokens=8), "r"))


async def test_closing_the_stream_closes_vllms_generator_without_gc() -> None:
    engine, llm = generator([output("a", None), output("b", None), output("c", "stop", finished=True)])
    gc.disable()
    try:
        steps = engine.generate([1, 2], SamplingOptions(max_tokens=8), "r")
        await anext(steps)
        await steps.aclose()
        assert llm.closed
    finally:
        gc.enable()


async def test_an_adapters_view_sends_its_lora_request_and_owns_no_engine() -> None:
    from vllm.lora.request import LoRARequest

    engine, llm = generator([output("a", "stop", finished=True)])
    adapter = LoRARequest(lora_name="tuned", lora_int_id=1, lora_path="/adapters/tuned")
    view = engine.with_adapter(adapter)
    for served in (view, engine):
        async for _step in served.generate([1], SamplingOptions(max_tokens=8), "r"):
            pass
    assert llm.lora_requests == [adapter, None]
    view.shutdown()
    assert not llm.shut_down


@pytest.mark.parametrize(("policy", "sent"), [("priority", [1, 0]), ("fcfs", [0, 0])])
async def test_a_batch_lines_priority_reaches_vllm_only_when_it_schedules_by_priority(
    policy: str, sent: list[int]
) -> None:
    """vLLM refuses a priority other than 0 under "fcfs": the request context's priority goes only to an engine
    configured with ``scheduling_policy: priority``."""
    llm = FakeLLM([output("a", "stop", finished=True)])
    llm.vllm_config.scheduler_config.policy = policy
    engine = VLLMGenerator(llm)  # type: ignore[arg-type]
    for priority in (1, 0):
        token = bind(RequestContext("r", priority=priority))
        try:
            async for _step in engine.generate([1], SamplingOptions(max_tokens=8), "r"):
                pass
        finally:
            token.var.reset(token)
    assert llm.priorities == sent
