#!/usr/bin/env python3
"""Write a GGUF file from a paged/HF llama, qwen3_moe or gpt_oss checkpoint.

For side-by-side runs with llama.cpp on the same weights: the checkpoint made
by `pagectl make-model` (config.json + model.safetensors, f16/bf16/f32) becomes
a GGUF that llama.cpp loads, with q/k rows permuted from the HF "halves" RoPE
layout to GGUF's interleaved pairs (the inverse of what paged's GGUF reader
does at load). A qwen3_moe checkpoint (`pagectl make-model --preset
qwen3-30b-a3b`) becomes a `qwen3moe` file as llama.cpp's converter writes
one: q/k rows as stored (NEOX RoPE), q/k norms, the router in F32 and each
layer's experts stacked into ffn_{gate,up,down}_exps. A gpt_oss checkpoint
(`--preset gpt-oss-120b`, experts in HF's MXFP4 blocks and scales) becomes a
`gpt-oss` file with its experts still MXFP4, repacked into ggml's blocks (the
E8M0 exponent, then byte j holding values j and j + 16; HF's byte i holds
values 2i and 2i + 1), gate and up split from HF's interleaved rows, the
biases, sinks and router in F32: no f16 detour (a 12-layer f16 file of that
shape would be 76 GB). Tensors keep their stored type (bf16 is written as f16: older
llama.cpp CPU paths are fastest there and the values of make-model's bf16
weights are exact in f16 only approximately, so prefer --dtype f16 models).
The checkpoint has no tokenizer; a SentencePiece-style vocabulary of the
model's size is synthesised (control, byte and plain tokens) so that
llama.cpp accepts the file. Text output is meaningless; throughput is not.

Usage: python3 scripts/hf_to_gguf.py CHECKPOINT_DIR OUT.gguf [--q8_0]
--q8_0 (llama only): the 2-D matrices written as Q8_0 (gguf-py's quantizer,
bit for bit ggml's), as `llama-quantize ... Q8_0` would make them, without
the f16 file first (a 16-layer llama-70b shape is 32 GB in f16).
Needs numpy and llama.cpp's gguf-py on PYTHONPATH (the llama.cpp tree from the
npm package node-llama-cpp: PYTHONPATH=llama.cpp/gguf-py). No other package.
"""

import json
import os
import struct
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import gguf

ST_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": np.uint16, "U8": np.uint8}


def read_safetensors(path):
    """Returns {name: ndarray} memory-mapped from one safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dt = ST_DTYPES[t["dtype"]]
        a, b = t["data_offsets"]
        count = (b - a) // np.dtype(dt).itemsize
        arr = np.memmap(path, dtype=dt, mode="r", offset=base + a, shape=(count,))
        if t["dtype"] == "BF16":  # widen to f32 bits, then narrow to f16
            arr = (arr.astype(np.uint32) << 16).view(np.float32).astype(np.float16)
        out[name] = arr.reshape(t["shape"])
    return out


def read_checkpoint(src):
    """{name: ndarray} from model.safetensors or the shards its index lists."""
    index = f"{src}/model.safetensors.index.json"
    try:
        shards = sorted(set(json.load(open(index))["weight_map"].values()))
    except FileNotFoundError:
        return read_safetensors(f"{src}/model.safetensors")
    out = {}
    for shard in shards:
        out.update(read_safetensors(f"{src}/{shard}"))
    return out


def unpermute_rope(w, n_head):
    """HF halves layout -> GGUF interleaved pairs, per head (rows)."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return (w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def mxfp4_ggml(blocks, scales, chunk=8192):
    """HF MXFP4 (blocks [..., G, 16], scales [..., G]) -> ggml block_mxfp4
    bytes [..., G * 17], `chunk` rows at a time (bounded temporaries)."""
    lead = blocks.shape[:-2]
    g = blocks.shape[-2]
    b = np.asarray(blocks).reshape(-1, g, 16)
    e = np.asarray(scales).reshape(-1, g)
    out = np.empty((b.shape[0], g, 17), dtype=np.uint8)
    for r in range(0, b.shape[0], chunk):
        q = b[r:r + chunk]
        v = np.empty(q.shape[:-1] + (32,), dtype=np.uint8)  # each block's 32 values, in order
        v[..., 0::2] = q & 0x0F
        v[..., 1::2] = q >> 4
        out[r:r + chunk, :, 0] = e[r:r + chunk]
        out[r:r + chunk, :, 1:] = v[..., :16] | (v[..., 16:] << 4)
    return out.reshape(*lead, g * 17)


