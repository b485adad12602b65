"""mmcourse.kernels.fused_clip_loss: the Triton kernel (in Triton's CPU interpreter) and the chunked
PyTorch path, against mmcourse.losses.clip_loss computed in fp64 on the same inputs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmcourse.kernels import fused_clip_loss
from mmcourse.kernels.chunked_clip_loss import chunked_clip_loss
from mmcourse.losses import clip_loss

ROOT = Path(__file__).resolve().parents[1]


def _pairs(n, d, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)  # correlated pairs
    return img.to(dtype), txt.to(dtype)


def _value_and_grads(loss_fn, img, txt, scale, upstream=1.0):
    """Loss and the gradients of ``upstream * loss`` w.r.t. both features and the logit scale."""
    img, txt = img.detach().clone().requires_grad_(), txt.detach().clone().requires_grad_()
    s = torch.tensor(scale, dtype=torch.float32 if img.dtype != torch.float64 else torch.float64, requires_grad=True)
    loss = loss_fn(img, txt, s)
    (upstream * loss).backward()
    return loss.detach(), img.grad, txt.grad, s.grad


def _reference(img, txt, scale, upstream=1.0):
    """clip_loss in fp64 on exactly the values the kernel sees."""
    return _value_and_grads(clip_loss, img.double(), txt.double(), scale, upstream)


FP32_EPS = torch.finfo(torch.float32).eps


def _assert_matches_reference(ours, ref, dtype, scale):
    loss, d_img, d_txt, d_scale = ours
    ref_loss, ref_img, ref_txt, ref_scale = ref
    assert loss.dtype == torch.float32 and d_img.dtype == dtype and d_txt.dtype == dtype
    # the loss is reduced in fp32 from the (possibly bf16) inputs: it is fp32-accurate, that is within a
    # few roundings of the largest logit (scale * cosine) added into each log-sum-exp
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=8 * FP32_EPS * max(1.0, scale))
    # gradients are handed back in the input dtype: compare at that dtype's resolution
    rtol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    for ours_g, ref_g in ((d_img, ref_img), (d_txt, ref_txt)):
        torch.testing.assert_close(ours_g.double(), ref_g, rtol=rtol, atol=rtol * ref_g.abs().max().item() + 1e-7)
    torch.testing.assert_close(d_scale.double(), ref_scale, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------- Triton, interpreted
#
# Triton reads TRITON_INTERPRET once, when it is first imported (that is when tl.zeros, tl.sum, ... and
# the kernels are wrapped for the compiler or the interpreter). So the interpreted kernels run in one
# child process started with TRITON_INTERPRET=1, on inputs made here; this process never imports
# triton in interpreter mode, and GPU tests below can compile the real kernels in it.

# name: (n, d, logit scale, dtype, upstream gradient); the kernels use 64 x 64 tiles, 64 features at a time
TRITON_CASES = {
    **{
        f"n{n}-d{d}-s{scale:g}": (n, d, scale, torch.float32, 1.0)
        for n, d in [(1, 3), (37, 5), (130, 33), (512, 64)]
        for scale in (1.0, 100.0)
    },
    "bf16-n100-d48-s100": (100, 48, 100.0, torch.bfloat16, 3.0),
    "fp16-n100-d48-s100": (100, 48, 100.0, torch.float16, 3.0),
    "identical-n20-s100": (20, 8, 100.0, torch.float32, 1.0),  # every pair the same vector
}

INTERPRET_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from mmcourse.kernels import fused_clip_loss

    torch.set_num_threads(1)
    results = {}
    for name, (img, txt, scale, upstream) in torch.load(sys.argv[1]).items():
        img, txt = img.requires_grad_(), txt.requires_grad_()
        s = torch.tensor(scale, requires_grad=True)
        loss = fused_clip_loss(img, txt, s, backend="triton")
        (upstream * loss).backward()
        results[name] = (loss.detach(), img.grad, txt.grad, s.grad)
    torch.save(results, sys.argv[2])
    """
)


