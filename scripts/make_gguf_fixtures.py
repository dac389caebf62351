#!/usr/bin/env python3
"""Make the GGUF quantization fixtures of tests/golden/gguf/ and their references.

A small random llama checkpoint (hidden 256, ffn 512, 4 heads of 64, 2 KV
heads, vocabulary 64: every row a whole number of 256-value super-blocks) is
written as an F32 GGUF with llama.cpp's gguf-py, quantized with llama.cpp's
own llama-quantize to each type below (its default per-tensor mixes: a Q4_K_M
file holds Q4_K, Q6_K and F32 tensors), and to MXFP4 with gguf-py's MXFP4
quantizer. One layer per file keeps them small; the Q4_K_M file has two, so
its layers differ (llama.cpp gives the last layer's attn_v and ffn_down
Q6_K).

The references come from gguf-py alone, never from paged: refs.json lists,
for every file, every tensor as gguf-py's reader sees it (type, shape in
[rows, cols], absolute data offset and size) and a few rows of each 2-D
tensor; refs.bin holds those rows as gguf.quants.dequantize gives them,
little-endian f32, at the `at` value index of each row entry.

Usage ($LLAMA: a llama.cpp tree from the npm package node-llama-cpp, built
for the CPU; any recent build will do):
  PYTHONPATH=$LLAMA/gguf-py python3 scripts/make_gguf_fixtures.py \\
      [--quantize $LLAMA/build/bin/llama-quantize] [--out tests/golden/gguf]
Needs numpy and gguf-py; runs llama-quantize as a subprocess.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf.constants import GGMLQuantizationType as Q

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 256, 512, 4, 2, 64
HEAD_DIM = HIDDEN // HEADS

# (file stem, llama-quantize type, layers, extra llama-quantize flags). Two
# files also get Q8_0 tensors (the embeddings of one, attn_v of the other).
# MXFP4 is made with gguf-py.
QUANTIZED = [
    ("q4_k_m", "Q4_K_M", 2, []),
    ("q6_k", "Q6_K", 1, []),
    ("q4_0", "Q4_0", 1, []),
    ("q5_k_m", "Q5_K_M", 1, []),
    ("q2_k", "Q2_K", 1, []),
    ("q3_k_m", "Q3_K_M", 1, []),
    ("q5_0", "Q5_0", 1, ["--token-embedding-type", "q8_0"]),
    ("q5_1", "Q5_1", 1, ["--tensor-type", "attn_v=q8_0"]),
    ("q4_1", "Q4_1", 1, []),
    ("iq4_nl", "IQ4_NL", 1, []),
    ("iq4_xs", "IQ4_XS", 1, []),
]


def random_weights(n_layers, seed):
    """{gguf name: f32 array [rows, cols]}: normal values with a per-row scale
    spread over two decades, and a few outliers, so that block scales vary."""
    rng = np.random.default_rng(seed)

    def mat(rows, cols):
        scale = np.exp(rng.uniform(np.log(0.005), np.log(0.5), size=(rows, 1)))
        w = rng.standard_normal((rows, cols)) * scale
        hits = rng.random((rows, cols)) < 0.002
        w[hits] *= 8.0
        return w.astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": mat(VOCAB, HIDDEN)}
    for l in range(n_layers):
        b = f"blk.{l}."
        t[b + "attn_norm.weight"] = norm(HIDDEN)
        t[b + "attn_q.weight"] = mat(HEADS * HEAD_DIM, HIDDEN)
        t[b + "attn_k.weight"] = mat(KV_HEADS * HEAD_DIM, HIDDEN)
        t[b + "attn_v.weight"] = mat(KV_HEADS * HEAD_DIM, HIDDEN)
        t[b + "attn_output.weight"] = mat(HIDDEN, HEADS * HEAD_DIM)
        t[b + "ffn_norm.weight"] = norm(HIDDEN)
        t[b + "ffn_gate.weight"] = mat(FFN, HIDDEN)
        t[b + "ffn_up.weight"] = mat(FFN, HIDDEN)
        t[b + "ffn_down.weight"] = mat(HIDDEN, FFN)
    t["output_norm.weight"] = norm(HIDDEN)
    t["output.weight"] = mat(VOCAB, HIDDEN)
    return t


def write_gguf(path, n_layers, tensors, quant=None, file_type=gguf.LlamaFileType.ALL_F32):
    """A llama GGUF of `tensors` ({name: f32 array}); 2-D tensors quantized
    with gguf-py to `quant` when given, 1-D ones kept F32."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("paged-gguf-fixture")
    w.add_block_count(n_layers)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(VOCAB)
    w.add_file_type(file_type)
    # A SentencePiece-style vocabulary: <unk>, <s>, </s>, then plain pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"\u2581t{i}" for i in range(VOCAB - 3)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0, 0.0, 0.0] + [-float(i) for i in range(VOCAB - 3)])
    w.add_token_types([2, 3, 3] + [1] * (VOCAB - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, a in tensors.items():
        if quant is not None and a.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(a, quant), raw_dtype=quant)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference_rows(rows):
    """Rows of a tensor of `rows` rows that the references keep."""
    return sorted({0, 1, rows // 2, rows - 1})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "golden", "gguf"))
    ap.add_argument("--quantize", default="llama-quantize", help="llama.cpp's llama-quantize (default: on PATH)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    files = []
    with tempfile.TemporaryDirectory() as tmp:
        bases = {}
        for n_layers in sorted({n for _, _, n, _ in QUANTIZED}):
            base = os.path.join(tmp, f"base-{n_layers}.gguf")
            write_gguf(base, n_layers, random_weights(n_layers, seed=1000 + n_layers))
            bases[n_layers] = base
        for stem, qtype, n_layers, flags in QUANTIZED:
            out = os.path.join(args.out, f"tiny-{stem}.gguf")
            subprocess.run([args.quantize, *flags, bases[n_layers], out, qtype], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            files.append(out)
        out = os.path.join(args.out, "tiny-mxfp4.gguf")
        write_gguf(out, 1, random_weights(1, seed=1001), quant=Q.MXFP4,
                   file_type=gguf.LlamaFileType.MOSTLY_MXFP4_MOE)
        files.append(out)

    # References, from gguf-py's reader and dequantizer only.
    index = {"note": "made by scripts/make_gguf_fixtures.py with gguf-py; rows are "
                     "gguf.quants.dequantize output, f32 at refs.bin value index `at`",
             "files": []}
    blob = []
    at = 0
    for path in files:
        r = gguf.GGUFReader(path)
        entry = {"file": os.path.basename(path), "tensors": [], "rows": []}
        for t in r.tensors:
            ne = [int(x) for x in t.shape]  # ggml order: ne[0] innermost
            cols, rows = ne[0], (ne[1] if len(ne) > 1 else 1)
            entry["tensors"].append({"name": t.name, "type": t.tensor_type.name,
                                     "rows": rows, "cols": cols,
                                     "offset": int(t.data_offset), "bytes": int(t.n_bytes)})
            if len(ne) < 2:
                continue
            values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rows, cols)
            for row in reference_rows(rows):
                v = np.ascontiguousarray(values[row], dtype="<f4")
                blob.append(v.tobytes())
                entry["rows"].append({"tensor": t.name, "row": row, "at": at})
                at += cols
        index["files"].append(entry)
    with open(os.path.join(args.out, "refs.bin"), "wb") as f:
        f.write(b"".join(blob))
    with open(os.path.join(args.out, "refs.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(p) for p in files)
    total += os.path.getsize(os.path.join(args.out, "refs.bin"))
    print(f"wrote {len(files)} GGUF files and refs.{{json,bin}} to {args.out} "
          f"({total / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