def main():
    args = [a for a in sys.argv[1:] if a != "--q8_0"]
    q8 = "--q8_0" in sys.argv[1:]
    if len(args) != 2:
        sys.exit(__doc__)
    src, dst = args
    cfg = json.load(open(f"{src}/config.json"))
    t = read_checkpoint(src)
    n_layers = cfg["num_hidden_layers"]
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    hidden = cfg["hidden_size"]
    vocab = cfg["vocab_size"]

    model_type = cfg.get("model_type", "llama")
    if model_type not in ("llama", "qwen3_moe", "gpt_oss"):
        sys.exit(f"model_type {model_type}: only llama, qwen3_moe and gpt_oss are written")
    if q8 and model_type != "llama":
        sys.exit("--q8_0: llama checkpoints only")
    moe = model_type == "qwen3_moe"
    oss = model_type == "gpt_oss"
    head_dim = cfg.get("head_dim") or hidden // n_head

    w = gguf.GGUFWriter(dst, {"qwen3_moe": "qwen3moe", "gpt_oss": "gpt-oss"}.get(model_type, "llama"))
    w.add_block_count(n_layers)
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_rope_dimension_count(head_dim)
    if moe or oss:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_expert_count(cfg["num_local_experts" if oss else "num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["intermediate_size" if oss else "moe_intermediate_size"])
    if oss:
        # The window on every second layer from 0 (llama.cpp's default for
        # gpt-oss); yarn as llama.cpp's converter writes it.
        w.add_sliding_window(cfg["sliding_window"])
        rs = cfg.get("rope_scaling") or {}
        if rs.get("rope_type") == "yarn":
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(rs["factor"])
            w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
            w.add_rope_scaling_yarn_beta_fast(rs.get("beta_fast", 32.0))
            w.add_rope_scaling_yarn_beta_slow(rs.get("beta_slow", 1.0))
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_MXFP4_MOE if oss else
                    gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.MOSTLY_F16)

    # A synthetic SentencePiece vocabulary: <unk>, <s>, </s>, 256 byte tokens,
    # then plain pieces.
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)
    i = 0
    while len(tokens) < vocab:
        tokens.append(f"\u2581t{i}")
        scores.append(-float(i))
        types.append(1)
        i += 1
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens[:vocab])
    w.add_token_scores(scores[:vocab])
    w.add_token_types(types[:vocab])
    w.add_bos_token_id(cfg.get("bos_token_id", 1))
    w.add_eos_token_id(cfg.get("eos_token_id", 2))
    w.add_unk_token_id(0)

    def put(name, arr):
        if q8 and arr.ndim == 2 and arr.shape[1] % 32 == 0 and arr.dtype != np.float32:
            # Chunks of rows on every core (numpy lets go of the GIL), which
            # also bounds the f32 temporaries.
            q = gguf.GGMLQuantizationType.Q8_0
            with ThreadPoolExecutor(os.cpu_count()) as ex:
                parts = list(ex.map(
                    lambda r: gguf.quants.quantize(np.asarray(arr[r:r + 512], dtype=np.float32), q),
                    range(0, arr.shape[0], 512)))
            w.add_tensor(name, np.concatenate(parts), raw_dtype=q)
            return
        w.add_tensor(name, np.ascontiguousarray(arr))

    def f32(name):
        return np.asarray(t[name]).astype(np.float32)

    put("token_embd.weight", t["model.embed_tokens.weight"])
    for l in range(n_layers):
        p = f"model.layers.{l}."
        b = f"blk.{l}."
        if oss:
            put(b + "attn_norm.weight", f32(p + "input_layernorm.weight"))
            for hf, gg in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
                put(b + gg + ".weight", t[p + f"self_attn.{hf}_proj.weight"])
                put(b + gg + ".bias", f32(p + f"self_attn.{hf}_proj.bias"))
            put(b + "attn_sinks.weight", f32(p + "self_attn.sinks"))
            put(b + "post_attention_norm.weight", f32(p + "post_attention_layernorm.weight"))
            put(b + "ffn_gate_inp.weight", f32(p + "mlp.router.weight"))
            put(b + "ffn_gate_inp.bias", f32(p + "mlp.router.bias"))
            x = p + "mlp.experts."
            gu_b, gu_s = t[x + "gate_up_proj_blocks"], t[x + "gate_up_proj_scales"]
            gu_bias = f32(x + "gate_up_proj_bias")
            mx = gguf.GGMLQuantizationType.MXFP4
            # gate and up interleave by rows in HF's fused matrix.
            for name, rows in (("gate", slice(0, None, 2)), ("up", slice(1, None, 2))):
                w.add_tensor(b + f"ffn_{name}_exps.weight",
                             mxfp4_ggml(gu_b[:, rows], gu_s[:, rows]), raw_dtype=mx)
                put(b + f"ffn_{name}_exps.bias", gu_bias[:, rows])
            w.add_tensor(b + "ffn_down_exps.weight",
                         mxfp4_ggml(t[x + "down_proj_blocks"], t[x + "down_proj_scales"]),
                         raw_dtype=mx)
            put(b + "ffn_down_exps.bias", f32(x + "down_proj_bias"))
            continue
        put(b + "attn_norm.weight", t[p + "input_layernorm.weight"].astype(np.float32))
        q, k = t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"]
        put(b + "attn_q.weight", q if moe else unpermute_rope(q, n_head))
        put(b + "attn_k.weight", k if moe else unpermute_rope(k, n_kv))
        put(b + "attn_v.weight", t[p + "self_attn.v_proj.weight"])
        put(b + "attn_output.weight", t[p + "self_attn.o_proj.weight"])
        put(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"].astype(np.float32))
        if not moe:
            put(b + "ffn_gate.weight", t[p + "mlp.gate_proj.weight"])
            put(b + "ffn_up.weight", t[p + "mlp.up_proj.weight"])
            put(b + "ffn_down.weight", t[p + "mlp.down_proj.weight"])
            continue
        put(b + "attn_q_norm.weight", t[p + "self_attn.q_norm.weight"].astype(np.float32))
        put(b + "attn_k_norm.weight", t[p + "self_attn.k_norm.weight"].astype(np.float32))
        put(b + "ffn_gate_inp.weight", t[p + "mlp.gate.weight"].astype(np.float32))
        for m, g in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            put(b + f"ffn_{g}_exps.weight",
                np.stack([t[p + f"mlp.experts.{e}.{m}.weight"]
                          for e in range(cfg["num_experts"])]))
    put("output_norm.weight", t["model.norm.weight"].astype(np.float32))
    if "lm_head.weight" in t:
        put("output.weight", t["lm_head.weight"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
