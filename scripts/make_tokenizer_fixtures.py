#!/usr/bin/env python3
"""Builds the HF tokenizer fixtures of tests/unit/hf_tokenizer_test.cc.

There is no model hub here, so the tokenizers are CONSTRUCTED: a small BPE is
trained with HF `tokenizers` on the corpus below, then its tokenizer.json is
rewritten into the shape of a real family and reloaded, and the reloaded
tokenizer (the file as saved) gives the expected ids:

  llama3_bpe   byte-level BPE as Llama 3: Split(Llama 3 regex, Isolated) +
               ByteLevel(use_regex=false), ignore_merges, merges as [a, b]
               pairs, TemplateProcessing adding <|begin_of_text|>.
  qwen2_bpe    byte-level BPE as Qwen2: NFC, Split(Qwen2 regex), merges as
               "a b" strings, no BOS, <|im_start|>/<|im_end|>/<|endoftext|>,
               plus non-special added tokens (<think>, single_word "dog",
               normalized "Ökonom") and a special with lstrip/rstrip.
  llama2_spbpe SentencePiece-style BPE as Llama 2 / Mistral: byte_fallback
               (<0x00>..<0xFF>), Prepend("▁") + Replace(" ", "▁") normalizer,
               Replace/ByteFallback/Fuse/Strip decoder, <s> added by the
               template.
  metaspace_spbpe  the same model with the older Metaspace pre-tokenizer
               (prepend_scheme "first", split false) and Metaspace decoder.

For each it writes tests/golden/tokenizers/<name>/{tokenizer.json,
tokenizer_config.json, generation_config.json (some), cases.json}. cases.json
holds, per pinned text: ids with add_special_tokens True and False, ids with
encode_special_tokens (special tokens as plain text), the tokens, and the
decode of the ids with skip_special_tokens. chat_cases.json holds chat
templates rendered by transformers (for the chat-template tests), when
transformers loads the directory.

Usage: python3 scripts/make_tokenizer_fixtures.py --out DIR
Deterministic: a pinned corpus and pinned texts, single-threaded training, and
the SentencePiece alphabet chosen here rather than by the trainer (whose
limit_alphabet breaks ties in Rust hash order: the committed llama2_spbpe and
metaspace_spbpe fixtures come from the revision that still used it, so a
re-run changes those two, consistently within each directory).
"""

import argparse
import collections
import json
import os
import sys
import traceback

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
import tokenizers  # noqa: E402

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
    "One day, she saw a big, red ball in the park. She wanted to play with it, but it was not hers.",
    "The quick brown fox jumps over the lazy dog. The dog didn't care; it was sleeping.",
    "I'm sure you'll like it. We're going to the market, aren't we? They've said it's fine.",
    "It's a truth universally acknowledged that a single model in possession of good weights must be in want of a GPU.",
    "Paging layers through device slots lets a small GPU serve a large model, one layer at a time.",
    "The coordinator batches sequences, routes them to workers and commits the KV write-back.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 65536 3.14159 2.71828 1e-6 1,000,000 2024-05-17.",
    "Prices went from $19.99 to $24.50 (a 22.6% increase) between Q1 and Q3.",
    "def forward(self, x):\n    h = self.attention(self.norm(x))\n    return x + self.ffn(h)\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
    "import numpy as np\nprint(np.arange(10).reshape(2, 5))\n",
    '{"name": "paged", "layers": 32, "heads": [8, 8], "ok": true}',
    "<html><head><title>Page</title></head><body><p>Hello</p></body></html>",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "Café, naïve, résumé, façade, jalapeño, Über, Øresund, smörgåsbord.",
    "Die Straße ist lang. Ökonomen lesen Bücher über Märkte.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "日本語の文章を少し書きます。東京は大きな都市です。",
    "中文文本也在这里。我们喜欢学习新的语言。",
    "Ελληνικά: Η γρήγορη καφέ αλεπού πηδάει πάνω από τον σκύλο.",
    "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "한국어 문장도 있습니다. 감사합니다.",
    "العربية: مرحبا بالعالم.",
    "Emoji: 😀 😃 👍 🎉 ❤️ 🚀 🌍",
    "Tabs\tand\tspaces   and\n\nnewlines\r\nmixed  together.",
    "Well... that's odd -- isn't it? Yes! No? Maybe; maybe not: who knows.",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=2.",
    "The model said: \"Hello, world!\" and then 'goodbye'.",
    "She SAID it's OK, I'M FINE, YOU'LL SEE, THEY'D KNOW.",
]

