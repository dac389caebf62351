"""What the llama.cpp-oracle fixture scripts share (make_arch_fixtures.py,
make_moe_gguf_fixtures.py): their command line, llama.cpp's gguf-py and
logits runner, the GGUF writing boilerplate, and how expected.json writes
and compares logits."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np


def arg_parser(doc):
    """OUTDIR [CASE ...] --llama-cpp DIR --runner LLAMA_LOGITS; the first line
    of `doc` describes it."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp checkout (gguf-py)")
    ap.add_argument("--runner", required=True, help="the llama_logits binary")
    return ap


def check_cases(requested, cases):
    """Exits naming the requested case names that are not in `cases`."""
    names = {c["name"] for c in cases}
    unknown = set(requested) - names
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)} (known: {sorted(names)})")


def import_gguf(llama_cpp):
    """llama.cpp's own gguf-py (its writer and reader) from the checkout."""
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    import gguf  # noqa: E402
    return gguf


def llama_commit(llama_cpp):
    """The checkout's short commit ("unknown" outside git)."""
    return subprocess.run(["git", "-C", llama_cpp, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def token_ids(n, vocab):
    """The fixed token sequence: bos, then a spread over [3, vocab)."""
    ids = [1]
    for k in range(1, n):
        ids.append(3 + (k * 37 + (k * k) % 13) % (vocab - 3))
    return ids


def add_shape(w, n_ctx, hidden, layers, ffn, heads, kv_heads, head_dim):
    """The {arch}.* size keys of a GGUFWriter, in the order both scripts write them."""
    w.add_context_length(n_ctx)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)


def finish_gguf(w):
    """Writes a GGUFWriter's header, metadata and tensors, and closes it."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run_logits(runner, path, n_ctx, tokens, vocab, kv="f32"):
    """llama.cpp's logits [position, vocab] (float64) of `tokens` on the GGUF
    at `path`: the runner decodes them in one batch, with an f32 (or, kv
    "f16", f16) KV cache."""
    env = dict(os.environ, LLAMA_LOGITS_KV=kv)
    res = subprocess.run([runner, path, str(n_ctx)] + [str(t) for t in tokens],
                         capture_output=True, text=True, check=True, env=env)
    logits = np.array(json.loads(res.stdout)["logits"], dtype=np.float64)
    assert logits.shape == (len(tokens), vocab), logits.shape
    return logits


def fmt(x):
    """A logit as expected.json stores it (9 significant digits)."""
    return float("%.9g" % x)


def rel_err(a, b):
    """The largest over positions (rows) of ||a - b|| / ||b||."""
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))
