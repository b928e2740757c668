"""Presets against their official computation, and the mechanisms behind the README's readings.

* GloRe: the whole unit against the official ``GloRe_Unit`` written out here from its equations
  (facebookresearch/GloRe, ``network/global_reasoning_unit.py``), float64, with the module's
  weights; the blocker BN starts at gamma 0.
* Non-local: each paper form's preset against mmcv's ``NonLocal2d`` in the same mode at mmcv's
  defaults (with the BN that mmseg's NLHead gives it), the same weights, float64; and the
  official init (N(0, 0.01^2) convs, zero biases, BN gamma 0).
* Non-local with R passes: one output BN per pass.
* GCNet at C = 32: the bottleneck floor keeps the pooling conv's gradient; ``ablate list``
  prints the effective widths.
* The mechanisms behind the README's readings, with hand-set weights on global_cue scenes: a
  shared rank-1 theta = phi can put every row's attention on the cue; two criss-cross passes
  carry the cue to every pixel, one pass only along its rows and columns.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention import MECHANISMS

F64 = torch.float64


def _x(shape=(2, 16, 6, 8), seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _randomize_norm(norm: nn.BatchNorm2d, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (norm.weight, norm.bias, norm.running_mean):
            t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g, dtype=t.dtype) + 0.5)


def _bn(z: torch.Tensor, bn: nn.BatchNorm2d, train: bool) -> torch.Tensor:
    """BatchNorm written out: batch statistics (biased variance) in training, running ones in eval."""
    if train:
        mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    shape = (1, -1, 1, 1)
    return (z - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


# ------------------------------------------------------------------------------------- GloRe

def _glore_official(unit, x: torch.Tensor, normalize: bool, train: bool) -> torch.Tensor:
    """GloRe_Unit from the paper's and official code's equations, with ``unit``'s weights:
    X_s = W_state x + b, B = W_proj x + b, V = X_s B^T (/ N if normalize),
    GCN(V) = W_s relu(V + V A_g^T + b_g), Y = GCN(V) B, out = x + BN(W_ext Y)."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    w_state, b_state = unit.reduce.weight.reshape(unit.state, c), unit.reduce.bias
    w_proj, b_proj = unit.project.weight.reshape(unit.K, c), unit.project.bias
    xs = torch.einsum("sc,bcn->bsn", w_state, flat) + b_state.view(1, -1, 1)
    proj = torch.einsum("kc,bcn->bkn", w_proj, flat) + b_proj.view(1, -1, 1)
    v = torch.einsum("bsn,bkn->bsk", xs, proj)
    if normalize:
        v = v / (h * w)
    a_g, b_g = unit.reason.node_conv.weight.reshape(unit.K, unit.K), unit.reason.node_conv.bias
    w_s = unit.reason.state_conv.weight.reshape(unit.state, unit.state)
    hidden = v + torch.einsum("kl,bsl->bsk", a_g, v) + b_g.view(1, 1, -1)  # conv1 across nodes, + identity
    v = torch.einsum("ts,bsk->btk", w_s, hidden.clamp_min(0))  # ReLU, then conv2 across states; no ReLU after
    y = torch.einsum("bsk,bkn->bsn", v, proj)
    z = torch.einsum("cs,bsn->bcn", unit.extend.weight.reshape(c, unit.state), y).reshape(b, c, h, w)
    return x + _bn(z, unit.norm, train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("normalize", [False, True], ids=["sum", "normalize"])
def test_glore_unit_equals_the_official_computation(normalize, train):
    preset = MECHANISMS["glore"]
    assert preset.defaults["normalize"] is False and preset.defaults["gcn_relu"] == "between"
    torch.manual_seed(0)
    unit = preset.build(16, K=6, normalize=normalize).double().train(train)
    _randomize_norm(unit.norm)  # gamma is 0 at init: give the branch a visible output
    x = _x()
    with torch.no_grad():
        ours, theirs = unit(x), _glore_official(unit, x, normalize, train)
    assert (ours - x).abs().max() > 1e-2  # the reasoning branch counts
    assert (ours - theirs).abs().max().item() <= 1e-10


def test_glore_relu_after_is_a_different_unit():
    """The old form relu(W_s (V + A_g V)) is a named alternative, not the default: it differs."""
    torch.manual_seed(0)
    unit = MECHANISMS["glore"].build(16, K=6, gcn_relu="after").double().eval()
    _randomize_norm(unit.norm)
    x = _x()
    with torch.no_grad():
        assert (unit(x) - _glore_official(unit, x, False, False)).abs().max() > 1e-3


def test_glore_blocker_starts_at_zero_and_convs_are_xavier():
    torch.manual_seed(0)
    unit = MECHANISMS["glore"].build(32)
    assert unit.norm.weight.abs().max() == 0 and unit.norm.eps == 1e-4
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        assert torch.equal(unit.train()(x), x)  # the unit starts as the identity
    convs = [m for m in unit.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == 5
    for conv in convs:  # Xavier-uniform, gain 1: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))
        fan_out, fan_in = conv.weight.shape[:2]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.8 * bound
        assert conv.bias is None or conv.bias.abs().max() == 0


# ---------------------------------------------------------------------------------- Non-local

mmcv_cnn = pytest.importorskip("mmcv.cnn")

MODES = {"nonlocal": "embedded_gaussian", "nonlocal_dot": "dot_product", "nonlocal_gaussian": "gaussian"}


def _mmcv_nonlocal(mode: str, channels: int) -> nn.Module:
    """mmcv's NonLocal2d at its defaults (reduction 2, use_scale True, std 0.01), with the BN
    on its output conv that mmseg's NLHead configures."""
    return mmcv_cnn.NonLocal2d(channels, mode=mode, norm_cfg=dict(type="BN"))


def _randomize(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(fan_in))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=F64))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=F64) + 0.5)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(MODES))
def test_nonlocal_preset_equals_mmcv_at_its_defaults(name, train):
    c = 16
    torch.manual_seed(0)
    ours = MECHANISMS[name].build(c).double()
    theirs = _mmcv_nonlocal(MODES[name], c).double()
    _randomize(ours, seed=3)
    names = {"theta": "theta.conv", "phi": "phi.conv", "sigma": "g.conv", "out.0": "conv_out.conv",
             "out.1": "conv_out.bn"}
    src = ours.state_dict()
    mapped = {}
    for key, tensor in src.items():
        prefix = next(p for p in sorted(names, key=len, reverse=True) if key.startswith(p + "."))
        mapped[names[prefix] + key[len(prefix):]] = tensor
    theirs.load_state_dict(mapped, strict=True)  # every tensor on both sides used
    ours.train(train), theirs.train(train)
    x = _x((2, c, 5, 7))
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert (a - x).abs().max() > 1e-2
    assert (a - b).abs().max().item() <= 1e-10


