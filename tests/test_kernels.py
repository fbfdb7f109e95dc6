"""The Triton kernels against their PyTorch references (on the CPU through TRITON_INTERPRET=1, see conftest).

Tolerances: fp32 inputs within 1e-5 absolute (outputs are O(1)); fp16 inputs within 5e-3 absolute
+ 5e-3 relative of the reference computed in fp32 on the same fp16 values (the kernels round the
softmax weights and the output to fp16). bf16 is checked on a GPU only (benchmarks/gpu_check.py):
the interpreter computes bf16 wrongly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

import radiofm.kernels as kernels  # noqa: E402
from radiofm.kernels.attention import AttentionConfig, _descriptors, _launch_args  # noqa: E402
from radiofm.kernels import (  # noqa: E402
    masked_attention,
    masked_attention_reference,
    patch_embed,
    patch_embed_reference,
)

FP32 = dict(atol=1e-5, rtol=0.0)
FP16 = dict(atol=5e-3, rtol=5e-3)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _qkv(batch, heads, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, d, generator=g).to(DEVICE) for _ in range(3)]


def _padding(kind: str, batch: int, n: int, seed=0) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "all":
        mask = torch.ones(batch, n, dtype=torch.bool)
    elif kind == "random":
        mask = torch.rand(batch, n, generator=g) < 0.5
    elif kind == "tail":  # variable length: the second half of the keys is padding, whole blocks skipped
        mask = torch.arange(n)[None, :].expand(batch, n) < n // 2
    elif kind == "single":
        mask = torch.zeros(batch, n, dtype=torch.bool)
        mask[torch.arange(batch), torch.randint(n, (batch,), generator=g)] = True
    elif kind == "empty":
        mask = torch.zeros(batch, n, dtype=torch.bool)
    else:
        raise AssertionError(kind)
    return mask.to(DEVICE)


# --------------------------------------------------------------------------- attention
@pytest.mark.parametrize("d,n", [(32, 37), (64, 37), (128, 37), (32, 150), (64, 197), (64, 128), (48, 20)])
@pytest.mark.parametrize("kind", ["none", "all", "random", "tail", "single", "empty"])
def test_attention_fp32_matches_reference(d, n, kind):
    q, k, v = _qkv(2, 2, n, d)
    mask = _padding(kind, 2, n)
    out = masked_attention(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, masked_attention_reference(q, k, v, mask), **FP32)


@pytest.mark.parametrize("kind", ["none", "random", "single"])
def test_attention_fp16_inputs(kind):
    q, k, v = (t.half() for t in _qkv(2, 3, 50, 64))
    mask = _padding(kind, 2, 50)
    out = masked_attention(q, k, v, mask)
    assert out.dtype == torch.float16
    expected = masked_attention_reference(q.float(), k.float(), v.float(), mask)
    torch.testing.assert_close(out.float(), expected, **FP16)


TAIL = AttentionConfig(block_m=64, block_n=32, num_warps=4, num_stages=3, tail=True)


@pytest.mark.parametrize("d,n,tails", [(64, 197, (16, 16)), (48, 70, (16, 16)), (32, 37, (0, 16)), (64, 20, (32, 0)),
                                       (64, 128, (0, 0))])
@pytest.mark.parametrize("kind", ["none", "random", "tail", "single", "empty"])
def test_attention_with_smaller_tiles_for_the_ragged_ends_matches_reference(d, n, tails, kind):
    q, k, v = _qkv(2, 2, n, d)
    mask = _padding(kind, 2, n)
    _, _, meta = _launch_args(q, k, v, mask, torch.empty_like(q), d ** -0.5, TAIL)
    assert (meta["TAIL_M"], meta["TAIL_N"]) == tails  # the tail tiles this shape takes
    torch.testing.assert_close(masked_attention(q, k, v, mask, config=TAIL),
                               masked_attention_reference(q, k, v, mask), **FP32)


@pytest.mark.parametrize("d,n,tail_n", [(64, 197, 16), (48, 70, 16), (64, 20, 0)])
@pytest.mark.parametrize("kind", ["none", "random", "single", "empty"])
def test_attention_with_a_smaller_tile_for_the_last_key_block_only_matches_reference(d, n, tail_n, kind):
    q, k, v = _qkv(2, 2, n, d)
    mask = _padding(kind, 2, n)
    keys_only = TAIL._replace(tail="keys")
    _, _, meta = _launch_args(q, k, v, mask, torch.empty_like(q), d ** -0.5, keys_only)
    assert (meta["TAIL_M"], meta["TAIL_N"]) == (0, tail_n)  # whole query blocks, a smaller last key block
    torch.testing.assert_close(masked_attention(q, k, v, mask, config=keys_only),
                               masked_attention_reference(q, k, v, mask), **FP32)


def test_attention_refuses_an_unknown_tail_setting():
    q, k, v = _qkv(1, 1, 20, 16)
    with pytest.raises(ValueError, match="config.tail must be False, True or 'keys', got 'queries'"):
        masked_attention(q, k, v, config=TAIL._replace(tail="queries"))


def test_attention_tail_tiles_are_ignored_on_the_descriptor_path():
    q, k, v = _qkv(2, 2, 197, 64)
    _, _, meta = _launch_args(q, k, v, None, torch.empty_like(q), 0.125, TAIL._replace(tma=True))
    assert meta["USE_TMA"] and meta["TAIL_M"] == meta["TAIL_N"] == 0  # a descriptor's box is fixed


TMA = AttentionConfig(block_m=32, block_n=16, num_warps=4, num_stages=2, tma=True)


@pytest.mark.parametrize("d,n", [(64, 37), (48, 20), (32, 150)])
@pytest.mark.parametrize("kind", ["none", "random", "single", "empty"])
def test_attention_through_tensor_descriptors_matches_reference(d, n, kind):
    q, k, v = _qkv(2, 2, n, d)
    mask = _padding(kind, 2, n)
    assert _descriptors(q, k, v, torch.empty_like(q), TMA, max(16, 1 << (d - 1).bit_length())) is not None
    torch.testing.assert_close(masked_attention(q, k, v, mask, config=TMA),
                               masked_attention_reference(q, k, v, mask), **FP32)


@pytest.mark.parametrize("config", [None, TMA], ids=["pointers", "descriptors"])
def test_attention_rows_without_keys_are_zeros_and_padded_values_are_never_used(config):
    # Pointer loads never read padded keys; a descriptor load reads their rows, and the kernel must
    # select them away. Either way, whatever they hold, even NaN and inf, must not reach the output.
    q, k, v = _qkv(3, 2, 40, 32)
    mask = _padding("random", 3, 40)
    mask[1] = False
    k_dirty, v_dirty = k.clone(), v.clone()
    k_dirty[~mask[:, None, :, None].expand_as(k)] = float("nan")
    v_dirty[~mask[:, None, :, None].expand_as(v)] = float("inf")
    out = masked_attention(q, k_dirty, v_dirty, mask, config=config)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    torch.testing.assert_close(out, masked_attention_reference(q, k, v, mask), **FP32)


def test_attention_tma_takes_the_models_strided_views_and_falls_back_where_it_cannot():
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, 45, 3, 2, 32, generator=g).to(DEVICE).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    assert _descriptors(q, k, v, torch.empty_like(q), TMA, 32) is not None
    torch.testing.assert_close(masked_attention(q, k, v, config=TMA), masked_attention_reference(q, k, v), **FP32)
    # Every other element along the head dim: no unit stride, so the pointer path runs instead.
    wide = torch.randn(2, 2, 45, 64, generator=g).to(DEVICE)
    k_strided = wide[..., ::2]
    assert _descriptors(q, k_strided, v, torch.empty_like(q), TMA, 32) is None
    torch.testing.assert_close(masked_attention(q, k_strided, v, config=TMA),
                               masked_attention_reference(q, k_strided, v), **FP32)


def test_attention_strided_views_cross_length_and_scale():
    # The model's q, k, v are permuted slices of one qkv projection: no contiguous copy needed.
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 45, 3, 2, 32, generator=g).to(DEVICE).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    assert not q.is_contiguous()
    wide = _padding("random", 2, 90)
    mask = wide[:, ::2]  # a strided bool view
    torch.testing.assert_close(masked_attention(q, k, v, mask), masked_attention_reference(q, k, v, mask), **FP32)
    # Fewer queries than keys, and an explicit scale.
    q_short = q[:, :, :7]
    torch.testing.assert_close(masked_attention(q_short, k, v, mask, scale=0.3),
                               masked_attention_reference(q_short, k, v, mask, scale=0.3), **FP32)


def test_attention_reference_agrees_with_torch_sdpa():
    q, k, v = _qkv(2, 2, 20, 32)
    mask = _padding("random", 2, 20)
    mask[:, 0] = True  # SDPA gives NaN for rows with no key; the reference defines them as zeros
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(masked_attention_reference(q, k, v, mask), sdpa, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda q, k, v, m: (q[0], k, v, m), "4-D"),
        (lambda q, k, v, m: (q, k.half(), v, m), "one dtype"),
        (lambda q, k, v, m: (q.long(), k.long(), v.long(), m), "float32, float16 or bfloat16"),
        (lambda q, k, v, m: (q, k[:, :, :, :16], v[:, :, :, :16], m), "k and v"),
        (lambda q, k, v, m: (q, k, v, m.int()), "bool"),
        (lambda q, k, v, m: (q, k, v, m[:, :5]), r"\(B, Nk\)"),
        (lambda q, k, v, m: (q, k.to("meta"), v, m), "one device"),
    ],
)
def test_attention_rejects_bad_inputs(change, message):
    q, k, v = _qkv(2, 2, 8, 32)
    with pytest.raises(ValueError, match=message):
        masked_attention(*change(q, k, v, _padding("all", 2, 8)))


def test_attention_takes_a_custom_positive_scale_and_refuses_others():
    q, k, v = _qkv(2, 2, 37, 32)
    mask = _padding("random", 2, 37)
    torch.testing.assert_close(masked_attention(q, k, v, mask, scale=0.3),
                               masked_attention_reference(q, k, v, mask, scale=0.3), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="scale must be positive"):
        masked_attention(q, k, v, scale=-1.0)


def test_attention_rejects_oversized_head_dim():
    q, k, v = _qkv(1, 1, 4, 512)
    with pytest.raises(ValueError, match="head dim"):
        masked_attention(q, k, v)


# --------------------------------------------------------------------------- patch embedding
def _patch_inputs(batch, chans, height, width, p, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, chans, height, width, generator=g)
    weight = torch.randn(dim, chans, p, p, generator=g) / (chans * p * p) ** 0.5  # O(1) outputs
    bias = torch.randn(dim, generator=g) * 0.1
    pos = torch.randn(1, (height // p) * (width // p), dim, generator=g) * 0.1
    return [t.to(DEVICE) for t in (images, weight, bias, pos)]


def _keep(kind: str, batch: int, n_tokens: int, n_keep: int, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    keep = torch.stack([torch.randperm(n_tokens, generator=g)[:n_keep] for _ in range(batch)])
    if kind == "sorted":
        keep = keep.sort(dim=1).values
    elif kind == "int32":
        keep = keep.int()
    return keep.to(DEVICE)


@pytest.mark.parametrize("chans,height,width,p,dim", [(1, 32, 48, 8, 64), (3, 32, 32, 8, 40), (1, 32, 32, 16, 96)])
@pytest.mark.parametrize("keep_kind", ["none", "random", "sorted", "int32"])
def test_patch_embed_fp32_matches_reference(chans, height, width, p, dim, keep_kind):
    images, weight, bias, pos = _patch_inputs(2, chans, height, width, p, dim)
    n_tokens = pos.shape[1]
    keep = _keep(keep_kind, 2, n_tokens, max(1, n_tokens // 4))
    out = patch_embed(images, weight, bias, pos, keep)
    expected = patch_embed_reference(images, weight, bias, pos, keep)
    assert out.shape == expected.shape == (2, n_tokens if keep is None else keep.shape[1], dim)
    torch.testing.assert_close(out, expected, **FP32)


def test_patch_embed_pos_2d_no_bias_and_duplicate_indices():
    images, weight, _, pos = _patch_inputs(2, 1, 24, 24, 8, 32)
    keep = torch.tensor([[8, 0, 0, 3], [1, 8, 2, 5]], device=DEVICE)
    torch.testing.assert_close(patch_embed(images, weight, None, pos[0], keep),
                               patch_embed_reference(images, weight, None, pos[0], keep), **FP32)


def test_patch_embed_fp16_inputs():
    images, weight, bias, pos = _patch_inputs(2, 1, 32, 32, 8, 64)
    keep = _keep("random", 2, 16, 4)
    half = [t.half() for t in (images, weight, bias)]
    out = patch_embed(*half, pos, keep)
    assert out.dtype == torch.float16
    expected = patch_embed_reference(*(t.float() for t in half), pos, keep)
    torch.testing.assert_close(out.float(), expected, **FP16)


def test_patch_embed_strided_views():
    images, weight, bias, pos = _patch_inputs(2, 2, 32, 64, 8, 48)
    images = images[:, :, :, ::2]  # 32 x 32, every other column
    weight = weight.transpose(2, 3)  # still (D, C, p, p), not contiguous
    keep = _keep("random", 2, 16, 10)[:, ::2]
    pos = pos[:, :16]
    assert not (images.is_contiguous() or weight.is_contiguous() or keep.is_contiguous())
    torch.testing.assert_close(patch_embed(images, weight, bias, pos, keep),
                               patch_embed_reference(images, weight, bias, pos, keep), **FP32)


def test_patch_embed_unchecked_out_of_range_keep_reads_nothing_outside():
    images, weight, bias, pos = _patch_inputs(1, 1, 16, 16, 8, 16)
    keep = torch.tensor([[3, 4, 0]], device=DEVICE)
    out = patch_embed(images, weight, bias, pos, keep, check_keep=False)
    torch.testing.assert_close(out[:, 0::2], patch_embed_reference(images, weight, bias, pos, keep[:, 0::2]), **FP32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda x, w, b, pos, keep: (x[0], w, b, pos, keep), "4-D"),
        (lambda x, w, b, pos, keep: (x[..., :30], w, b, pos, keep), "multiple of the patch size"),
        (lambda x, w, b, pos, keep: (x, w[:, :, :4], b, pos, keep), r"\(D, C, p, p\)"),
        (lambda x, w, b, pos, keep: (x.repeat(1, 2, 1, 1), w, b, pos, keep), r"\(D, C, p, p\)"),
        (lambda x, w, b, pos, keep: (x, w.half(), b, pos, keep), "differs from images dtype"),
        (lambda x, w, b, pos, keep: (x.int(), w.int(), b, pos, keep), "float32, float16 or bfloat16"),
        (lambda x, w, b, pos, keep: (x, w, b[:3], pos, keep), "bias"),
        (lambda x, w, b, pos, keep: (x, w, b, pos[:, :5], keep), "pos_embed"),
        (lambda x, w, b, pos, keep: (x, w, b, pos, keep[:1]), "keep must be"),
        (lambda x, w, b, pos, keep: (x, w, b, pos, keep.float()), "int32 or int64"),
        (lambda x, w, b, pos, keep: (x, w, b, pos, keep + 16), r"in \[0, 16\)"),
        (lambda x, w, b, pos, keep: (x, w, b, pos, keep - 5), r"in \[0, 16\)"),
        (lambda x, w, b, pos, keep: (x, w.to("meta"), b, pos, keep), "one device"),
    ],
)
def test_patch_embed_rejects_bad_inputs(change, message):
    images, weight, bias, pos = _patch_inputs(2, 1, 32, 32, 8, 16)
    keep = _keep("random", 2, 16, 4)
    with pytest.raises(ValueError, match=message):
        patch_embed(*change(images, weight, bias, pos, keep))


# --------------------------------------------------------------------------- package
def test_importing_the_package_does_not_import_triton():
    code = "import sys, radiofm.kernels; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_triton_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real_find_spec(name, *a))
    monkeypatch.delitem(vars(kernels), "masked_attention", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'radiofm\[triton\]'"):
        kernels.masked_attention  # noqa: B018


def test_triton_available_here():
    assert kernels.triton_available()


def test_gpu_check_small_runs_every_section(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    subprocess.run([sys.executable, str(script), "--small", "--out", str(tmp_path)], check=True, env=env,
                   capture_output=True)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["all_correct"] and not report["errors"] and not report["skipped"]
    assert report["attention_bench"] and report["patch_embed_bench"] and report["sweep"]
    assert any(c.get("config", {}).get("tma") for c in report["correctness"])  # the descriptor path is checked
    best = report["best_attention"]  # the sweep's fastest config, re-timed beside SDPA
    attention_sweep = [r for r in report["sweep"] if r["kernel"] == "masked_attention"]
    assert attention_sweep and all(r["correct"] for r in attention_sweep)  # each config checked before it is timed
    fastest = min((r for r in report["sweep"] if "unmasked_graph_ms" in r), key=lambda r: r["unmasked_graph_ms"])
    assert best["config"] == fastest["config"] and best["triton_graph_ms"] > 0 and best["sdpa_graph_ms"] > 0
    assert set(report["targets"]) == {"attention_unmasked_vs_sdpa", "attention_half_padding_vs_sdpa_masked",
                                      "patch_embed_keep_vs_conv_add_gather"}


_COMPILE_SCRIPT = """
import json, sys
from dataclasses import asdict
from radiofm.kernels import compile_check as cc
wanted = {"attention d=64 fp16": (80, 90), "attention d=64 fp16 key padding": (90,),
          "attention d=64 fp16 tma": (90,), "attention d=64 fp16 maxnreg 80": (90,),
          "attention d=64 fp16 tail tiles": (90,), "attention d=64 fp16 tail keys": (90,),
          "patch embed D=768 fp16 keep 25%": (90,)}
