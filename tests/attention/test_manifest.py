"""The manifest (ablate/attention/factors.json) is what the block classes declare."""
from __future__ import annotations

from ablate.attention import MECHANISMS
from ablate.attention.manifest import COMMAND, PATH, generate
from ablate.config.vocab import BlockRef, bind_factors


def test_the_manifest_is_what_the_block_classes_declare():
    assert PATH.read_text() == generate(MECHANISMS.values()), f"ablate/attention/factors.json is stale: run {COMMAND}"


def test_every_built_in_preset_binds_the_factors_and_check_its_class_gives():
    """Every field of every Factor (name, default, kind, choices, minimum, help, added), as the
    class binds them, and the same check_args."""
    for name, p in MECHANISMS.items():
        assert isinstance(p.source, BlockRef), name
        assert p.factors == bind_factors(name, p.block, p.values), f"{name}: run {COMMAND}"
        assert [type(f.default) for f in p.factors] == [type(f.default) for f in bind_factors(name, p.block, p.values)]
        check = getattr(p.block, "check_args", None)
        assert (check is None) == (p.source.check == ""), name
        if check is not None:
            assert p.source.check == f"{check.__module__}:{check.__qualname__}", name