# Pinned test texts (the fixture cases).
TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    "Once upon a time, there was a little girl named Lily.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "\n\n\n",
    "  a   b",
    "\ttab\tseparated\tvalues\t",
    "line one\nline two\r\nline three\n\n",
    "12345678",
    "3.14159 and 2,718 and 1e10 and 007",
    "I'm, you'll, 'S, WE'RE, they'd've, it's",
    "café, naïve, résumé, Ökonom, Øresund",
    "O\u0308konom and e\u0301 (decomposed)",
    "日本語のテキスト",
    "中文文本",
    "Ελληνικά κείμενο",
    "Русский текст",
    "emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇯🇵",
    "zero\u200bwidth\u00a0nbsp\u2003em\u3000ideographic",
    "math: ∑ x² ≤ ∞ — “quotes” … ½",
    "\u0000 control \u0007 chars \u007f del \u0085 nel \u000b vt",
    "def f(x):\n    return x * 2  # code\n",
    '{"json": [1, 2, 3], "nested": {"a": null}}',
    "<html><body>tag</body></html>",
    "<|begin_of_text|>Hello<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "<s>[INST] hi [/INST]</s>",
    "<s>Hello",
    "Hello<s> world</s>",
    "</s>after",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_end|>",
    "dog hotdog dogs dog. (dog)",
    "<think>reasoning</think>answer",
    "a <|box|>  b",
    "<unk> <0x41>",
    "",
    " ",
    "quokka zyzzyva",
    " quokka",
    "zyzzyva",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "The dog didn't care; it was sleeping.",
    "%%%%%%%%%%%%!!!!!!!!?????",
    "\u0300\u0301 combining marks alone",
]
LONG_TEXT = "\n\n".join(CORPUS) + "\n" + " ".join(CORPUS[:8])

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)
CHAT_MESSAGES = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
]


def log(*args):
    print(*args, flush=True)


def train(model, pre_tokenizer, normalizer, vocab_size, special_tokens, initial_alphabet=None,
          limit_alphabet=None):
    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    kwargs = dict(vocab_size=vocab_size, min_frequency=2, special_tokens=special_tokens,
                  show_progress=False)
    if initial_alphabet is not None:
        kwargs["initial_alphabet"] = initial_alphabet
    if limit_alphabet is not None:
        kwargs["limit_alphabet"] = limit_alphabet
    trainer = trainers.BpeTrainer(**kwargs)
    # A few passes over the corpus so that pairs reach min_frequency.
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    return json.loads(tok.to_str())


def merges_as_pairs(merges):
    return [m.split(" ") if isinstance(m, str) else list(m) for m in merges]


def merges_as_strings(merges):
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def added(content, id_, special=True, normalized=None, lstrip=False, rstrip=False, single_word=False):
    return {
        "id": id_, "content": content, "single_word": single_word, "lstrip": lstrip,
        "rstrip": rstrip, "normalized": (not special) if normalized is None else normalized,
        "special": special,
    }


def template(bos, bos_id):
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def append_tokens(vocab, tokens):
    """Appends tokens (not already there) to a {token: id} vocab; returns their ids."""
    ids = {}
    for t in tokens:
        if t not in vocab:
            vocab[t] = max(vocab.values()) + 1
        ids[t] = vocab[t]
    return ids


