#!/usr/bin/env python3
"""Drives a running `paged --http` with the official OpenAI Python client.

usage: openai_client_check.py BASE_URL [EXPECTED_PREFIX]

Lists the models, runs a greedy completion (whole and streamed) and a chat
completion (whole and streamed), and checks that whole and streamed answers
agree and that the completion starts with EXPECTED_PREFIX when given. Exits 0
when every check passes, 1 otherwise, 3 when the `openai` package is missing
(Debian has no python3-openai; the tests use curl instead).
"""
import sys

try:
    import openai
except ImportError:
    print("openai_client_check: the openai package is not installed")
    sys.exit(3)


def main() -> int:
    base = sys.argv[1]
    expected = sys.argv[2] if len(sys.argv) > 2 else ""
    client = openai.OpenAI(base_url=base, api_key="unused")
    failures = []

    models = [m.id for m in client.models.list().data]
    print("models:", models)
    if len(models) != 1:
        failures.append("expected one model")
    model = models[0]

    whole = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40, temperature=0)
    text = whole.choices[0].text
    print("completion:", repr(text), whole.choices[0].finish_reason, whole.usage)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=model, prompt="Once upon a time", max_tokens=40, temperature=0, stream=True
        )
        if c.choices
    )
    if streamed != text:
        failures.append(f"streamed completion differs: {streamed!r}")
    if expected and not text.startswith(expected):
        failures.append(f"completion does not start with {expected!r}")
    if whole.usage.completion_tokens != 40 and whole.choices[0].finish_reason == "length":
        failures.append("usage.completion_tokens != max_tokens")

    messages = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Tell me one."}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=30, temperature=0)
    reply = chat.choices[0].message.content
    print("chat:", repr(reply), chat.choices[0].finish_reason)
    parts = []
    for c in client.chat.completions.create(
        model=model, messages=messages, max_tokens=30, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ):
        if c.choices and c.choices[0].delta.content:
            parts.append(c.choices[0].delta.content)
    if "".join(parts) != reply:
        failures.append(f"streamed chat differs: {''.join(parts)!r}")

    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        failures.append("an unknown model was accepted")
    except openai.NotFoundError as e:
        print("unknown model:", e.status_code)
    try:
        client.completions.create(model=model, prompt="x", max_tokens=1, n=2)
        failures.append("n=2 was accepted")
    except openai.BadRequestError as e:
        print("n=2:", e.status_code)

    for f in failures:
        print("FAIL:", f)
    print("openai_client_check:", "ok" if not failures else f"{len(failures)} failure(s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