@pytest.mark.parametrize("name", list(MODES))
def test_nonlocal_init_matches_the_official_init(name):
    """theta, phi, g: N(0, 0.01^2), zero bias (video-nonlocal-net and mmcv); the output conv:
    N(0, 0.01^2) as video-nonlocal-net (mmcv leaves it at Kaiming); BN gamma and beta 0."""
    c = 256
    torch.manual_seed(0)
    ours = MECHANISMS[name].build(c)
    theirs = _mmcv_nonlocal(MODES[name], c)
    pairs = [("sigma", "g")] + ([("theta", "theta"), ("phi", "phi")] if name != "nonlocal_gaussian" else [])
    for mine, other in pairs:
        w, their_w = getattr(ours, mine).weight, getattr(theirs, other).conv.weight
        assert abs(w.std().item() - 0.01) < 5e-4 and abs(their_w.std().item() - 0.01) < 5e-4
        assert abs(w.mean().item()) < 5e-4
        assert getattr(ours, mine).bias.abs().max() == 0 and getattr(theirs, other).conv.bias.abs().max() == 0
    assert abs(ours.out[0].weight.std().item() - 0.01) < 5e-4
    for norm in (ours.out[1], theirs.conv_out.bn):
        assert norm.weight.abs().max() == 0 and norm.bias.abs().max() == 0
    # init_std: 0 is PyTorch's default (Kaiming-uniform, a = sqrt(5): U(+-1/sqrt(fan_in)))
    default = MECHANISMS[name].build(c, init_std=0)
    assert default.sigma.weight.abs().max() > 0.9 / math.sqrt(c)


def test_nonlocal_embedded_gaussian_scales_and_the_other_forms_do_not():
    """The official scale is in the softmax path of the embedded Gaussian only (mmcv: use_scale
    applies to embedded_gaussian; video-nonlocal-net: USE_SCALE under USE_SOFTMAX)."""
    defaults = {name: MECHANISMS[name].defaults["scale"] for name in
                ("nonlocal", "nonlocal_gaussian", "nonlocal_dot", "nonlocal_concat")}
    assert defaults == {"nonlocal": True, "nonlocal_gaussian": False, "nonlocal_dot": False, "nonlocal_concat": False}


# --------------------------------------------------------------------------- R passes, R norms

