#!/usr/bin/env python3
"""Make golden-logit fixtures for paged's model readers and forward pass.

For each case below this builds a tiny random-initialized HF transformers
model (fixed seeds), re-initialises its weights with a larger spread so the
logits are far from zero and small mistakes show, saves it in float32 with
save_pretrained (config.json + one model.safetensors), and records the logits
of ONE forward pass (no KV cache) over a fixed token sequence, computed in
float64 (model.double()) from the saved float32 weights.

Usage: python3 scripts/make_golden.py OUTDIR [CASE ...]
Writes OUTDIR/<case>/{config.json, model.safetensors, expected.json}, for
every case or the ones named (e.g. the issue 13 cases: qwen3 gemma2 gemma3
phi3_longrope mistral_window qwen2_yarn; the issue 14 mixtures of experts:
mixtral_moe qwen2_moe qwen3_moe gpt_oss).
Needs torch, transformers and safetensors; no network. Runs on CPU.
"""

import copy
import inspect
import json
import math
import os
import sys
import traceback

import torch
import transformers
import safetensors
from safetensors import safe_open
try:  # transformers >= 4.55
    from transformers import GptOssConfig, GptOssForCausalLM
except ImportError:
    GptOssConfig = GptOssForCausalLM = None
from transformers import (AutoModelForCausalLM, Gemma2Config,
                          Gemma2ForCausalLM, Gemma3ForCausalLM,
                          Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, MixtralConfig,
                          MixtralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig,
                          Qwen2MoeForCausalLM, Qwen3Config, Qwen3ForCausalLM,
                          Qwen3MoeConfig, Qwen3MoeForCausalLM)

COMMON = dict(bos_token_id=1, eos_token_id=2, max_position_embeddings=128,
              hidden_act="silu")

