"""How often the default model calls a tool under ``tool_choice: auto``: 20 prompts that need a tool, 20 that do
not, and the chunk count of each streamed answer. Run against a served model:

    python -m benchmarks.tool_choice --base-url http://localhost:3000/v1 --api-key "$OPENAI_API_KEY"
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import openai

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount of money between currencies at today's rate",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                },
                "required": ["amount", "source", "target"],
            },
        },
    },
]
CITIES = ["Paris", "Tokyo", "Berlin", "Lima", "Cairo", "Oslo", "Sydney", "Toronto", "Madrid", "Seoul"]
NEEDS_TOOL = [f"What is the weather in {city} right now?" for city in CITIES] + [
    f"Convert {amount} US dollars to {currency}." for amount, currency in zip(
        [10, 25, 50, 100, 7, 300, 12, 80, 1000, 5],
        ["euros", "yen", "pounds", "pesos", "francs", "rupees", "won", "kroner", "yuan", "reais"], strict=True)
]  # fmt: skip
CHIT_CHAT = [
    "Hello! How are you?", "Tell me a joke.", "What is your name?", "Write a haiku about the sea.",
    "What is the capital of France?", "Say something nice.", "What is 2 + 2?", "Who wrote Hamlet?",
    "Give me a synonym for happy.", "What colour is the sky?", "Thank you!", "Good morning!",
    "Name a fruit.", "What do cats eat?", "Describe a tree in one sentence.", "What is a verb?",
    "Recommend a book.", "How many days are in a week?", "What is music?", "Goodbye!",
]  # fmt: skip


def run(client: openai.OpenAI, model: str, prompt: str) -> tuple[bool, int]:
    chunks, called = 0, False
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS, max_tokens=64, temperature=0,
        stream=True,
    )  # fmt: skip
    for chunk in stream:
        chunks += 1
        called = called or any(choice.delta.tool_calls for choice in chunk.choices)
    return called, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://localhost:3000/v1")
    parser.add_argument("--api-key", default="-")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    for name, prompts in (("needs a tool", NEEDS_TOOL), ("chit-chat", CHIT_CHAT)):
        results = [run(client, args.model, prompt) for prompt in prompts]
        calls = sum(called for called, _ in results)
        chunks = [count for _, count in results]
        print(f"{name}: {calls}/{len(prompts)} called a tool; chunks per stream median {statistics.median(chunks)}, "
              f"min {min(chunks)}, max {max(chunks)}")  # fmt: skip


if __name__ == "__main__":
    main()