@pytest.mark.parametrize("pattern", ["full", "criss_cross"])
def test_each_pass_has_its_own_output_norm(pattern):
    torch.manual_seed(0)
    # PyTorch's init and gamma 1: each pass changes its input visibly, so the passes' BNs see
    # different inputs (at the official init the branch is tiny and the statistics nearly agree)
    block = MECHANISMS["nonlocal"].build(8, pattern=pattern, R=3, zero_init=False, init_std=0)
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 3 and len({id(m) for m in norms}) == 3
    assert block.norms == norms
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4  # theta, phi, g and the output conv: shared by the passes
    block.train()
    x = torch.randn(4, 8, 6, 6)
    with torch.no_grad():
        block(x)
    for norm in norms:
        assert norm.num_batches_tracked == 1
    for first, second in zip(norms, norms[1:]):
        assert (first.running_mean - second.running_mean).abs().max() > 1e-5  # float32 noise: 1e-9
        assert (first.running_var - second.running_var).abs().max() > 1e-5


def test_zero_init_zeroes_every_pass_norm():
    block = MECHANISMS["nonlocal"].build(8, pattern="criss_cross", R=2)
    assert all(n.weight.abs().max() == 0 for n in block.norms)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(block.train()(x), x)


# ------------------------------------------------------------------------- GCNet's bottleneck

def _mask_grad(block: nn.Module, seed: int) -> float:
    """|d loss / d W_k| of the attention-pooling conv, the transform's last conv set non-zero
    (it is zero at init, which would hide the gradient), on non-negative (post-ReLU) features."""
    with torch.no_grad():
        block.transform[-1].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.relu(torch.randn(8, 32, 16, 16, generator=g))
    (block(x) * torch.randn(x.shape, generator=g)).sum().backward()
    return block.mask.weight.grad.norm().item()


def test_gcnet_bottleneck_at_small_width_still_trains_the_pooling():
    """C = 32 at the paper's r = 16 used to give a 2-channel LayerNorm (output +-1): the gradient
    into the pooling conv was typically 1e-3 of the r = 4 block's. The floor keeps it within 10x."""
    preset = MECHANISMS["gcnet"]
    assert preset.defaults["reduction"] == 16
    paper, wide = [], []
    for seed in range(8):
        torch.manual_seed(seed)
        paper.append(_mask_grad(preset.build(32), seed))
        torch.manual_seed(seed)
        wide.append(_mask_grad(preset.build(32, reduction=4), seed))
    # medians: a 2-channel LayerNorm's gradient is tiny except when its two inputs nearly tie,
    # where it spikes, so a mean over seeds would be one seed's spike
    assert torch.tensor(paper).median() > torch.tensor(wide).median() / 10
    assert preset.build(32).widths == {"bottleneck": 4} and preset.build(32, reduction=4).widths == {"bottleneck": 8}
    assert preset.build(512).widths == {"bottleneck": 32}  # the paper's C/r wherever that is >= 4


