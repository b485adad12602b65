"""The fused LoRA forward (mmcourse.kernels.lora_linear): the Triton kernel, run by Triton's CPU interpreter
on small odd sizes, equals the unfused PyTorch path, value and gradients; the dispatch and its errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmcourse.kernels import lora_linear
from mmcourse.kernels.lora import torch_lora_linear
from mmcourse.peft import LoRALinear

ROOT = Path(__file__).resolve().parents[1]

# name: (M, K, N, r, bias, dtype); the kernel uses 64 x 64 tiles, 32 features at a time, r padded to >= 16
CASES = {
    "m1-k3-n5-r1": (1, 3, 5, 1, True, torch.float32),
    "m37-k45-n29-r3": (37, 45, 29, 3, True, torch.float32),
    "m70-k33-n130-r17-nobias": (70, 33, 130, 17, False, torch.float32),
    "m65-k64-n64-r16": (65, 64, 64, 16, True, torch.float32),
    "bf16-m33-k40-n50-r4": (33, 40, 50, 4, True, torch.bfloat16),
    "fp16-m33-k40-n50-r8": (33, 40, 50, 8, True, torch.float16),
}


def _inputs(name):
    m, k, n, r, has_bias, dtype = CASES[name]
    g = torch.Generator().manual_seed(m * 1000 + k + n + r)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if has_bias else None
    a = torch.randn(r, k, generator=g) / k**0.5
    bb = torch.randn(n, r, generator=g)
    up = torch.randn(m, n, generator=g)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), cast(w), cast(b), cast(a), cast(bb), 0.75, up.to(dtype)


INTERPRET_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from mmcourse.kernels import lora_linear

    torch.set_num_threads(1)
    results = {}
    for name, (x, w, b, a, bb, s, up) in torch.load(sys.argv[1]).items():
        leaves = [t.requires_grad_() if t is not None else None for t in (x, w, b, a, bb)]
        y = lora_linear(*leaves, s, backend="triton")
        (y.float() * up.float()).sum().backward()
        results[name] = (y.detach(), *[t.grad if t is not None else None for t in leaves])
    torch.save(results, sys.argv[2])
    """
)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    tmp = tmp_path_factory.mktemp("triton_lora")
    torch.save({name: _inputs(name) for name in CASES}, tmp / "inputs.pt")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", INTERPRET_SCRIPT, str(tmp / "inputs.pt"), str(tmp / "outputs.pt")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return torch.load(tmp / "outputs.pt")


def _reference(name):
    """The unfused path in float64 (value and gradients)."""
    x, w, b, a, bb, s, up = _inputs(name)
    leaves = [t.double().requires_grad_() if t is not None else None for t in (x, w, b, a, bb)]
    y = torch_lora_linear(*leaves, s)
    (y * up.double()).sum().backward()
    return (y.detach(), *[t.grad if t is not None else None for t in leaves])


@pytest.mark.parametrize("name", list(CASES))
def test_interpreted_kernel_equals_unfused_path(interpreted, name):
    dtype = CASES[name][-1]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    got, want = interpreted[name], _reference(name)
    assert got[0].dtype == dtype and got[0].shape == want[0].shape
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        scale = w.abs().max().clamp(min=1.0)  # gradients summed over rows: compare relative to their size
        torch.testing.assert_close(g.double() / scale, w / scale, **tol)


def test_torch_path_is_what_LoRALinear_computes():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(13, 7), r=3, alpha=6)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(2, 5, 13)
    y = lora_linear(x, layer.base.weight, layer.base.bias, layer.lora_A.weight, layer.lora_B.weight, layer.scaling)
    assert torch.equal(y, layer(x))  # auto on CPU is the torch path, the same operations


def test_bad_input():
    x, w, b, a, bb = torch.randn(4, 6), torch.randn(5, 6), torch.randn(5), torch.randn(2, 6), torch.randn(5, 2)
    with pytest.raises(ValueError, match="unknown backend"):
        lora_linear(x, w, b, a, bb, 1.0, backend="cuda")
    with pytest.raises(ValueError, match="shapes do not fit"):
        lora_linear(x, w, b, a, bb.T, 1.0)
    with pytest.raises(ValueError, match="bias should have shape"):
        lora_linear(x, w, torch.randn(6), a, bb, 1.0)
    with pytest.raises(ValueError, match="one dtype"):
        lora_linear(x.double(), w, b, a, bb, 1.0)


def test_triton_without_interpreter_on_cpu_says_how_to_enable_it():
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process runs Triton in its interpreter")
    x, w, a, bb = torch.randn(4, 6), torch.randn(5, 6), torch.randn(2, 6), torch.randn(5, 2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        lora_linear(x, w, None, a, bb, 1.0, backend="triton")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the compiled kernel)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernel_on_gpu(dtype):
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: the kernel is not compiled")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1000, 257, device="cuda", generator=g, dtype=dtype)
    w = torch.randn(300, 257, device="cuda", generator=g, dtype=dtype) / 16
    a = torch.randn(16, 257, device="cuda", generator=g, dtype=dtype) / 16
    bb = torch.randn(300, 16, device="cuda", generator=g, dtype=dtype)
    got = lora_linear(x, w, None, a, bb, 2.0, backend="triton").double()
    want = torch_lora_linear(x.double(), w.double(), None, a.double(), bb.double(), 2.0)
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3  # TF32 / bf16 tensor cores
    torch.testing.assert_close(got / want.abs().max(), want / want.abs().max(), rtol=tol, atol=tol)


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_kernel_compiles_for_an_h100(dtype):
    """No GPU needed: Triton lowers the kernel to PTX for sm_90 (the code the interpreter never runs);
    bf16 tiles must use the tensor cores (mma instructions)."""
    import inspect

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "constexprs" not in inspect.signature(ASTSource).parameters:
        pytest.skip("uses the compile API of Triton >= 3.3")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: the kernel is wrapped for the interpreter")
    from mmcourse.kernels import triton_lora as kernels

    constexprs = dict(HAS_BIAS=True, R_PAD=16, BLOCK_M=kernels.BLOCK_M, BLOCK_N=kernels.BLOCK_N,
                      BLOCK_K=kernels.BLOCK_K, UPCAST=False, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
    t, i32 = f"*{dtype}", "i32"
    signature = dict(X_ptr=t, W_ptr=t, A_ptr=t, B_ptr=t, bias_ptr=t, Y_ptr=t, M=i32, N=i32, K=i32, R=i32,
                     scaling="fp32", stride_xm=i32, stride_wn=i32, stride_am=i32, stride_bn=i32, stride_ym=i32,
                     **{name: "constexpr" for name in constexprs})
    compiled = triton.compile(ASTSource(kernels._lora_forward_kernel, signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32))
    assert ("mma" in compiled.asm["ptx"]) == (dtype != "fp32")
