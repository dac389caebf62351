#!/usr/bin/env python3
"""Architecture fixtures with llama.cpp as the oracle (tests/golden/arch/).

For each case below this makes tiny random weights (numpy, fixed seeds) and
writes the SAME weights twice:

  OUTDIR/<case>/config.json + model.safetensors   an HF checkpoint as the Hub
                                                  has them (transformers 4.x
                                                  config form, HF tensor names)
  OUTDIR/<case>/model.gguf                        what llama.cpp's
                                                  convert_hf_to_gguf.py makes
                                                  of it: llama.cpp names and
                                                  {arch}.* metadata, gemma's
                                                  norms with the +1 added,
                                                  phi3's fused tensors kept

then runs llama.cpp (a small program against its libllama, see --runner) on
the GGUF over a fixed token sequence and records the logits of every position
in OUTDIR/<case>/expected.json. paged's tests load both files and compare.

Only numpy and llama.cpp's gguf-py are needed (no torch, no transformers):
  /usr/bin/python3 scripts/make_arch_fixtures.py OUTDIR \\
      --llama-cpp /path/to/llama.cpp --runner /path/to/llama_logits [CASE ...]
The runner is built from a 60-line C++ file kept outside this repository
(tests/golden/arch/README.md shows it); it decodes all tokens in one batch with
an f32 KV cache, no flash attention, one thread, and prints the logits.
"""

import json
import math
import os

import numpy as np

from gguf_fixture_common import (add_shape, arg_parser, check_cases, finish_gguf, fmt,
                                 import_gguf, llama_commit, run_logits, token_ids)

STD_EMBED = 0.2
STD_LINEAR = 0.15  # larger than make_golden.py's 0.08: scores reach the soft-caps
STD_LM_HEAD = 0.1
STD_BIAS = 0.1
STD_NORM = 0.1

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8,
              bos_token_id=1, eos_token_id=2)

CASES = [
    dict(name="qwen3", seed=2001, n_tokens=16, gguf_arch="qwen3",
         desc="Qwen3: per-head q/k RMSNorm before RoPE, no bias, head_dim 16 "
              "(q_dim 64 != hidden 32), GQA 2, theta 1e6, untied",
         cfg=dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"],
                  head_dim=16, num_hidden_layers=2, max_position_embeddings=64,
                  rms_norm_eps=1e-6, rope_theta=1000000.0,
                  use_sliding_window=False, sliding_window=None,
                  tie_word_embeddings=False, hidden_act="silu")),
    dict(name="gemma2", seed=2002, n_tokens=14, gguf_arch="gemma2",
         desc="Gemma 2: embeddings x sqrt(32), (1 + w) norms, sandwich norms, "
              "GeGLU, attention soft-cap 1 and final soft-cap 2 (small: they "
              "bite), layer 0 sliding with window 5 < 14 tokens, layer 1 "
              "global, query_pre_attn_scalar = head_dim (llama.cpp's rule), "
              "tied embeddings",
         cfg=dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"],
                  num_hidden_layers=2, max_position_embeddings=64,
                  rms_norm_eps=1e-6, rope_theta=10000.0,
                  hidden_activation="gelu_pytorch_tanh",
                  hidden_act="gelu_pytorch_tanh", query_pre_attn_scalar=8,
                  attn_logit_softcapping=1.0, final_logit_softcapping=2.0,
                  sliding_window=5, tie_word_embeddings=True)),
    dict(name="gemma3", seed=2003, n_tokens=14, gguf_arch="gemma3",
         desc="Gemma 3 text: q/k norms, sandwich norms, GeGLU, layers 0 and 1 "
              "sliding (window 4 < 14 tokens, RoPE base 1e4), layer 2 global "
              "(theta 1e6, linear scaling factor 4), sliding_window_pattern 3, "
              "no soft-caps, tied embeddings",
         cfg=dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
                  num_hidden_layers=3, max_position_embeddings=64,
                  rms_norm_eps=1e-6, rope_theta=1000000.0,
                  rope_local_base_freq=10000.0,
                  rope_scaling=dict(rope_type="linear", factor=4.0),
                  hidden_activation="gelu_pytorch_tanh",
                  query_pre_attn_scalar=8, sliding_window=4,
                  sliding_window_pattern=3, attn_logit_softcapping=None,
                  final_logit_softcapping=None, tie_word_embeddings=True)),
    dict(name="phi3_longrope", seed=2004, n_tokens=20, gguf_arch="phi3",
         desc="Phi-3: fused qkv_proj and gate_up_proj, GQA 2, longrope: "
              "original context 16, max_position_embeddings 64, so the long "
              "factors (llama.cpp: n_ctx 64 > 16), attention factor "
              "sqrt(1 + ln 4 / ln 16); no sliding window (llama.cpp ignores "
              "phi3's)",
         cfg=dict(model_type="phi3", architectures=["Phi3ForCausalLM"],
                  num_hidden_layers=2, max_position_embeddings=64,
                  original_max_position_embeddings=16, rms_norm_eps=1e-5,
                  rope_theta=10000.0, sliding_window=None,
                  rope_scaling=dict(type="longrope",
                                    long_factor=[1.0, 1.7, 3.1, 5.5],
                                    short_factor=[1.0, 1.1, 1.2, 1.4]),
                  tie_word_embeddings=False, hidden_act="silu")),
    dict(name="qwen2_yarn", seed=2005, n_tokens=24, gguf_arch="qwen2",
         desc="Qwen2 with yarn: factor 4 over an original 16 positions "
              "(max_position_embeddings 64), q/k/v biases, theta 1e4, "
              "attention factor 0.1 ln 4 + 1; 24 tokens, past the original "
              "context",
         cfg=dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                  num_hidden_layers=2, max_position_embeddings=64,
                  rms_norm_eps=1e-6, rope_theta=10000.0,
                  rope_scaling=dict(type="yarn", factor=4.0,
                                    original_max_position_embeddings=16),
                  use_sliding_window=False, sliding_window=None,
                  tie_word_embeddings=False, hidden_act="silu")),
]