def test_list_reports_effective_widths(capsys):
    from ablate.__main__ import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("  gcnet "):]
    assert block[: block.index("\n  dnl ")].rstrip().endswith("widths at C = 32: bottleneck 4")
    assert main(["list", "--channels", "256"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("  gcnet "):]
    assert block[: block.index("\n  dnl ")].rstrip().endswith("widths at C = 256: bottleneck 16")
    assert main(["list", "--channels", "x"]) == 2
    err = capsys.readouterr().err
    assert "--channels" in err and "positive integer" in err


# ---------------------------------------------------------------- mechanisms behind the readings
#
# The block sees the backbone's features at stride 2. These tests hand-set the block's weights on
# features built from real global_cue scenes (the image average-pooled to the block's grid, and
# the cue's cells, any cell holding a cue pixel), to separate what a mechanism can express and
# reach from what training found: the features mark the cue (a flat square of one of two fixed
# colours, which a small conv stack can detect), the hand-set attention must do the rest.

def _cue_scenes(count: int = 6):
    """(image at stride 2 (B, 3, 16, 16), cue cells (B, 1, 16, 16) in {0, 1}, cue sign (B,)):
    the sign of R - G on the cue, +1 for one cue colour and -1 for the other."""
    from ablate.data.synthetic import IGNORE_INDEX, SceneConfig, make_split

    images, labels = make_split(SceneConfig(task="global_cue", train_images=1, val_images=count), "val")
    cue = (labels == IGNORE_INDEX).float().unsqueeze(1)
    sign = torch.sign(((images[:, 0] - images[:, 1]) * cue[:, 0]).sum((1, 2)))
    return F.avg_pool2d(images, 2).double(), F.max_pool2d(cue, 2).double(), sign.double()


def test_shared_rank_one_theta_puts_every_row_on_the_cue():
    """theta = phi of rank 1 along the cue channel: q_i = a m_i + b, scores q_i q_j / sqrt(d).
    Every pixel, object, background or cue, puts >= 0.9 of its attention on the cue's cells, and
    the cue's colour (R - G) reaches every pixel in one block. So a symmetric affinity can
    express 'attend to the cue'; the shared_qk floor is not a limit of what theta = phi can express."""
    image, cue, sign = _cue_scenes()
    x = torch.cat([image, cue], dim=1)  # B, 4, 16, 16: R, G, B, cue cells
    torch.manual_seed(0)
    block = MECHANISMS["nonlocal"].build(4, shared_qk=True, zero_init=False).double().eval()
    assert block.phi is block.theta and block.scale
    a = b = 5.0
    with torch.no_grad():
        block.theta.weight.zero_()
        block.theta.bias.zero_()
        block.theta.weight[0, 3] = a  # rank one: one output channel reads the cue channel
        block.theta.bias[0] = b
        block.sigma.weight.zero_()
        block.sigma.bias.zero_()
        block.sigma.weight[0, 0], block.sigma.weight[0, 1] = 1.0, -1.0  # value channel 0: R - G
        attn = block.attention_map(x)  # B, N, N
        on_cue = (attn * cue.flatten(1).unsqueeze(1)).sum(-1)  # B, N: each row's mass on the cue
        assert on_cue.min() >= 0.9, on_cue.min()
        q, k, v = block._qkv(x)
        y = attn @ v  # what the block adds before its output transform
    assert torch.equal(torch.sign(y[..., 0]), sign.view(-1, 1).expand_as(y[..., 0]))
    assert sign.abs().min() == 1 and sign.min() < 0 < sign.max()  # both cue colours are present


def _cue_features(cue: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Channel 0 marks the cue's cells, channel 1 holds the value to carry (the cue's sign) there."""
    return torch.cat([cue, cue * sign.view(-1, 1, 1, 1)], dim=1)


def _hand_set_criss_cross(kind: str, R: int) -> nn.Module:
    """q = k = A x_0 + B (scores favour pixels marked in channel 0), v = x, added back unchanged:
    a pass copies the marked pixels' values into every pixel of their rows and columns."""
    A = B = 5.0
    torch.manual_seed(0)
    if kind == "ccnet":
        block = MECHANISMS["ccnet"].build(2, R=R).double().eval()
        q, k, v = block.cca.query, block.cca.key, block.cca.value
        gain = [block.cca.gamma]
    else:
        block = MECHANISMS["nonlocal"].build(2, pattern="criss_cross", R=R, zero_init=False).double().eval()
        q, k, v = block.theta, block.phi, block.sigma
        gain = []
    with torch.no_grad():
        for conv in (q, k):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0], conv.bias[0] = A, B
        v.weight.copy_(torch.eye(2, dtype=F64).view(2, 2, 1, 1))
        v.bias.zero_()
        for g in gain:
            g.fill_(1.0)
        if kind != "ccnet":  # W = identity, every pass's BN the identity (eval: running var 1 - eps)
            block.out[0].weight.copy_(torch.eye(2, dtype=F64).view(2, 2, 1, 1))
            for norm in block.norms:
                norm.weight.fill_(1.0), norm.bias.zero_(), norm.running_mean.zero_()
                norm.running_var.fill_(1 - norm.eps)
    return block


@pytest.mark.parametrize("kind", ["nonlocal_criss_cross", "ccnet"])
def test_two_criss_cross_passes_carry_the_cue_to_every_pixel(kind):
    """One pass copies the cue's value along the cue's rows and columns and leaves every other
    pixel exactly as it was; the second pass copies it from there to every pixel. So two
    passes can carry the cue everywhere: a sparse pattern at the floor after training has not
    learned it, it is not out of reach."""
    _, cue, sign = _cue_scenes()
    x = _cue_features(cue, sign)
    cross = (cue.amax(dim=3, keepdim=True) + cue.amax(dim=2, keepdim=True)).clamp_max(1)[:, 0] > 0  # B, H, W
    want = sign.view(-1, 1, 1).expand_as(cross)
    with torch.no_grad():
        one = _hand_set_criss_cross(kind.split("_")[0], R=1)(x)
        two = _hand_set_criss_cross(kind.split("_")[0], R=2)(x)
    assert (~cross).any() and cross.any()
    # one pass: off the cue's rows and columns nothing arrives, not even a trace
    assert torch.equal((one - x).abs().sum(1)[~cross], torch.zeros_like((one - x).abs().sum(1)[~cross]))
    assert (torch.sign(one[:, 1])[cross] == want[cross]).all() and one[:, 1][cross].abs().min() >= 0.9
    # two passes: every pixel holds the cue's sign, at least 0.9 of it
    assert (torch.sign(two[:, 1]) == want).all()
    assert two[:, 1].abs().min() >= 0.9