results = []
for case in cc.cases():
    if case.name in wanted:
        results += cc.run(wanted[case.name], [case], log=lambda line: None)
json.dump([asdict(r) for r in results], sys.stdout)
"""


def test_default_configs_compile_for_ampere_and_hopper_without_spills_within_shared_memory():
    """The interpreter accepts what a GPU compile may reject: compile the real launches for sm_80 and
    sm_90 here (no GPU needed) and check what the compiler made of them."""
    from radiofm.kernels.compile_check import _cuobjdump

    if _cuobjdump() is None:
        pytest.skip("no cuobjdump (triton's NVIDIA backend ships one) to read the compiled kernels")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _COMPILE_SCRIPT], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {(r["case"], r["arch"]): r for r in json.loads(out.stdout)}
    assert len(results) == 8
    for (case, arch), r in results.items():
        assert r["ok"], f"{case} on sm_{arch}: {r['error']}"
        assert r["spill_bytes"] == 0, f"{case} on sm_{arch} spills {r['spill_bytes']} bytes per thread"
        assert r["shared_bytes"] <= r["shared_limit"], f"{case} on sm_{arch} needs {r['shared_bytes']} B of shared memory"
        mma = r["instructions"]["wgmma" if arch >= 90 else "mma"]
        assert mma > 0, f"{case} on sm_{arch} has no tensor-core instruction"
    plain, tma = results[("attention d=64 fp16", 90)], results[("attention d=64 fp16 tma", 90)]
    assert plain["instructions"]["cp_async"] > 0 and plain["instructions"]["tma"] == 0  # pipelined loads
    assert tma["instructions"]["tma"] > 0 and tma["config"]["USE_TMA"]
    # The register cap the GPU sweep tries (6 programs per SM instead of 5) holds without spilling.
    assert results[("attention d=64 fp16 maxnreg 80", 90)]["registers"] <= 80
    # Ragged-end tiles: the 16-row query tile takes warp MMAs beside the 64-row tile's warp-group ones.
    # The 4 warps split a 16-row tile's keys, so its row max and sum cross warps through shared memory
    # (more barriers); a smaller last key block alone keeps the plain kernel's warp-group MMAs and barriers.
    tail = results[("attention d=64 fp16 tail tiles", 90)]["instructions"]
    assert tail["wgmma"] > 0 and tail["mma"] > 0
    assert tail["barriers"] > plain["instructions"]["barriers"]
    keys = results[("attention d=64 fp16 tail keys", 90)]
    assert keys["config"]["TAIL_N"] == 16 and "TAIL_M" not in keys["config"]
    assert keys["instructions"]["mma"] == 0 and keys["instructions"]["barriers"] == plain["instructions"]["barriers"]


# --------------------------------------------------------------------------- the model's dispatch
def _micro(task, **overrides):
    from radiofm.config import preset
    from radiofm.model import build_model

    torch.manual_seed(0)
    return build_model(preset("vit-micro", task=task, **overrides)).eval().to(DEVICE)


@pytest.fixture
def kernel_calls(monkeypatch):
    """How often the model's dispatch reached each kernel."""
    calls = {"masked_attention": 0, "patch_embed": 0}
    for name in calls:
        kernel = getattr(kernels, name)

        def counted(*args, _name=name, _kernel=kernel, **kwargs):
            calls[_name] += 1
            return _kernel(*args, **kwargs)

        monkeypatch.setattr(kernels, name, counted)
    return calls