def config_of(case):
    cfg = dict(COMMON)
    cfg.update(case["cfg"])
    return cfg


def make_weights(case):
    """HF-named float32 weights, [out, in] as HF stores them."""
    c = config_of(case)
    rng = np.random.default_rng(case["seed"])
    gemma = c["model_type"].startswith("gemma")
    norm_mean = 0.0 if gemma else 1.0  # gemma multiplies by (1 + w)
    hid, ffn, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c["head_dim"]
    q_dim, kv_dim = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def normal(shape, std, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    w = {"model.embed_tokens.weight": normal((vocab, hid), STD_EMBED),
         "model.norm.weight": normal((hid,), STD_NORM, norm_mean)}
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = normal((vocab, hid), STD_LM_HEAD)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = normal((hid,), STD_NORM, norm_mean)
        if c["model_type"] == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = normal((q_dim + 2 * kv_dim, hid), STD_LINEAR)
        else:
            w[p + "self_attn.q_proj.weight"] = normal((q_dim, hid), STD_LINEAR)
            w[p + "self_attn.k_proj.weight"] = normal((kv_dim, hid), STD_LINEAR)
            w[p + "self_attn.v_proj.weight"] = normal((kv_dim, hid), STD_LINEAR)
        if c["model_type"] == "qwen2":
            w[p + "self_attn.q_proj.bias"] = normal((q_dim,), STD_BIAS)
            w[p + "self_attn.k_proj.bias"] = normal((kv_dim,), STD_BIAS)
            w[p + "self_attn.v_proj.bias"] = normal((kv_dim,), STD_BIAS)
        if c["model_type"] in ("qwen3", "gemma3_text"):
            w[p + "self_attn.q_norm.weight"] = normal((hd,), STD_NORM, norm_mean)
            w[p + "self_attn.k_norm.weight"] = normal((hd,), STD_NORM, norm_mean)
        w[p + "self_attn.o_proj.weight"] = normal((hid, q_dim), STD_LINEAR)
        w[p + "post_attention_layernorm.weight"] = normal((hid,), STD_NORM, norm_mean)
        if gemma:
            w[p + "pre_feedforward_layernorm.weight"] = normal((hid,), STD_NORM, norm_mean)
            w[p + "post_feedforward_layernorm.weight"] = normal((hid,), STD_NORM, norm_mean)
        if c["model_type"] == "phi3":
            w[p + "mlp.gate_up_proj.weight"] = normal((2 * ffn, hid), STD_LINEAR)
        else:
            w[p + "mlp.gate_proj.weight"] = normal((ffn, hid), STD_LINEAR)
            w[p + "mlp.up_proj.weight"] = normal((ffn, hid), STD_LINEAR)
        w[p + "mlp.down_proj.weight"] = normal((hid, ffn), STD_LINEAR)
    return w


def write_safetensors(path, tensors):
    """A safetensors file: u64 header length, JSON header, then the data."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)


def gguf_tensors(case, w):
    """The GGUF tensors of HF weights `w`, as convert_hf_to_gguf.py names
    and transforms them (llama.cpp's gguf-py tensor map)."""
    c = config_of(case)
    gemma = c["model_type"].startswith("gemma")
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "self_attn.qkv_proj": "attn_qkv",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "mlp.gate_up_proj": "ffn_up",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "post_attention_layernorm":
            "post_attention_norm" if gemma else "ffn_norm",
    }
    out = {}
    for name, a in w.items():
        if name == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif name == "model.norm.weight":
            g = "output_norm.weight"
        elif name == "lm_head.weight":
            g = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            g = f"blk.{layer}.{names[module]}.{kind}"
        if gemma and name.endswith("norm.weight"):
            a = a + np.float32(1.0)  # Gemma*Model.modify_tensors
        out[g] = a
    if c["model_type"] == "phi3":
        rs = c["rope_scaling"]
        out["rope_factors_long.weight"] = np.array(rs["long_factor"], np.float32)
        out["rope_factors_short.weight"] = np.array(rs["short_factor"], np.float32)
    return out


def write_gguf(path, case, w, gguf):
    c = config_of(case)
    arch = case["gguf_arch"]
    wr = gguf.GGUFWriter(path, arch)
    wr.add_name(case["name"])
    add_shape(wr, c["max_position_embeddings"], c["hidden_size"], c["num_hidden_layers"],
              c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"],
              c["head_dim"])
    wr.add_layer_norm_rms_eps(c["rms_norm_eps"])
    wr.add_rope_freq_base(c["rope_theta"])
    wr.add_vocab_size(c["vocab_size"])
    wr.add_tokenizer_model("none")
    rs = c.get("rope_scaling") or {}
    rtype = rs.get("rope_type", rs.get("type"))
    if rtype == "linear":
        wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        wr.add_rope_scaling_factor(rs["factor"])
    elif rtype == "yarn":
        wr.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        wr.add_rope_scaling_factor(rs["factor"])
        wr.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
    elif rtype == "longrope":
        # Phi3MiniModel: the factors as tensors, the attention factor here.
        orig = c["original_max_position_embeddings"]
        scale = c["max_position_embeddings"] / orig
        wr.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        wr.add_rope_scaling_orig_ctx_len(orig)
        wr.add_rope_scaling_attn_factors(
            math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)
        wr.add_rope_dimension_count(c["head_dim"])
        wr.add_sliding_window(0)
    if arch == "gemma2":
        wr.add_attn_logit_softcapping(c["attn_logit_softcapping"])
        wr.add_final_logit_softcapping(c["final_logit_softcapping"])
        wr.add_sliding_window(c["sliding_window"])
    if arch == "gemma3":
        wr.add_sliding_window(c["sliding_window"])
        wr.add_sliding_window_pattern(c["sliding_window_pattern"])
        wr.add_rope_freq_base_swa(c["rope_local_base_freq"])
    for name, a in gguf_tensors(case, w).items():
        wr.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
    finish_gguf(wr)


def run_case(case, outdir, gguf, runner, llama_commit):
    d = os.path.join(outdir, case["name"])
    os.makedirs(d, exist_ok=True)
    c = config_of(case)
    w = make_weights(case)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), w)
    gguf_path = os.path.join(d, "model.gguf")
    write_gguf(gguf_path, case, w, gguf)

    tokens = token_ids(case["n_tokens"], c["vocab_size"])
    n_ctx = c["max_position_embeddings"]
    logits = run_logits(runner, gguf_path, n_ctx, tokens, c["vocab_size"])
    exp = {
        "case": case["name"],
        "description": case["desc"],
        "tokens": tokens,
        "logits": [[fmt(v) for v in row] for row in logits.tolist()],
        "argmax": [int(i) for i in logits.argmax(-1)],
        "logits_std": fmt(float(logits.std())),
        "logits_abs_max": fmt(float(np.abs(logits).max())),
        "oracle": "llama.cpp " + llama_commit + " (CPU, f32 weights and KV, "
                  "no flash attention, one llama_decode of all tokens)",
        "n_ctx": n_ctx,
        "gguf_arch": case["gguf_arch"],
        "note": ("Weights: numpy seed %d; embed N(0,%g), linear N(0,%g), "
                 "lm_head N(0,%g), bias N(0,%g), norms %s+N(0,%g). Made by "
                 "scripts/make_arch_fixtures.py." %
                 (case["seed"], STD_EMBED, STD_LINEAR, STD_LM_HEAD, STD_BIAS,
                  "0" if c["model_type"].startswith("gemma") else "1",
                  STD_NORM)),
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    print(f"=== {case['name']}: tokens {tokens}")
    print(f"    logits std {logits.std():.4f} absmax {np.abs(logits).max():.4f}; "
          f"argmax {exp['argmax']}; files {sizes}")


def main():
    a = arg_parser(__doc__).parse_args()
    gguf = import_gguf(a.llama_cpp)  # llama.cpp's own writer
    commit = llama_commit(a.llama_cpp)
    check_cases(a.cases, CASES)
    for case in CASES:
        if not a.cases or case["name"] in a.cases:
            run_case(case, a.outdir, gguf, a.runner, commit)


if __name__ == "__main__":
    main()