# ---- the four tokenizers --------------------------------------------------------

def build_llama3():
    d = train(models.BPE(),
              pre_tokenizers.Sequence([
                  pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                  pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
              None, 1100, [], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    m = d["model"]
    # Whole words the merges cannot build: ignore_merges takes them as they are.
    append_tokens(m["vocab"], ["Ġquokka", "zyzzyva"])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|reserved_special_token_2|>", "<|eot_id|>"]
    base = max(m["vocab"].values()) + 1
    d["added_tokens"] = [added(s, base + i) for i, s in enumerate(specials)]
    m["ignore_merges"] = True
    m["merges"] = merges_as_pairs(m["merges"])
    d["normalizer"] = None
    d["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    d["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        template("<|begin_of_text|>", base)]}
    config = {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False, "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    generation = {"bos_token_id": base, "eos_token_id": [base + 1, base + 7], "do_sample": False}
    return d, config, generation


def build_qwen2():
    d = train(models.BPE(),
              pre_tokenizers.Sequence([
                  pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                  pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]),
              None, 1000, [], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    m = d["model"]
    m["ignore_merges"] = False
    m["merges"] = merges_as_strings(m["merges"])
    # Whole words in the vocab: without ignore_merges they are NOT taken whole.
    append_tokens(m["vocab"], ["Ġquokka", "zyzzyva"])
    base = max(m["vocab"].values()) + 1
    d["added_tokens"] = [
        added("<|endoftext|>", base),
        added("<|im_start|>", base + 1),
        added("<|im_end|>", base + 2),
        added("<think>", base + 3, special=False, normalized=False),
        added("</think>", base + 4, special=False, normalized=False),
        added("dog", base + 5, special=False, normalized=False, single_word=True),
        added("Ökonom", base + 6, special=False, normalized=True),
        added("<|box|>", base + 7, lstrip=True, rstrip=True),
    ]
    d["normalizer"] = {"type": "NFC"}
    d["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    d["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False}
    config = {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "add_bos_token": False, "chat_template": CHATML_TEMPLATE, "clean_up_tokenization_spaces": False,
        "errors": "replace", "model_max_length": 32768, "tokenizer_class": "PreTrainedTokenizerFast",
        "split_special_tokens": False,
    }
    generation = {"eos_token_id": [base + 2, base], "pad_token_id": base}
    return d, config, generation


def top_chars(n):
    """The n most frequent characters of the corpus as Metaspace sees it, ties
    broken by code point. (The trainer's own limit_alphabet breaks ties in Rust
    hash order, which differs from run to run.)"""
    counts = collections.Counter(ch for line in CORPUS for ch in "▁" + line.replace(" ", "▁"))
    return [ch for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def sp_model():
    alphabet = top_chars(70)
    d = train(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True),
              pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
              None, 700, ["<unk>", "<s>", "</s>"], initial_alphabet=alphabet,
              limit_alphabet=len(alphabet))
    m = d["model"]
    old = m["vocab"]
    # Llama's layout: <unk> <s> </s>, the 256 byte tokens, then the pieces.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for tok, _ in sorted(old.items(), key=lambda kv: kv[1]):
        if tok not in vocab:
            vocab[tok] = len(vocab)
    m["vocab"] = vocab
    m.update({"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "dropout": None})
    m["merges"] = merges_as_strings(m["merges"])
    d["added_tokens"] = [added("<unk>", 0), added("<s>", 1), added("</s>", 2)]
    return d


def build_llama2():
    d = sp_model()
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    d["pre_tokenizer"] = None
    d["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    d["post_processor"] = template("<s>", 1)
    config = {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False, "chat_template": LLAMA2_CHAT_TEMPLATE, "legacy": True,
        "clean_up_tokenization_spaces": False, "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return d, config, None


def build_metaspace():
    d = sp_model()
    d["normalizer"] = None
    d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    d["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"},
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}]}
    d["post_processor"] = template("<s>", 1)
    config = {
        "bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "__type": "AddedToken"},
        "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": [{"name": "default", "template": LLAMA2_CHAT_TEMPLATE},
                          {"name": "tool_use", "template": "{{ 'tools' }}"}],
        "clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return d, config, None


# ---- cases ------------------------------------------------------------------------

def encode_ids(tok, text, add_special):
    return tok.encode(text, add_special_tokens=add_special).ids


def make_cases(tok):
    cases = []
    split_ok = hasattr(tok, "encode_special_tokens")
    for text in TEXTS + [LONG_TEXT]:
        enc = tok.encode(text, add_special_tokens=True)
        case = {
            "text": text,
            "ids": enc.ids,
            "ids_no_special": encode_ids(tok, text, False),
            "decoded": tok.decode(enc.ids, skip_special_tokens=True),
        }
        if text is not LONG_TEXT:
            case["tokens"] = enc.tokens
        if split_ok:
            tok.encode_special_tokens = True
            try:
                case["ids_split_special"] = encode_ids(tok, text, True)
            finally:
                tok.encode_special_tokens = False
        cases.append(case)
    return cases


def check_transformers(out_dir, tok, name):
    """Compares transformers' ids with tokenizers' and renders the chat template."""
    try:
        import transformers
        from transformers import AutoTokenizer
    except Exception as e:  # noqa: BLE001
        log(f"{name}: transformers unavailable: {e}")
        return None
    try:
        t = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        log(f"{name}: AutoTokenizer failed: {e!r}")
        return None
    log(f"{name}: transformers {transformers.__version__} loaded {type(t).__name__}")
    mismatches = 0
    for text in TEXTS:
        for add in (True, False):
            try:
                got = t(text, add_special_tokens=add)["input_ids"]
            except Exception as e:  # noqa: BLE001
                log(f"{name}: transformers encode failed on {text!r}: {e!r}")
                continue
            want = tok.encode(text, add_special_tokens=add).ids
            if got != want:
                mismatches += 1
                if mismatches <= 5:
                    log(f"{name}: transformers differs (add_special={add}) on {text!r}: {got} vs {want}")
    log(f"{name}: {mismatches} transformers mismatches")
    chats = []
    for messages in CHAT_MESSAGES:
        for gen in (True, False):
            try:
                rendered = t.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
                chats.append({"messages": messages, "add_generation_prompt": gen, "rendered": rendered})
            except Exception as e:  # noqa: BLE001
                log(f"{name}: apply_chat_template failed: {e!r}")
    return chats


def write_json(path, obj, compact=False):
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def build(out_root, name, builder):
    d, config, generation = builder()
    tok = Tokenizer.from_str(json.dumps(d))  # the file as saved is the reference
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok.to_str())
        f.write("\n")
    write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    if generation is not None:
        write_json(os.path.join(out_dir, "generation_config.json"), generation)
    cases = make_cases(tok)
    write_json(os.path.join(out_dir, "cases.json"), {
        "tokenizer": name, "tokenizers_version": tokenizers.__version__,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True), "cases": cases}, compact=True)
    chats = check_transformers(out_dir, tok, name)
    if chats:
        write_json(os.path.join(out_dir, "chat_cases.json"), chats)
    log(f"{name}: vocab {tok.get_vocab_size(with_added_tokens=True)}, {len(cases)} cases -> {out_dir}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    log(f"python {sys.version.split()[0]}, tokenizers {tokenizers.__version__}")
    failed = 0
    for name, builder in [("llama3_bpe", build_llama3), ("qwen2_bpe", build_qwen2),
                          ("llama2_spbpe", build_llama2), ("metaspace_spbpe", build_metaspace)]:
        try:
            build(args.out, name, builder)
        except Exception:  # noqa: BLE001
            failed += 1
            log(f"{name}: FAILED")
            traceback.print_exc(file=sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
