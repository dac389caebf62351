#!/usr/bin/env python3
"""Write a GGUF with every tensor of another dequantized to F32 by gguf-py.

The oracle for paged's block-format reading end to end: llama.cpp run on the
dequantized file computes with the same weight values as paged does on the
quantized one (paged decodes blocks exactly, in f32), without llama.cpp's
activation quantization. Metadata is copied as it is.

Usage: PYTHONPATH=llama.cpp/gguf-py python3 scripts/gguf_dequantize.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter

src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
arch = bytes(r.fields['general.architecture'].parts[-1]).decode()
w = GGUFWriter(dst, arch)
for name, f in r.fields.items():
    if name.startswith('GGUF.') or name == 'general.architecture':
        continue
    vt = f.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        it = f.types[1]
        vals = [f.parts[i] for i in f.data]
        if it == gguf.GGUFValueType.STRING:
            vals = [bytes(v).decode() for v in vals]
        else:
            vals = [v.tolist()[0] for v in vals]
        w.add_key_value(name, vals, vt, sub_type=it)
    elif vt == gguf.GGUFValueType.STRING:
        w.add_key_value(name, bytes(f.parts[-1]).decode(), vt)
    else:
        w.add_key_value(name, f.parts[-1].tolist()[0], vt)
for t in r.tensors:
    a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    shape = list(reversed([int(x) for x in t.shape]))
    w.add_tensor(t.name, a.reshape(shape))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
