"""GloRe's matched control of the graph step (gcn_mixing: states): the GCN's shape, ReLU and
parameter count, but no information flow between nodes."""
from __future__ import annotations

import pytest
import torch

from ablate.attention import MECHANISMS
from ablate.attention.glore import GraphReasoning
from ablate.config.vocab import FactorConflict


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_the_control_has_the_gcn_parameter_count_when_nodes_equal_state_channels():
    glore = MECHANISMS["glore"]
    assert _params(glore.build(32, K=16, gcn_mixing="states")) == _params(glore.build(32, K=16)) == 2160
    assert _params(glore.build(32, K=16, gcn=False)) == 1632  # the gcn_effect contrast removes 528


def test_the_control_mixes_no_nodes_and_the_gcn_does():
    torch.manual_seed(0)
    v = torch.randn(2, 16, 16, dtype=torch.float64)  # B, C_s, K
    for mixing, flows in (("nodes", True), ("states", False)):
        step = GraphReasoning(16, 16, mixing=mixing).double()
        w = v.clone()
        w[:, :, 3] += 1.0  # change node 3 only
        changed = (step(w) - step(v)).abs().amax(dim=(0, 1)) > 1e-12  # which nodes' outputs moved
        assert bool(changed[3])
        assert bool(changed[torch.arange(16) != 3].any()) == flows, mixing


def test_the_control_is_refused_without_a_gcn_step():
    with pytest.raises(FactorConflict):
        MECHANISMS["glore"].block.check_args({"mapping": "learned", "normalize": False, "gcn": False,
                                              "gcn_mixing": "states"})
