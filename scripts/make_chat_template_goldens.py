#!/usr/bin/env python3
"""Renders the published chat templates of tests/golden/chat_templates/ over
fixed conversations and writes tests/golden/chat_templates/goldens.json, the
expectations of tests/unit/chat_template_golden_test.cc (paged's Jinja engine
must give the same bytes, or fail where the template raises).

The renderer is transformers' own apply_chat_template(tokenize=False) when
transformers is importable: each template is set on a tokenizer built here
with no network (a WordLevel vocabulary holding the template's BOS and EOS
tokens), and strftime_now is replaced by a fixed clock through the template
variables. Without transformers it is plain jinja2 configured as transformers
configures it (ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks
and the loopcontrols extension; its tojson filter; raise_exception;
strftime_now) and called with the variables transformers passes (messages,
tools=None, documents=None, add_generation_prompt, bos_token, eos_token). The
JSON names the renderer and its version.

strftime_now returns 2026-01-15 10:30:00 in both renderers, as the C++ test's
clock does.

Usage:
  python3 scripts/make_chat_template_goldens.py            # writes goldens.json
  python3 scripts/make_chat_template_goldens.py --check    # re-renders, compares
  python3 scripts/make_chat_template_goldens.py --jinja2   # jinja2 even with transformers
"""

import argparse
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "tests", "golden", "chat_templates")
GOLDENS = os.path.join(DIR, "goldens.json")

# The fixed clock of strftime_now (a Thursday).
FIXED_NOW = datetime.datetime(2026, 1, 15, 10, 30, 0)

# Each template with the special tokens its tokenizer_config.json names (None:
# the tokenizer has none, and the template variable is not defined).
TEMPLATES = [
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", None, "<|im_end|>"),
    ("Qwen-Qwen3-0.6B.jinja", None, "<|im_end|>"),
    ("mistralai-Mistral-7B-Instruct-v0.3.jinja", "<s>", "</s>"),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
    ("google-gemma-3-it.jinja", "<bos>", "<eos>"),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>"),
    ("openai-gpt-oss-120b.jinja", "<|startoftext|>", "<|return|>"),
]


def msg(role, content):
    return {"role": role, "content": content}


# Conversations of system / user / assistant messages (paged's roles), each
# rendered with add_generation_prompt true and false. Some make some templates
# raise (Gemma has no system role before Gemma 3; Gemma and Mistral want
# user / assistant alternation; gpt-oss refuses channel tags in content).
CONVERSATIONS = {
    "user": [msg("user", "Hello!")],
    "system_user": [
        msg("system", "You are a helpful assistant."),
        msg("user", "What is 2+2?"),
    ],
    "multi_turn": [
        msg("user", "Hi"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "Tell me a joke."),
    ],
    "system_multi_turn": [
        msg("system", "You are terse."),
        msg("user", "Hi"),
        msg("assistant", "Hello!"),
        msg("user", "How are you?"),
    ],
    "ends_with_assistant": [
        msg("user", "Say hi."),
        msg("assistant", " Hi there. "),
    ],
    "long": [
        msg("system", "Count with me."),
        msg("user", "one"),
        msg("assistant", "two"),
        msg("user", "three"),
        msg("assistant", "four"),
        msg("user", "five"),
        msg("assistant", "six"),
        msg("user", "seven"),
    ],
    # Leading / trailing spaces, newlines and tabs, non-ASCII text, an emoji,
    # and Unicode spaces that Python's strip() removes.
    "whitespace_unicode": [
        msg("system", "  Réponds en français.\n"),
        msg("user", "  Ünïcödé ✓ 日本語 😀\nline two\n\n"),
        msg("assistant", "\tOK → done \u00a0"),
        msg("user", "\u00a0\u3000 both sides\u2003\n"),
    ],
    "empty_content": [msg("user", "")],
    # Text that looks like template syntax or special tokens is data.
    "template_like_text": [
        msg("user", "literal <|im_end|> </s> <end_of_turn> {{ braces }} {% if x %} {# c #}"),
    ],
    "system_only": [msg("system", "Only a system message.")],
    "assistant_first": [msg("assistant", "I speak first."), msg("user", "ok")],
    "two_users": [msg("user", "a"), msg("user", "b")],
    "system_in_middle": [
        msg("user", "a"),
        msg("assistant", "b"),
        msg("system", "late system"),
        msg("user", "c"),
    ],
    # Qwen3 drops the reasoning of assistant turns before the last user turn.
    "thinking": [
        msg("user", "Q1"),
        msg("assistant", "<think>\nReasoning one.\n</think>\n\nA1"),
        msg("user", "Q2"),
        msg("assistant", "<think>\nReasoning two.\n</think>\n\nA2"),
    ],
    "channel_tags": [
        msg("user", "Q"),
        msg("assistant", "<|channel|>final<|message|>A"),
        msg("user", "Q2"),
    ],
}


def fixed_strftime_now(fmt):
    return FIXED_NOW.strftime(fmt)


class Jinja2Renderer:
    """jinja2 configured as transformers' _compile_jinja_template."""

    def __init__(self):
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.name = f"jinja2 {jinja2.__version__} (configured as transformers)"
        self.jinja2 = jinja2

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = fixed_strftime_now
        self.env = env

    def render(self, source, bos, eos, messages, add_generation_prompt):
        template = self.env.from_string(source)
        variables = {}
        if bos is not None:
            variables["bos_token"] = bos
        if eos is not None:
            variables["eos_token"] = eos
        return template.render(messages=messages, tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt, **variables)