def _triton_inputs(name):
    n, d, scale, dtype, upstream = TRITON_CASES[name]
    if name == "identical-n20-s100":
        x = F.normalize(torch.ones(n, d), dim=1)
        return x, x.clone(), scale, upstream
    img, txt = _pairs(n, d, seed=n + d, dtype=dtype)
    return img, txt, scale, upstream


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Loss and gradients of every case in TRITON_CASES, from the kernels run by Triton's interpreter."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    tmp = tmp_path_factory.mktemp("triton")
    torch.save({name: _triton_inputs(name) for name in TRITON_CASES}, tmp / "inputs.pt")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", INTERPRET_SCRIPT, str(tmp / "inputs.pt"), str(tmp / "outputs.pt")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return torch.load(tmp / "outputs.pt")


@pytest.mark.parametrize("name", [name for name in TRITON_CASES if name.startswith("n")])
def test_triton_value_and_gradients_equal_clip_loss(interpreted, name):
    img, txt, scale, upstream = _triton_inputs(name)
    _assert_matches_reference(interpreted[name], _reference(img, txt, scale, upstream), torch.float32, scale)


@pytest.mark.parametrize("name", ["bf16-n100-d48-s100", "fp16-n100-d48-s100"])
def test_triton_half_precision_inputs_accumulate_in_fp32(interpreted, name):
    img, txt, scale, upstream = _triton_inputs(name)
    _assert_matches_reference(interpreted[name], _reference(img, txt, scale, upstream), img.dtype, scale)


def test_triton_stable_at_logit_scale_100(interpreted):
    """All pairs identical: every logit is 100, each row a uniform guess among N: the loss is log N."""
    loss, d_img, d_txt, _ = interpreted["identical-n20-s100"]
    torch.testing.assert_close(loss, torch.log(torch.tensor(20.0)), rtol=0, atol=8 * FP32_EPS * 100)
    assert torch.isfinite(d_img).all() and torch.isfinite(d_txt).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the compiled kernels)")