CASES = [
    dict(name="llama_gqa", seed=1001, n_tokens=12,
         config_cls=LlamaConfig, model_cls=LlamaForCausalLM,
         desc="Llama, GQA 4 (8 query heads, 2 KV heads), head_dim 8, "
              "untied lm_head, plain RoPE theta 1e4",
         cfg=dict(vocab_size=512, hidden_size=64, intermediate_size=172,
                  num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5,
                  tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    dict(name="llama3_rope", seed=1002, n_tokens=24,
         config_cls=LlamaConfig, model_cls=LlamaForCausalLM,
         desc="Llama with llama3 RoPE scaling (factor 8, low 1, high 4, "
              "original_max_position_embeddings 16), theta 5e5, head_dim 16, "
              "GQA 2; 24 tokens so positions beyond the original window occur",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                  tie_word_embeddings=False),
         rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                   low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16)),
    dict(name="mistral", seed=1003, n_tokens=12,
         config_cls=MistralConfig, model_cls=MistralForCausalLM,
         desc="Mistral, GQA 2 (4 query heads, 2 KV heads), head_dim 16, "
              "sliding_window null, untied, theta 1e4",
         cfg=dict(vocab_size=384, hidden_size=64, intermediate_size=172,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                  sliding_window=None, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    dict(name="qwen2_bias", seed=1004, n_tokens=12,
         config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM,
         desc="Qwen2: non-zero random q/k/v biases, GQA 2, head_dim 16, "
              "theta 1e6, rms_norm_eps 1e-6, untied",
         cfg=dict(vocab_size=384, hidden_size=64, intermediate_size=172,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-6,
                  use_sliding_window=False, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="llama_tied", seed=1005, n_tokens=12,
         config_cls=LlamaConfig, model_cls=LlamaForCausalLM,
         desc="Llama with tie_word_embeddings true (no lm_head.weight in the "
              "file), MHA (8 heads, 8 KV heads), head_dim 8, theta 1e4",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=8, head_dim=8, rms_norm_eps=1e-5,
                  tie_word_embeddings=True),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    # ---- issue 13: the architectures people download ----------------------
    dict(name="qwen3", seed=1006, n_tokens=16,
         config_cls=Qwen3Config, model_cls=Qwen3ForCausalLM,
         desc="Qwen3: per-head q/k RMSNorm before RoPE, no qkv bias, "
              "head_dim 32 from the config (q_dim 128 != hidden 64), GQA 2, "
              "theta 1e6",
         cfg=dict(vocab_size=384, hidden_size=64, intermediate_size=160,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                  use_sliding_window=False, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="gemma2", seed=1007, n_tokens=16, norm_mean=0.0,
         config_cls=Gemma2Config, model_cls=Gemma2ForCausalLM,
         desc="Gemma 2: embeddings x sqrt(hidden), (1 + w) RMSNorms, sandwich "
              "norms, GeGLU (gelu_pytorch_tanh), query_pre_attn_scalar 24 "
              "(!= head_dim 16), attention soft-cap 2 and final soft-cap 3 "
              "(small, so that they bite), layers 0 and 2 sliding with window "
              "6 < 16 tokens, tied embeddings",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                  hidden_activation="gelu_pytorch_tanh",
                  query_pre_attn_scalar=24, attn_logit_softcapping=2.0,
                  final_logit_softcapping=3.0, sliding_window=6,
                  tie_word_embeddings=True),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    dict(name="gemma3", seed=1008, n_tokens=16, norm_mean=0.0,
         config_cls=Gemma3TextConfig, model_cls=Gemma3ForCausalLM,
         desc="Gemma 3 text: q/k norms, sandwich norms, GeGLU, "
              "query_pre_attn_scalar 32, layers 0, 1, 3 sliding (window 5 < 16 "
              "tokens) with local RoPE base 1e4, layer 2 global with theta 1e6 "
              "and linear scaling factor 4, no soft-caps, tied embeddings",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                  hidden_activation="gelu_pytorch_tanh",
                  query_pre_attn_scalar=32, sliding_window=5,
                  layer_types=["sliding_attention", "sliding_attention",
                               "full_attention", "sliding_attention"],
                  attn_logit_softcapping=None, final_logit_softcapping=None,
                  tie_word_embeddings=True),
         rope=dict(rope_type="linear", factor=4.0, rope_theta=1000000.0),
         rope_local=dict(rope_type="default", rope_theta=10000.0)),
    dict(name="phi3_longrope", seed=1009, n_tokens=24,
         config_cls=Phi3Config, model_cls=Phi3ForCausalLM,
         desc="Phi-3: fused qkv_proj and gate_up_proj, GQA 2, longrope over "
              "an original context of 16 (max_position_embeddings 128): 24 "
              "tokens, so transformers takes the long factors, as paged does "
              "for a context longer than the original; attention factor "
              "sqrt(1 + ln 8 / ln 16)",
         cfg=dict(vocab_size=320, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-5,
                  original_max_position_embeddings=16, sliding_window=None,
                  tie_word_embeddings=False, pad_token_id=0),
         rope=dict(rope_type="longrope", rope_theta=10000.0,
                   original_max_position_embeddings=16,
                   long_factor=[1.0, 1.3, 1.8, 2.5, 3.5, 5.0, 7.0, 9.5],
                   short_factor=[1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])),
    dict(name="mistral_window", seed=1010, n_tokens=16,
         config_cls=MistralConfig, model_cls=MistralForCausalLM,
         desc="Mistral with sliding_window 5, shorter than its 16 tokens: "
              "every layer masks the keys older than the window",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                  sliding_window=5, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    dict(name="qwen2_yarn", seed=1011, n_tokens=24,
         config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM,
         desc="Qwen2 with Qwen's long-context yarn: factor 4 over an "
              "original 16 positions (max_position_embeddings 64 = 4 x 16), "
              "theta 1e4 so the ramp lies inside the 8 pairs, attention "
              "factor 0.1 ln 4 + 1; 24 tokens, past the original context",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=64, use_sliding_window=False,
                  tie_word_embeddings=False),
         rope=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                   original_max_position_embeddings=16)),
    # ---- issue 14: mixtures of experts -------------------------------------
    # 24 tokens over 8 (or 4) experts, top-2: in the one forward pass several
    # tokens share an expert; routers N(0, STD_ROUTER) so that the top-k are
    # well apart (no near-ties between float32 and float64).
    dict(name="mixtral_moe", seed=1012, n_tokens=24,
         config_cls=MixtralConfig, model_cls=MixtralForCausalLM,
         desc="Mixtral: 8 experts, top-2 of a softmax over all 8, "
              "renormalized; GQA 2, no sliding window",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                  num_local_experts=8, num_experts_per_tok=2,
                  router_jitter_noise=0.0, sliding_window=None,
                  tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="qwen2_moe", seed=1013, n_tokens=24,
         config_cls=Qwen2MoeConfig, model_cls=Qwen2MoeForCausalLM,
         desc="Qwen2-MoE: q/k/v biases, 4 experts (moe_intermediate_size "
              "48), top-2 NOT renormalized (norm_topk_prob false, as "
              "Qwen1.5-MoE), a shared expert (80) times sigmoid of its gate; "
              "layer 1 of 3 dense (mlp_only_layers, intermediate_size 128)",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-6,
                  num_experts=4, num_experts_per_tok=2,
                  moe_intermediate_size=48,
                  shared_expert_intermediate_size=80, norm_topk_prob=False,
                  decoder_sparse_step=1, mlp_only_layers=[1],
                  use_sliding_window=False, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="qwen3_moe", seed=1014, n_tokens=24,
         config_cls=Qwen3MoeConfig, model_cls=Qwen3MoeForCausalLM,
         desc="Qwen3-MoE: q/k norms, head_dim 32 (q_dim 128 != hidden 64), "
              "8 experts (moe_intermediate_size 48), top-2 renormalized "
              "(norm_topk_prob true), every layer sparse",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                  num_experts=8, num_experts_per_tok=2,
                  moe_intermediate_size=48, norm_topk_prob=True,
                  decoder_sparse_step=1, mlp_only_layers=[],
                  use_sliding_window=False, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="gpt_oss", seed=1015, n_tokens=24,
         config_cls=GptOssConfig, model_cls=GptOssForCausalLM,
         desc="gpt-oss: q/k/v/o biases, a learned sink logit per head in "
              "every softmax, layers 0 and 2 sliding (window 6 < 24 tokens), "
              "1 and 3 full; head_dim 32 (q_dim 128 != hidden 64); yarn x4 "
              "over an original 16 (max 64), theta 150000, truncate false; "
              "4 experts of 48, top-2 of the router's logits (with its bias) "
              "then a softmax over the 2; expert biases; experts fused as "
              "x @ W with gate and up interleaved; the clamped SwiGLU (limit "
              "7, alpha 1.702), expert weights N(0, 0.5) so that it clamps",
         cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=48,
                  num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5,
                  max_position_embeddings=64, num_local_experts=4,
                  num_experts_per_tok=2, sliding_window=6,
                  layer_types=["sliding_attention", "full_attention",
                               "sliding_attention", "full_attention"],
                  attention_bias=True, swiglu_limit=7.0,
                  tie_word_embeddings=False),
         rope=dict(rope_type="yarn", rope_theta=150000.0, factor=4.0,
                   beta_fast=32.0, beta_slow=1.0, truncate=False,
                   original_max_position_embeddings=16)),
]

# Weight spreads used for re-initialisation.
STD_EMBED = 0.2
STD_LINEAR = 0.08
STD_LM_HEAD = 0.1
STD_BIAS = 0.1
STD_NORM = 0.1  # norm weights are 1 + N(0, STD_NORM)
STD_ROUTER = 0.3  # MoE routers (mlp.gate / block_sparse_moe.gate / mlp.router)
STD_SINK = 1.0  # gpt-oss's attention sinks: a visible share of each softmax
# gpt-oss's fused gate_up_proj: wide enough that gate and up pass the
# SwiGLU's limit of 7 on some rows (both clamps are exercised).
STD_OSS_GATE_UP = 0.5


def accepted_fields(cls):
    names = set(getattr(cls, "__dataclass_fields__", {}) or {})
    try:
        names |= set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        pass
    return names


def make_config(case):
    cls = case["config_cls"]
    kw = dict(COMMON)
    kw.update(case["cfg"])
    fields = accepted_fields(cls)
    rope = dict(case["rope"])
    local = case.get("rope_local")
    if "rope_parameters" in fields:
        # transformers 5.x: rope settings live in one dict with rope_theta
        # inside; gemma3 has one per layer type.
        if local is not None:
            kw["rope_parameters"] = {"full_attention": rope,
                                     "sliding_attention": dict(local)}
            form = "rope_parameters per layer type"
        else:
            kw["rope_parameters"] = rope
            form = "rope_parameters"
    else:
        # transformers 4.x: top-level rope_theta, rope_scaling for the rest.
        kw["rope_theta"] = rope.pop("rope_theta")
        if rope.get("rope_type") == "longrope":
            # 4.x: phi3's original context is a top-level key (in cfg).
            rope.pop("original_max_position_embeddings", None)
        if rope.get("rope_type", "default") != "default":
            kw["rope_scaling"] = rope
        if local is not None:
            kw["rope_local_base_freq"] = local["rope_theta"]
        form = "rope_theta+rope_scaling"
    head_dim = None
    if "head_dim" in kw and "head_dim" not in fields:
        # Not an argument of this class's __init__ (transformers 5's MoE
        # configs take it through **kwargs): set it on the config instead.
        head_dim = kw.pop("head_dim")
    config = cls(**kw)
    if head_dim is not None:
        config.head_dim = head_dim
    return config, form


def eager_experts(model):
    """transformers 5 runs MoE experts with torch's grouped_mm, which has no
    float64: use the per-expert loop (the reference implementation)."""
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    return model


def token_ids(n, vocab):
    # BOS first, then ids spread over the whole vocabulary (never 0/1/2).
    ids = [1]
    for k in range(1, n):
        t = (k * (vocab - 3)) // n + (37 * k * k) % 11 + 3
        ids.append(min(max(t, 3), vocab - 1))
    return ids


@torch.no_grad()
def reinit(model, seed, norm_mean=1.0):
    # norm_mean 0 for gemma, whose RMSNorm multiplies by (1 + w).
    g = torch.Generator().manual_seed(seed)
    seen = set()
    for name, p in model.named_parameters():  # shared (tied) params once
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim == 1 and "norm" in name:
            v = norm_mean + STD_NORM * torch.randn(p.shape, generator=g)
        elif name.endswith(".sinks"):  # gpt-oss
            v = STD_SINK * torch.randn(p.shape, generator=g)
        elif name.endswith(".router.weight"):  # gpt-oss's router
            v = STD_ROUTER * torch.randn(p.shape, generator=g)
        elif name.endswith(".bias") or name.endswith("_proj_bias"):
            v = STD_BIAS * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in name:
            v = STD_EMBED * torch.randn(p.shape, generator=g)
        elif "lm_head" in name:
            v = STD_LM_HEAD * torch.randn(p.shape, generator=g)
        elif name.endswith(".gate.weight"):  # an MoE router
            v = STD_ROUTER * torch.randn(p.shape, generator=g)
        elif name.endswith("experts.gate_up_proj") and p.ndim == 3 and \
                getattr(model.config, "model_type", "") == "gpt_oss":
            v = STD_OSS_GATE_UP * torch.randn(p.shape, generator=g)
        elif p.ndim == 2 or (p.ndim == 3 and ".experts." in name):
            # (transformers 5 keeps experts fused: [E, 2F, H], [E, H, F])
            v = STD_LINEAR * torch.randn(p.shape, generator=g)
        else:
            raise RuntimeError(f"unexpected parameter {name} {tuple(p.shape)}")
        p.copy_(v.to(p.dtype))


def llama3_inv_freq_ref(head_dim, theta, factor, low, high, old_ctx):
    inv = [1.0 / (theta ** (i / head_dim)) for i in range(0, head_dim, 2)]
    lw, hw = old_ctx / low, old_ctx / high
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < hw:
            out.append(f)
        elif wl > lw:
            out.append(f / factor)
        else:
            s = (old_ctx / wl - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return inv, out


def gpt_oss_checks(model, ids):
    """The experts' layout and activation as paged reads them, and how
    often the SwiGLU's clamps bite in the golden forward pass."""
    cfg = model.config
    exp = model.model.layers[0].mlp.experts
    E, H, F = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    assert tuple(exp.gate_up_proj.shape) == (E, H, 2 * F), exp.gate_up_proj.shape
    assert tuple(exp.down_proj.shape) == (E, F, H), exp.down_proj.shape
    limit = float(getattr(exp, "limit", cfg.swiglu_limit))
    alpha = float(getattr(exp, "alpha", 1.702))
    assert limit == cfg.swiglu_limit and abs(alpha - 1.702) < 1e-9, (limit, alpha)
    inputs = []
    hooks = [layer.mlp.register_forward_pre_hook(
        lambda mod, args: inputs.append(args[0].detach()))
        for layer in model.model.layers]
    forward_logits(model, ids)
    for h in hooks:
        h.remove()
    gate = up = 0
    total = 0
    for layer, x in zip(model.model.layers, inputs):
        e = layer.mlp.experts
        x = x.reshape(-1, H).double()
        gu = torch.einsum("th,ehf->etf", x, e.gate_up_proj.double()) + \
            e.gate_up_proj_bias.double()[:, None, :]
        gate += int((gu[..., ::2] > limit).sum())
        up += int((gu[..., 1::2].abs() > limit).sum())
        total += gu[..., ::2].numel()
    assert gate > 0 and up > 0, f"the clamps never bite: gate {gate}, up {up}"
    return dict(swiglu_limit=limit, swiglu_alpha=alpha,
                gate_above_limit=gate / total, up_beyond_limit=up / total)


def set_eager(model):
    try:
        model.set_attn_implementation("eager")
    except Exception:  # older API
        model.config._attn_implementation = "eager"


def forward_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0]


def fmt(x):
    return float("%.10g" % x)


def run_case(case, outdir):
    name = case["name"]
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(case["seed"])
    config, form = make_config(case)
    model = eager_experts(case["model_cls"](config).float().eval())
    set_eager(model)
    reinit(model, case["seed"] + 7, case.get("norm_mean", 1.0))
    # The features a case is about must have reached the config.
    for key in ("sliding_window", "query_pre_attn_scalar", "layer_types",
                "attn_logit_softcapping", "final_logit_softcapping",
                "head_dim", "hidden_activation"):
        if key in case["cfg"]:
            got = getattr(config, key, "<absent>")
            assert got == case["cfg"][key], \
                f"{name}: config.{key} is {got}, wanted {case['cfg'][key]}"
    tied = bool(case["cfg"]["tie_word_embeddings"])
    same = (model.lm_head.weight.data_ptr()
            == model.model.embed_tokens.weight.data_ptr())
    assert same == tied, f"{name}: lm_head tied={same}, wanted {tied}"
    oss = gpt_oss_checks(model, token_ids(case["n_tokens"], case["cfg"]["vocab_size"])) \
        if name == "gpt_oss" else None
    if name == "qwen2_bias":
        for proj in ("q_proj", "k_proj", "v_proj"):
            b = getattr(model.model.layers[0].self_attn, proj).bias
            assert b is not None and b.abs().max() > 0.01, proj
        assert model.model.layers[0].self_attn.o_proj.bias is None

    # transformers 5 always writes safetensors and dropped the argument.
    save_kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kw["safe_serialization"] = True
    model.save_pretrained(d, **save_kw)
    extra = sorted(set(os.listdir(d)) - {"config.json", "model.safetensors"})
    for f in extra:  # generation_config.json etc.: not part of the fixture
        os.remove(os.path.join(d, f))
    assert os.path.exists(os.path.join(d, "model.safetensors")), os.listdir(d)

    # Check the file: one shard, all F32, lm_head only when untied.
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as sf:
        keys = sorted(sf.keys())
        dtypes = {str(sf.get_tensor(k).dtype) for k in keys}
    assert dtypes == {"torch.float32"}, dtypes
    assert ("lm_head.weight" in keys) == (not tied), keys

    ids = token_ids(case["n_tokens"], case["cfg"]["vocab_size"])

    # Golden: float64 forward from the float32 weights.
    m64 = copy.deepcopy(model).double().eval()
    logits = forward_logits(m64, ids)
    assert logits.dtype == torch.float64
    # The same from the saved files, reloaded.
    re = eager_experts(AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager"))
    re = re.double().eval()
    logits_re = forward_logits(re, ids)
    reload_diff = (logits - logits_re).abs().max().item()
    assert reload_diff < 1e-9, f"{name}: reload differs by {reload_diff}"
    # How far float32 compute lands from the float64 golden (tolerance hint).
    l32 = forward_logits(model, ids).double()
    f32_diff = (logits - l32).abs().max().item()

    # Every inv_freq buffer of the rotary embedding(s): one per layer type in
    # gemma3, a long and an original one in longrope.
    # (Found by name: gemma3 had rotary_emb and rotary_emb_local in 4.x.)
    inv_freqs = {n: [float(x) for x in b.double().tolist()]
                 for n, b in m64.model.named_buffers() if "inv_freq" in n}
    inv_freq = inv_freqs.get("rotary_emb.inv_freq",
                             next(iter(inv_freqs.values()), []))
    att_scale = {}
    for n, mod in m64.model.named_modules():
        v = getattr(mod, "attention_scaling", None)
        if v is not None:
            att_scale[n] = ({k: float(x) for k, x in v.items()}
                            if isinstance(v, dict) else float(v))
    if list(att_scale) == ["rotary_emb"]:
        att_scale = att_scale["rotary_emb"]
    rope_check = None
    if case["rope"]["rope_type"] == "llama3":
        r = case["rope"]
        plain, ref = llama3_inv_freq_ref(
            case["cfg"]["head_dim"], r["rope_theta"], r["factor"],
            r["low_freq_factor"], r["high_freq_factor"],
            r["original_max_position_embeddings"])
        err = max(abs(a - b) / b for a, b in zip(inv_freq, ref))
        changed = sum(1 for a, b in zip(ref, plain) if abs(a - b) > 1e-9 * b)
        assert err < 1e-6, f"llama3 inv_freq mismatch {inv_freq} vs {ref}"
        assert changed >= 2, "llama3 scaling changed too few frequencies"
        rope_check = dict(plain_inv_freq=plain, reference_inv_freq=ref,
                          max_rel_err=err, n_changed=changed)

    with open(os.path.join(d, "config.json")) as f:
        saved_cfg = json.load(f)

    lg = logits.tolist()
    exp = {
        "case": name,
        "description": case["desc"],
        "tokens": ids,
        "logits": [[fmt(v) for v in row] for row in lg],
        "dtype": "float32",
        "compute_dtype": "float64",
        "argmax": [int(i) for i in logits.argmax(-1).tolist()],
        "logits_abs_max": fmt(logits.abs().max().item()),
        "logits_std": fmt(logits.std().item()),
        "float32_forward_max_abs_diff": fmt(f32_diff),
        "rope_inv_freq": [fmt(v) for v in inv_freq],
        "rope_inv_freq_buffers": {k: [fmt(v) for v in b]
                                  for k, b in inv_freqs.items()},
        "rope_attention_scaling": att_scale,
        "attn_implementation": "eager",
        "gpt_oss": oss,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "note": ("Weights stored float32; logits of ONE forward pass over "
                 "'tokens' (no KV cache, positions 0..n-1) computed with "
                 "model.double() (HF still computes RoPE cos/sin in float32 "
                 "and casts them). Logits rounded to 10 significant digits. "
                 "Made by scripts/make_golden.py, seed %d; re-init: embed "
                 "N(0,%g), linear N(0,%g), lm_head N(0,%g), bias N(0,%g), "
                 "norms 1+N(0,%g)." % (case["seed"], STD_EMBED, STD_LINEAR,
                                       STD_LM_HEAD, STD_BIAS, STD_NORM)),
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")

    print(f"=== {name}: config form {form}; removed {extra}")
    print("config.json:", json.dumps(saved_cfg, sort_keys=True))
    print("tensors:", len(keys), keys[:3], "... lm_head present:",
          "lm_head.weight" in keys)
    print(f"tokens {ids}")
    print(f"logits std {logits.std().item():.4f} absmax "
          f"{logits.abs().max().item():.4f}; reload diff {reload_diff:.3g}; "
          f"f32 diff {f32_diff:.3g}; argmax {exp['argmax']}")
    for k, b in inv_freqs.items():
        print(k, [round(v, 8) for v in b])
    print("attn scale", att_scale)
    if rope_check:
        print("llama3 check:", rope_check)
    for f in sorted(os.listdir(d)):
        print("  ", f, os.path.getsize(os.path.join(d, f)))


def main():
    if GptOssForCausalLM is None:  # transformers < 4.55: no gpt_oss
        CASES[:] = [c for c in CASES if c["name"] != "gpt_oss"]
    if len(sys.argv) < 2:
        sys.exit("usage: make_golden.py OUTDIR [CASE ...]")
    outdir = sys.argv[1]
    wanted = set(sys.argv[2:])
    unknown = wanted - {c["name"] for c in CASES}
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)}")
    os.makedirs(outdir, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    print("transformers", transformers.__version__, "torch", torch.__version__,
          "safetensors", safetensors.__version__)
    failed = []
    for case in CASES:
        if wanted and case["name"] not in wanted:
            continue
        try:
            run_case(case, outdir)
        except Exception:
            traceback.print_exc()
            failed.append(case["name"])
    if failed:
        print("FAILED:", failed)
        sys.exit(1)
    print("all cases done")


if __name__ == "__main__":
    main()