class TransformersRenderer:
    """transformers' apply_chat_template on a tokenizer built locally."""

    def __init__(self):
        import transformers
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel

        try:
            from transformers import PreTrainedTokenizerFast as Fast
        except ImportError:  # transformers 5 may name it TokenizersBackend only
            from transformers import TokenizersBackend as Fast
        self.name = f"transformers {transformers.__version__} (apply_chat_template)"
        self.Tokenizer = Tokenizer
        self.WordLevel = WordLevel
        self.Fast = Fast
        self.cache = {}

    def tokenizer(self, source, bos, eos):
        key = (source, bos, eos)
        if key not in self.cache:
            vocab = {"<unk>": 0}
            for t in (bos, eos):
                if t is not None and t not in vocab:
                    vocab[t] = len(vocab)
            kwargs = {}
            if bos is not None:
                kwargs["bos_token"] = bos
            if eos is not None:
                kwargs["eos_token"] = eos
            tok = self.Fast(tokenizer_object=self.Tokenizer(self.WordLevel(vocab, unk_token="<unk>")),
                            **kwargs)
            tok.chat_template = source
            self.cache[key] = tok
        return self.cache[key]

    def render(self, source, bos, eos, messages, add_generation_prompt):
        tok = self.tokenizer(source, bos, eos)
        # A template variable named strftime_now overrides the global.
        out = tok.apply_chat_template(messages, tokenize=False,
                                      add_generation_prompt=add_generation_prompt,
                                      strftime_now=fixed_strftime_now)
        if not isinstance(out, str):
            raise SystemExit(f"apply_chat_template returned {type(out).__name__}, not str")
        return out


def make_renderer(force_jinja2):
    if not force_jinja2:
        try:
            return TransformersRenderer()
        except ImportError as e:
            print(f"transformers not importable ({e}); rendering with jinja2", file=sys.stderr)
    return Jinja2Renderer()


def render_all(renderer):
    templates = []
    for file, bos, eos in TEMPLATES:
        with open(os.path.join(DIR, file), encoding="utf-8") as f:
            source = f.read()
        cases = []
        for name, messages in CONVERSATIONS.items():
            for gen in (True, False):
                case = {"conversation": name, "add_generation_prompt": gen}
                try:
                    case["rendered"] = renderer.render(source, bos, eos, messages, gen)
                except Exception as e:  # noqa: BLE001 - any error of the template
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
        templates.append({"file": file, "bos_token": bos, "eos_token": eos, "cases": cases})
    # The clock override must have reached the templates that read it.
    gpt = next(t for t in templates if t["file"].startswith("openai-gpt-oss"))
    rendered = [c["rendered"] for c in gpt["cases"] if "rendered" in c]
    if not rendered or "Current date: 2026-01-15" not in rendered[0]:
        raise SystemExit("the fixed strftime_now did not reach the gpt-oss template")
    return templates


def compare(old, new):
    """Differences between two goldens' templates, as lines."""
    out = []
    old_by_file = {t["file"]: t for t in old["templates"]}
    for t in new["templates"]:
        o = old_by_file.get(t["file"])
        if o is None:
            out.append(f"{t['file']}: not in the committed goldens")
            continue
        old_cases = {(c["conversation"], c["add_generation_prompt"]): c for c in o["cases"]}
        for c in t["cases"]:
            k = (c["conversation"], c["add_generation_prompt"])
            oc = old_cases.get(k)
            label = f"{t['file']} {k[0]} add_generation_prompt={k[1]}"
            if oc is None:
                out.append(f"{label}: not in the committed goldens")
            elif ("rendered" in oc) != ("rendered" in c):
                out.append(f"{label}: committed {'text' if 'rendered' in oc else 'error'}, "
                           f"now {'text' if 'rendered' in c else 'error: ' + c['error']}")
            elif oc.get("rendered") != c.get("rendered"):
                out.append(f"{label}: text differs\n  committed {oc['rendered']!r}\n"
                           f"  now       {c['rendered']!r}")
    if old["conversations"] != new["conversations"]:
        out.append("the conversations differ")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="re-render and compare with the committed goldens.json")
    ap.add_argument("--jinja2", action="store_true", help="render with jinja2 even with transformers")
    args = ap.parse_args()
    renderer = make_renderer(args.jinja2)
    goldens = {
        "renderer": renderer.name,
        "strftime_now": FIXED_NOW.isoformat(sep=" "),
        "conversations": CONVERSATIONS,
        "templates": render_all(renderer),
    }
    if args.check:
        with open(GOLDENS, encoding="utf-8") as f:
            committed = json.load(f)
        diffs = compare(committed, goldens)
        print(f"committed goldens by {committed['renderer']}; re-rendered by {renderer.name}")
        for d in diffs:
            print(d)
        n = sum(len(t["cases"]) for t in goldens["templates"])
        print(f"{n} cases, {len(diffs)} differences")
        return 1 if diffs else 0
    with open(GOLDENS, "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(t["cases"]) for t in goldens["templates"])
    errors = sum(1 for t in goldens["templates"] for c in t["cases"] if "error" in c)
    print(f"wrote {GOLDENS}: {len(TEMPLATES)} templates, {n} cases ({errors} raise), "
          f"by {renderer.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