@pytest.mark.parametrize("n, d", [(1, 3), (130, 33), (4099, 512)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_on_gpu_equals_clip_loss(n, d, dtype):
    """The compiled kernels: with bf16 inputs the gradient's tiles are multiplied in bf16 (as in
    FlashAttention), so those gradients are compared at bf16's resolution."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: the kernels are not compiled")
    img, txt = _pairs(n, d, seed=n, dtype=dtype)
    ours = _value_and_grads(_triton_cuda, img.cuda(), txt.cuda(), 100.0)
    _assert_matches_reference(tuple(t.cpu() for t in ours), _reference(img, txt, 100.0), dtype, 100.0)


def _triton_cuda(img, txt, s):
    return fused_clip_loss(img, txt, s.cuda(), backend="triton")


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_triton_kernels_compile_for_an_h100(dtype):
    """No GPU needed: Triton lowers both kernels to PTX and runs its bundled ptxas for sm_90, which
    checks the code the interpreter never runs (the tensor-core dot in the input dtype); half-precision
    tiles must use the tensor cores (mma/wgmma instructions)."""
    import inspect

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "constexprs" not in inspect.signature(ASTSource).parameters:
        pytest.skip("uses the compile API of Triton >= 3.3")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: the kernels are wrapped for the interpreter")
    from mmcourse.kernels import triton_clip_loss as kernels

    blocks = dict(BLOCK_M=kernels.BLOCK_M, BLOCK_N=kernels.BLOCK_N, BLOCK_D=kernels.BLOCK_D, UPCAST=False)
    blocks["DOT_PRECISION"] = "ieee" if dtype == "fp32" else "tf32"
    f32, i32 = "*fp32", "i32"
    lse = dict(I_ptr=f"*{dtype}", T_ptr=f"*{dtype}", scale_ptr=f32, lse_row_ptr=f32, diag_ptr=f32, col_lse_ptr=f32,
               N=i32, D=i32, stride_i=i32, stride_t=i32)
    grad = dict(A_ptr=f"*{dtype}", B_ptr=f"*{dtype}", scale_ptr=f32, lse_a_ptr=f32, lse_b_ptr=f32, dA_ptr=f32,
                ds_ptr=f32, N=i32, D=i32, stride_a=i32, stride_b=i32)
    for fn, signature, constexprs in [(kernels._clip_lse_kernel, lse, blocks),
                                      (kernels._clip_grad_kernel, grad, dict(blocks, WITH_DS=True))]:
        signature = {**signature, **{name: "constexpr" for name in constexprs}}
        compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32))
        uses_tensor_cores = "mma" in compiled.asm["ptx"]
        assert uses_tensor_cores == (dtype != "fp32"), (fn.__name__, dtype)


def test_triton_without_interpreter_on_cpu_says_how_to_enable_it(monkeypatch):
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process runs Triton in its interpreter")
    img, txt = _pairs(4, 8, seed=0)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fused_clip_loss(img, txt, 1.0, backend="triton")


def test_triton_rejects_fp64_and_points_to_torch():
    img, txt = _pairs(4, 8, seed=0, dtype=torch.float64)
    with pytest.raises(TypeError, match="backend='torch'"):
        fused_clip_loss(img, txt, 1.0, backend="triton")


# ------------------------------------------------------------------------------ chunked PyTorch


def _chunked(chunk_size):
    return lambda img, txt, s: chunked_clip_loss(img, txt, s, chunk_size=chunk_size)


@pytest.mark.parametrize("n, d, chunk", [(1, 3, None), (37, 5, 4), (130, 33, 7), (512, 64, 100), (512, 64, None)])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_chunked_value_and_gradients_equal_clip_loss(n, d, chunk, scale):
    img, txt = _pairs(n, d, seed=n + d)
    ours = _value_and_grads(_chunked(chunk), img, txt, scale, upstream=0.5)
    _assert_matches_reference(ours, _reference(img, txt, scale, upstream=0.5), torch.float32, scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_half_precision_inputs(dtype):
    img, txt = _pairs(50, 16, seed=3, dtype=dtype)
    _assert_matches_reference(_value_and_grads(_chunked(8), img, txt, 50.0), _reference(img, txt, 50.0), dtype, 50.0)


def test_chunked_backward_passes_gradcheck_in_fp64():
    img, txt = _pairs(9, 4, seed=5, dtype=torch.float64)
    scale = torch.tensor(7.0, dtype=torch.float64)
    inputs = (img.requires_grad_(), txt.requires_grad_(), scale.requires_grad_())
    assert torch.autograd.gradcheck(lambda i, t, s: chunked_clip_loss(i, t, s, chunk_size=4), inputs)


def test_auto_on_cpu_is_the_chunked_path_and_equals_open_clip(monkeypatch):
    open_clip_loss = pytest.importorskip("open_clip.loss")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # "auto" must not need the interpreter
    img, txt = _pairs(33, 12, seed=9, dtype=torch.float64)  # the same formula: in fp64 they agree to ~1e-15
    ours = fused_clip_loss(img, txt, torch.tensor(1 / 0.07, dtype=torch.float64))
    theirs = open_clip_loss.ClipLoss()(img, txt, torch.tensor(1 / 0.07, dtype=torch.float64))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_chunked_stable_at_logit_scale_100():
    """All pairs identical: every logit is 100, so each row is a uniform guess among N and the loss is
    log N; a plain exp(100) would overflow fp16 and lose fp32's precision."""
    x = F.normalize(torch.ones(20, 8), dim=1)
    loss = fused_clip_loss(x.clone().requires_grad_(), x.clone(), 100.0, backend="torch")
    torch.testing.assert_close(loss, torch.log(torch.tensor(20.0)), rtol=0, atol=8 * FP32_EPS * 100)
    img, txt = _pairs(64, 8, seed=11)
    _, d_img, d_txt, _ = _value_and_grads(lambda i, t, s: fused_clip_loss(i, t, s, backend="torch"), img, txt, 100.0)
    assert torch.isfinite(d_img).all() and torch.isfinite(d_txt).all()


def test_float_logit_scale_needs_no_grad():
    img, txt = _pairs(10, 6, seed=1)
    img.requires_grad_()
    fused_clip_loss(img, txt, 10.0).backward()
    ref = _reference(img, txt, 10.0)[1]
    torch.testing.assert_close(img.grad.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import torch.nn.functional as F
    from mmcourse.kernels import fused_clip_loss
    from mmcourse.losses import clip_loss

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    torch.set_num_threads(1)
    n, d = 8192, 128
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    loss_fn = clip_loss if sys.argv[1] == "naive" else (lambda i, t, s: fused_clip_loss(i, t, s, backend="torch"))
    try:  # reset the high-water mark to the current resident size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status("VmRSS")
    loss_fn(img, txt, torch.tensor(100.0)).backward()
    print(status("VmHWM") - before)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak resident size from Linux's /proc")
def test_chunked_peak_memory_is_a_small_fraction_of_the_naive_loss():
    """Forward + backward at N = 8192, D = 128, each in a fresh process: the increase of its peak
    resident size (VmHWM) over its size just before. glibc's malloc is told to give every block of
    64 KiB or more back to the system when freed (MALLOC_MMAP_THRESHOLD_), so the peak follows the
    tensors alive at once rather than the allocator's caching. The naive loss holds several N x N fp32
    matrices (256 MiB each); the chunked one a few (chunk, N) blocks of 16 MiB."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    peak = {}
    for which in ("naive", "chunked"):
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, which], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        peak[which] = int(out.stdout.split()[-1])
    one_logits_matrix = 8192 * 8192 * 4
    assert peak["naive"] > 2 * one_logits_matrix, peak  # the measurement sees N x N allocations at all
    assert peak["chunked"] < 0.15 * peak["naive"], {k: f"{v / 2**20:.0f} MiB" for k, v in peak.items()}


# --------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "img, txt, error, match",
    [
        (torch.zeros(3, 4), torch.zeros(4, 4), ValueError, "paired"),
        (torch.zeros(3, 4), torch.zeros(3, 5), ValueError, "embedding space"),
        (torch.zeros(4), torch.zeros(4), ValueError, r"\(N, D\) matrix"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), ValueError, r"\(N, D\) matrix"),
        (torch.zeros(0, 4), torch.zeros(0, 4), ValueError, "at least one"),
        (torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64), TypeError, "one dtype"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long), TypeError, "floating point"),
        ([[1.0]], torch.zeros(1, 1), TypeError, "torch.Tensor"),
    ],
)
def test_bad_features_are_explained(img, txt, error, match):
    with pytest.raises(error, match=match):
        fused_clip_loss(img, txt, 1.0)


@pytest.mark.parametrize(
    "scale, error, match",
    [
        (float("inf"), ValueError, "finite"),
        (torch.tensor(float("nan")), ValueError, "finite"),
        (torch.ones(2), ValueError, "scalar"),
        ("100", TypeError, "float or a one-element tensor"),
    ],
)
def test_bad_logit_scale_is_explained(scale, error, match):
    img, txt = _pairs(3, 4, seed=0)
    with pytest.raises(error, match=match):
        fused_clip_loss(img, txt, scale)


def test_unknown_backend_is_explained():
    img, txt = _pairs(3, 4, seed=0)
    with pytest.raises(ValueError, match="unknown backend 'cuda'.*'auto', 'triton', 'torch'"):
        fused_clip_loss(img, txt, 1.0, backend="cuda")


def test_importing_the_kernels_does_not_import_triton():
    code = "import sys, mmcourse.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