def _both_backends(model, run):
    with torch.no_grad():
        expected = run(model.set_backends(attn="torch", patch="torch"))
        got = run(model.set_backends(attn="triton", patch="triton"))
    return got, expected


def test_model_forward_matches_torch_backends_mae(kernel_calls):
    model = _micro("mae")
    images = torch.randn(2, 1, 32, 32).to(DEVICE)

    def run(m):
        return m(images, generator=torch.Generator(DEVICE).manual_seed(3))

    (loss, pred, mask), (loss_ref, pred_ref, mask_ref) = _both_backends(model, run)
    assert torch.equal(mask, mask_ref)
    torch.testing.assert_close(pred, pred_ref, **FP32)
    torch.testing.assert_close(loss, loss_ref, **FP32)
    # Encoder and decoder blocks: 2 + 1 attention calls, one patch embedding.
    assert kernel_calls == {"masked_attention": 3, "patch_embed": 1}


def test_model_forward_matches_torch_backends_classifier_with_padding(kernel_calls):
    model = _micro("classify", num_classes=3)
    images = torch.randn(3, 1, 32, 32).to(DEVICE)
    padding = _padding("random", 3, 16)
    padding[:, 0] = True  # the classifier's average pool needs one valid patch per sample

    for key_padding in (None, padding):
        got, expected = _both_backends(model, lambda m: m(images, key_padding=key_padding))
        torch.testing.assert_close(got, expected, **FP32)
    assert kernel_calls == {"masked_attention": 4, "patch_embed": 2}


def test_model_with_triton_backends_still_trains_through_torch(kernel_calls):
    model = _micro("classify", num_classes=3)
    images = torch.randn(2, 1, 32, 32).to(DEVICE)
    model.set_backends(attn="triton", patch="triton")(images).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.set_backends(attn="torch", patch="torch")(images).sum().backward()
    expected = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(expected) > 0
    assert kernel_calls == {"masked_attention": 0, "patch_embed": 0}
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)
