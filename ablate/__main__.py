"""``python -m ablate list [--channels C]``: the mechanisms, their families, papers, factors with
defaults, and the widths a block with a reduction ratio actually gets at C input channels
(default 32, the small backbone's width; a ratio's width has a floor, see
``ablate/attention/widths.py``).

``python -m ablate run STUDY.yaml`` and ``python -m ablate report STUDY.yaml`` are aliases of
``python -m ablate.run`` and ``python -m ablate.report``.
"""
from __future__ import annotations

import sys

DEFAULT_CHANNELS = 32


def effective_widths(preset, channels: int) -> dict[str, int]:
    """The named inner widths (bottleneck, state, ...) of ``preset`` built at its defaults, or {}."""
    return dict(getattr(preset.build(channels), "widths", {}))


def list_mechanisms(out=sys.stdout, channels: int = DEFAULT_CHANNELS) -> None:
    from .attention import MECHANISMS

    for family in ("none", "pairwise", "lowrank", "gating"):
        presets = [p for p in MECHANISMS.values() if p.family == family]
        if not presets:
            continue
        print(f"{family}:", file=out)
        for p in presets:
            print(f"  {p.name:20s} {p.summary}", file=out)
            if p.paper != "-":
                print(f"  {'':20s} paper: {p.paper}", file=out)
            for f in p.factors:
                default = ("on" if f.default else "off") if f.kind == "bool" else f.default
                setting = f"{f.name} = {default}"
                print(f"  {'':20s}   {setting:26s} {f.valid()}{'; ' + f.help if f.help else ''}",
                      file=out)
            widths = effective_widths(p, channels)
            if widths:
                said = ", ".join(f"{k} {v}" for k, v in widths.items())
                print(f"  {'':20s}   widths at C = {channels}: {said}", file=out)


def _channels(rest: list[str]) -> int | None:
    """The value of ``--channels`` (default 32), or None after printing why it is invalid."""
    if not rest:
        return DEFAULT_CHANNELS
    if len(rest) == 2 and rest[0] == "--channels" and rest[1].isdigit() and int(rest[1]) >= 1:
        return int(rest[1])
    print(f"error: python -m ablate list takes only --channels C with C a positive integer "
          f"(the block's input channels, default {DEFAULT_CHANNELS}), got {' '.join(rest)!r}.", file=sys.stderr)
    return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "list":
        channels = _channels(rest)
        if channels is None:
            return 2
        list_mechanisms(channels=channels)
        return 0
    if cmd == "run":
        from .run import main as run_main
        return run_main(rest)
    if cmd == "report":
        from .report import main as report_main
        return report_main(rest)
    print(f"error: unknown command {cmd!r}; valid: list, run, report.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
