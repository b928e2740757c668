"""``mmcv.ops`` as mmcv's own tests see it (the stand-in of ``ablate.compat.mmcv_ops`` under
mmcv-lite, or the real one under full mmcv): PSAMask and CrissCrossAttention against references
written out here (values, gradients, contiguous outputs that ``.view(-1)`` accepts), each imported
by its mmcv submodule path, and the pure-PyTorch ``mmcv.ops.point_sample`` being mmcv's own."""
from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmcv")

from ablate.compat.mmcv_ops import install, is_standin  # noqa: E402
from support import psamask_reference  # noqa: E402

install()
with warnings.catch_warnings():  # mmcv-lite's notice that MultiScaleDeformableAttention is missing
    warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention", category=UserWarning)
    import mmcv  # noqa: E402
    import mmcv.ops  # noqa: E402


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
@pytest.mark.parametrize("mask, size", [((4, 4), (8, 8)), ((3, 5), (5, 6)), ((9, 11), (5, 6))])
def test_psamask_values_gradients_and_contiguity(psa_type, mask, size):
    from mmcv.ops.psa_mask import PSAMask  # where mmcv keeps it

    torch.manual_seed(0)
    x = torch.randn(2, mask[0] * mask[1], *size, dtype=torch.double, requires_grad=True)
    out = PSAMask(psa_type, mask)(x)
    assert out.is_contiguous()
    ref = psamask_reference(x, psa_type, *mask)
    assert out.shape == ref.shape == (2, size[0] * size[1], *size)
    assert torch.equal(out, ref)
    g = torch.randn(out.numel(), dtype=torch.double)
    (grad,) = torch.autograd.grad((out.view(-1) * g).sum(), x)  # mmcv's own test flattens with view
    (grad_ref,) = torch.autograd.grad((ref.reshape(-1) * g).sum(), x)
    assert torch.equal(grad, grad_ref)
    assert grad.abs().sum() > 0


def criss_cross_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Per pixel: softmax of q.k over its column and its row (the pixel itself once), then the
    weighted sum of v; output ``gamma * that + x``."""
    q, k, v = m.query_conv(x), m.key_conv(x), m.value_conv(x)
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for y in range(h):
        for xx in range(w):
            where = [(yy, xx) for yy in range(h)] + [(y, x2) for x2 in range(w) if x2 != xx]
            keys = torch.stack([k[:, :, p, r] for p, r in where], -1)  # B, C', N
            vals = torch.stack([v[:, :, p, r] for p, r in where], -1)  # B, C, N
            attn = torch.softmax((q[:, :, y, xx, None] * keys).sum(1), -1)  # B, N
            out[:, :, y, xx] = (vals * attn[:, None]).sum(-1)
    return m.gamma.scale * out + x


def test_criss_cross_attention_values_gradients_and_contiguity():
    from mmcv.ops.cc_attention import CrissCrossAttention  # where mmcv keeps it

    torch.manual_seed(1)
    m = CrissCrossAttention(16).double()
    with torch.no_grad():
        m.gamma.scale.fill_(0.7)  # zero-initialised: make the attention count
    x = torch.randn(2, 16, 5, 6, dtype=torch.double, requires_grad=True)
    out = m(x)
    assert out.is_contiguous() and out.shape == x.shape
    ref = criss_cross_reference(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn(out.numel(), dtype=torch.double)
    params = [x, *m.parameters()]
    grads = torch.autograd.grad((out.view(-1) * g).sum(), params)
    grads_ref = torch.autograd.grad((ref.reshape(-1) * g).sum(), params)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_point_sample_is_mmcvs_own_and_samples_bilinearly():
    from mmcv.ops.point_sample import point_sample

    assert mmcv.ops.point_sample is point_sample
    mmcv_dir = Path(mmcv.__file__).resolve().parent
    assert Path(inspect.getsourcefile(point_sample)).resolve() == mmcv_dir / "ops" / "point_sample.py"
    torch.manual_seed(2)
    img = torch.randn(2, 3, 4, 5)
    # (x, y) in [0, 1]: two pixel centres, and the midpoint between the centres of (1, 2) and (1, 3)
    pts = torch.tensor([[(0.5 / 5, 0.5 / 4), (4.5 / 5, 3.5 / 4), (3.0 / 5, 1.5 / 4)]]).expand(2, -1, -1)
    got = point_sample(img, pts, align_corners=False)
    assert got.shape == (2, 3, 3)
    torch.testing.assert_close(got[..., 0], img[:, :, 0, 0])
    torch.testing.assert_close(got[..., 1], img[:, :, 3, 4])
    torch.testing.assert_close(got[..., 2], (img[:, :, 1, 2] + img[:, :, 1, 3]) / 2)


def test_mmcv_ops_is_a_package_of_mmcvs_pure_pytorch_submodules():
    assert hasattr(mmcv.ops, "__path__")
    for name in ("point_sample", "conv2d_gradfix", "psa_mask", "cc_attention"):
        sub = importlib.import_module(f"mmcv.ops.{name}")
        assert sub.__name__ == f"mmcv.ops.{name}"
    assert importlib.import_module("mmcv.ops.psa_mask").PSAMask is mmcv.ops.PSAMask
    assert importlib.import_module("mmcv.ops.cc_attention").CrissCrossAttention is mmcv.ops.CrissCrossAttention
    if is_standin(mmcv.ops):  # a compiled op's submodule still says it needs mmcv's extension
        with pytest.raises(ImportError, match="mmcv._ext"):
            importlib.import_module("mmcv.ops.focal_loss")
