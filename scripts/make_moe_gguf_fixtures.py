#!/usr/bin/env python3
"""MoE GGUF fixtures with quantized experts, llama.cpp as the oracle
(tests/golden/arch/moe_gguf/).

Each case is a tiny random mixture-of-experts model written as an F16 GGUF
with llama.cpp's gguf-py (llama.cpp's names and {arch}.* metadata, as
convert_hf_to_gguf.py makes them: experts as 3-D tensors
ffn_{gate,up,down}_exps, ne = [cols, rows, experts]) and then quantized by
llama.cpp's own llama-quantize (its per-tensor mixes). Every matrix row is a
whole number of 256-value super-blocks (hidden 256, expert ffn 256), so the
K-quants apply to every matrix, the experts included.

For every quantized file the script records llama.cpp's logits twice:

  quantized     llama.cpp on the file as it is. Its CPU products quantize
                the activations (q8_0 / q8_K blocks), so these logits lie
                a few percent from the exact product of the same weights.
  dequantized   llama.cpp on the same file with every tensor dequantized to
                F32 by gguf-py (scripts/gguf_dequantize.py): the same weight
                values as paged decodes from the blocks, computed in f32.

in OUTDIR/expected.json, with the tokens and the tensor types of each file.
tests/unit/moe_gguf_fixture_test.cc runs paged on each file and compares.

Only numpy, llama.cpp's gguf-py and llama.cpp's CPU build are needed:
  /usr/bin/python3 scripts/make_moe_gguf_fixtures.py OUTDIR --llama-cpp LLAMA_CPP \\
      --runner LLAMA_LOGITS [--quantize LLAMA_QUANTIZE] [CASE ...]
LLAMA_LOGITS is the runner of tests/golden/arch/README.md (one llama_decode
of all tokens, f32 KV cache, no flash attention, one thread).
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from gguf_fixture_common import (add_shape, arg_parser, check_cases, finish_gguf, fmt,
                                 import_gguf, llama_commit, rel_err, run_logits, token_ids)

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 256, 4, 2, 64
EXPERT_FFN, EXPERTS, USED, LAYERS, VOCAB = 256, 4, 2, 2, 64
N_CTX = 64

STD_EMBED = 0.5
STD_LINEAR = 0.08  # about 1 / sqrt(256): activations keep their scale
STD_ROUTER = 0.15  # router logits N(0, ~2.4): the top-2 well apart
STD_LM_HEAD = 0.1
STD_BIAS = 0.1
STD_NORM = 0.1

# Each case: its GGUF arch, seed, tokens, and the files made from it as
# (file stem, llama-quantize type, extra llama-quantize flags).
CASES = [
    dict(name="qwen3moe", arch="qwen3moe", seed=3001, n_tokens=16,
         desc="Qwen3-MoE: q/k RMSNorm, NEOX RoPE theta 1e6, 4 experts (ffn 256) "
              "top-2 renormalized, no shared expert",
         files=[("q4_k_m", "Q4_K_M", [])]),
    dict(name="mixtral", arch="llama", seed=3002, n_tokens=16,
         desc="Mixtral: a llama file with experts (llama.expert_count), q/k "
              "rows in llama.cpp's interleaved RoPE order, 4 experts (ffn 256) "
              "top-2 renormalized; Q4_K_M with ffn_gate_exps Q5_K and "
              "ffn_up_exps Q8_0, so that its experts are Q5_K, Q8_0, Q4_K and "
              "Q6_K (ffn_down_exps of layers 0 and 1)",
         files=[("q4_k_m", "Q4_K_M", ["--tensor-type", "ffn_gate_exps=q5_k",
                                      "--tensor-type", "ffn_up_exps=q8_0"])]),
    dict(name="gpt_oss", arch="gpt-oss", seed=3003, n_tokens=16,
         desc="gpt-oss: q/k/v/o biases, a sink per head, layer 0 sliding "
              "(window 6 < 16 tokens), 4 experts (ffn 256) top-2 of the "
              "router's logits with its bias, expert biases, SWIGLU_OAI; "
              "MXFP4_MOE: experts MXFP4, the other matrices Q8_0",
         files=[("mxfp4_moe", "MXFP4_MOE", [])]),
]


def make_tensors(case):
    """{gguf name: f32 array in numpy order (reversed ne)}."""
    rng = np.random.default_rng(case["seed"])
    arch = case["arch"]
    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM

    def normal(shape, std, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    t = {"token_embd.weight": normal((VOCAB, HIDDEN), STD_EMBED),
         "output_norm.weight": normal((HIDDEN,), STD_NORM, 1.0),
         "output.weight": normal((VOCAB, HIDDEN), STD_LM_HEAD)}
    for l in range(LAYERS):
        b = f"blk.{l}."
        t[b + "attn_norm.weight"] = normal((HIDDEN,), STD_NORM, 1.0)
        t[b + "attn_q.weight"] = normal((q_dim, HIDDEN), STD_LINEAR)
        t[b + "attn_k.weight"] = normal((kv_dim, HIDDEN), STD_LINEAR)
        t[b + "attn_v.weight"] = normal((kv_dim, HIDDEN), STD_LINEAR)
        t[b + "attn_output.weight"] = normal((HIDDEN, q_dim), STD_LINEAR)
        if arch == "qwen3moe":
            t[b + "attn_q_norm.weight"] = normal((HEAD_DIM,), STD_NORM, 1.0)
            t[b + "attn_k_norm.weight"] = normal((HEAD_DIM,), STD_NORM, 1.0)
        if arch == "gpt-oss":
            t[b + "attn_q.bias"] = normal((q_dim,), STD_BIAS)
            t[b + "attn_k.bias"] = normal((kv_dim,), STD_BIAS)
            t[b + "attn_v.bias"] = normal((kv_dim,), STD_BIAS)
            t[b + "attn_output.bias"] = normal((HIDDEN,), STD_BIAS)
            t[b + "attn_sinks.weight"] = normal((HEADS,), 1.0)
            # gpt-oss's MLP input norm (no sandwich).
            t[b + "post_attention_norm.weight"] = normal((HIDDEN,), STD_NORM, 1.0)
        else:
            t[b + "ffn_norm.weight"] = normal((HIDDEN,), STD_NORM, 1.0)
        t[b + "ffn_gate_inp.weight"] = normal((EXPERTS, HIDDEN), STD_ROUTER)
        t[b + "ffn_gate_exps.weight"] = normal((EXPERTS, EXPERT_FFN, HIDDEN), STD_LINEAR)
        t[b + "ffn_up_exps.weight"] = normal((EXPERTS, EXPERT_FFN, HIDDEN), STD_LINEAR)
        t[b + "ffn_down_exps.weight"] = normal((EXPERTS, HIDDEN, EXPERT_FFN), STD_LINEAR)
        if arch == "gpt-oss":
            t[b + "ffn_gate_inp.bias"] = normal((EXPERTS,), STD_BIAS)
            t[b + "ffn_gate_exps.bias"] = normal((EXPERTS, EXPERT_FFN), STD_BIAS)
            t[b + "ffn_up_exps.bias"] = normal((EXPERTS, EXPERT_FFN), STD_BIAS)
            t[b + "ffn_down_exps.bias"] = normal((EXPERTS, HIDDEN), STD_BIAS)
    return t


def write_gguf(path, case, gguf):
    arch = case["arch"]
    w = gguf.GGUFWriter(path, arch)
    w.add_name("paged-moe-" + case["name"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_shape(w, N_CTX, HIDDEN, LAYERS, EXPERT_FFN, HEADS, KV_HEADS, HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5 if arch != "qwen3moe" else 1e-6)
    w.add_rope_freq_base(1e6 if arch == "qwen3moe" else 1e4)
    w.add_expert_count(EXPERTS)
    w.add_expert_used_count(USED)
    if arch != "llama":
        w.add_expert_feed_forward_length(EXPERT_FFN)
    if arch == "gpt-oss":
        w.add_sliding_window(6)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("none")
    for name, a in make_tensors(case).items():
        # Matrices in F16 as a converted checkpoint has them; vectors, norms,
        # biases and the router F32 (convert_hf_to_gguf.py keeps them so).
        keep_f32 = a.ndim == 1 or "ffn_gate_inp" in name or name.endswith(".bias")
        w.add_tensor(name, a if keep_f32 else a.astype(np.float16))
    finish_gguf(w)


def main():
    ap = arg_parser(__doc__)
    ap.add_argument("--quantize", help="llama-quantize (default: LLAMA_CPP/build-cpu/bin)")
    a = ap.parse_args()
    gguf = import_gguf(a.llama_cpp)  # llama.cpp's own writer and reader
    gguf_py = os.path.join(a.llama_cpp, "gguf-py")
    quantize = a.quantize or os.path.join(a.llama_cpp, "build-cpu", "bin", "llama-quantize")
    dequantize = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf_dequantize.py")
    commit = llama_commit(a.llama_cpp)
    check_cases(a.cases, CASES)
    os.makedirs(a.outdir, exist_ok=True)
    exp_path = os.path.join(a.outdir, "expected.json")
    exp = {"files": {}}
    if os.path.exists(exp_path):
        with open(exp_path) as f:
            exp = json.load(f)
    exp.update({
        "n_ctx": N_CTX,
        "oracle": "llama.cpp " + commit + " (CPU, f32 KV cache, no flash attention, "
                  "one llama_decode of all tokens, one thread)",
        "note": "Made by scripts/make_moe_gguf_fixtures.py: F16 GGUFs written by gguf-py "
                "(numpy seeds 3001-3003; embed N(0,%g), linear and experts N(0,%g), router "
                "N(0,%g), lm_head N(0,%g), biases N(0,%g), sinks N(0,1), norms 1+N(0,%g)), "
                "quantized by llama-quantize. logits_quantized: llama.cpp on the file; "
                "logits_dequantized: on the file dequantized to F32 by gguf-py; "
                "logits_quantized_kv16_first: on the file with an f16 KV cache (paged's "
                "native segments' own), the first token alone." %
                (STD_EMBED, STD_LINEAR, STD_ROUTER, STD_LM_HEAD, STD_BIAS, STD_NORM),
    })
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if a.cases and case["name"] not in a.cases:
                continue
            base = os.path.join(tmp, case["name"] + "-f16.gguf")
            write_gguf(base, case, gguf)
            tokens = token_ids(case["n_tokens"], VOCAB)
            for stem, qtype, flags in case["files"]:
                file = f"{case['name']}-{stem}.gguf"
                out = os.path.join(a.outdir, file)
                subprocess.run([quantize, *flags, base, out, qtype], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deq = os.path.join(tmp, file + ".f32.gguf")
                env = dict(os.environ, PYTHONPATH=gguf_py)
                subprocess.run([sys.executable, dequantize, out, deq], check=True, env=env)
                quantized = run_logits(a.runner, out, N_CTX, tokens, VOCAB)
                dequantized = run_logits(a.runner, deq, N_CTX, tokens, VOCAB)
                first_kv16 = run_logits(a.runner, out, N_CTX, tokens[:1], VOCAB, kv="f16")
                types = {}
                for t in gguf.GGUFReader(out).tensors:
                    types.setdefault(t.tensor_type.name, []).append(t.name)
                exp["files"][file] = {
                    "case": case["name"],
                    "gguf_arch": case["arch"],
                    "description": case["desc"],
                    "quantize": " ".join(["llama-quantize", *flags, "F16", qtype]),
                    "tensor_types": {k: sorted(v) for k, v in sorted(types.items())},
                    "tokens": tokens,
                    "logits_quantized": [[fmt(v) for v in r] for r in quantized.tolist()],
                    "logits_dequantized": [[fmt(v) for v in r] for r in dequantized.tolist()],
                    "logits_quantized_kv16_first": [fmt(v) for v in first_kv16[0].tolist()],
                    "argmax_quantized": [int(i) for i in quantized.argmax(-1)],
                    "argmax_dequantized": [int(i) for i in dequantized.argmax(-1)],
                    "logits_std": fmt(float(dequantized.std())),
                    "quantized_vs_dequantized": fmt(rel_err(quantized, dequantized)),
                }
                print(f"=== {file}: {os.path.getsize(out)} bytes, types "
                      f"{ {k: len(v) for k, v in types.items()} }; logits std "
                      f"{dequantized.std():.3f}; quantized vs dequantized "
                      f"{rel_err(quantized, dequantized):.2e}; argmax agree "
                      f"{int((quantized.argmax(-1) == dequantized.argmax(-1)).sum())}"
                      f"/{len(tokens)}")
    exp["files"] = dict(sorted(exp["files"].items()))
    with open(exp_path, "w") as f:
        json.dump(exp, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
