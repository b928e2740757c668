"""``python -m ablate list``: the mechanisms, their families, papers and factors with defaults.

``python -m ablate run STUDY.yaml`` and ``python -m ablate report STUDY.yaml`` are aliases of
``python -m ablate.run`` and ``python -m ablate.report``.
"""
from __future__ import annotations

import sys


def list_mechanisms(out=sys.stdout) -> None:
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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "list":
        list_mechanisms()
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
