"""usage: ablate COMMAND [ARGS ...]    (python -m ablate COMMAND is the same)

Commands (ablate COMMAND --help for each):

  run STUDY.yaml [KEY=VALUE ...]   run every cell x seed of a study, then write its report; KEY=VALUE
                                   overrides a setting (train.epochs=3 seeds=2 model.args.K=32),
                                   --smoke runs every cell once on a few batches, --dry-run shows the plan
  report STUDY.yaml                write a study's report from its storage
  submit STUDY.yaml                run it on SLURM: one job array of workers (--workers N, --partition,
                                   --gpus-per-worker, --time, ...) and a report job after it; --dry-run
                                   prints the sbatch scripts (ablate run STUDY --submit is the same)
  status STUDY.yaml                where a study stands: per cell finished, running, failed, waiting;
                                   ETA; its SLURM jobs (--watch refreshes)
  list [--channels C]              the mechanisms (installed plugins marked with their package): family,
                                   paper, factors with defaults, inner widths at C input channels; then
                                   the head's upsamplers (bilinear, carafe) with their settings
  doctor STUDY.yaml                build each cell's block and run one batch forward and backward:
                                   parameters without gradient, tiny widths, degenerate attention maps, NaN
  costs                            params, FLOPs, latency and peak memory of each mechanism's block
  estimate STUDY.yaml              time a few training iterations of each cell here and multiply out
                                   the study's compute (a CPU figure on a CPU)
  bench                            the fused kernels against their reference implementations
  bench storage                    claim latency and report time at 1k-10k synthetic trials (journal,
                                   PostgreSQL when initdb is found)
  bench parallel STUDY.yaml        the study's first trials under each workers x threads split of this
                                   machine's cores, side by side, the runner's own choice marked

python -m ablate.run, python -m ablate.report, python -m ablate.doctor, python -m ablate.costs and
python -m ablate_kernels.bench keep working; the commands here call the same functions. Output cut
short by a closed pipe (ablate list | head -3) ends quietly with status 141.
"""
from __future__ import annotations

import importlib
import os
import sys
import textwrap

from .config.errors import StudyError

DEFAULT_CHANNELS = 32
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe

# command -> (module, function taking argv and returning the exit status)
COMMANDS = {
    "run": ("ablate.run", "main"),
    "report": ("ablate.report", "main"),
    "list": ("ablate.__main__", "list_main"),
    "doctor": ("ablate.doctor", "main"),
    "costs": ("ablate.costs", "main"),
    "estimate": ("ablate.run.estimate", "main"),
    "bench": ("ablate_kernels.bench", "main"),
    "submit": ("ablate.run.submit", "main"),
    "status": ("ablate.run.status", "main"),
}
LIST_HELP = """usage: ablate list [--channels C]

The mechanisms by family: the built-ins, then the presets installed packages declare under the
entry-point group ablate.mechanisms, each marked with its package. For each: its paper, the module
of its code, its factors (default, valid values, meaning) and the named inner widths (bottleneck,
state, ...) a block built at its defaults gets at C input channels (default 32, the small
backbone's width; a ratio's width has a floor, see ablate/attention/widths.py). Then the head's
upsamplers (model.head.upsample: bilinear or carafe) with CARAFE's settings."""


def effective_widths(preset, channels: int) -> dict[str, int]:
    """The named inner widths (bottleneck, state, ...) of ``preset`` built at its defaults, or {}."""
    return dict(getattr(preset.build(channels), "widths", {}))


def list_mechanisms(out=None, channels: int = DEFAULT_CHANNELS) -> None:
    """Every preset by family: the built-ins, then those installed packages declare (entry points
    ``ablate.mechanisms``), each marked with its package; a broken one raises PluginError."""
    from .attention import FAMILIES, MECHANISMS, installed_presets

    out = out or sys.stdout
    everything = [*MECHANISMS.values(), *installed_presets()]
    for family in dict.fromkeys([*FAMILIES, *(p.family for p in everything)]):
        presets = [p for p in everything if p.family == family]
        if not presets:
            continue
        print(f"{family}:", file=out)
        for p in presets:
            print(f"  {p.name:20s} {p.summary}", file=out)
            if p.package:
                print(f"  {'':20s} package: {p.package} (installed plugin)", file=out)
            if p.paper != "-":
                print(f"  {'':20s} paper: {p.paper}", file=out)
            print(f"  {'':20s} code: {p.module}", file=out)
            for f in p.factors:
                default = ("on" if f.default else "off") if f.kind == "bool" else f.default
                setting = f"{f.name} = {default}"
                print(f"  {'':20s}   {setting:26s} {f.valid()}{'; ' + f.help if f.help else ''}",
                      file=out)
            widths = effective_widths(p, channels)
            if widths:
                said = ", ".join(f"{k} {v}" for k, v in widths.items())
                print(f"  {'':20s}   widths at C = {channels}: {said}", file=out)
    list_upsamplers(out)


def list_upsamplers(out=None) -> None:
    """The head's upsamplers (``model.head.upsample``; ``head.X`` factors), after the mechanisms."""
    from .attention.carafe_spec import DESCRIPTIONS, PAPER, SETTINGS

    out = out or sys.stdout
    print("head upsamplers (model.head.upsample; vary them as head.upsample, head.k_up, ... factors):", file=out)
    for name, summary in DESCRIPTIONS.items():
        print(f"  {name:20s} {summary}", file=out)
        if name == "carafe":
            print(f"  {'':20s} paper: {PAPER}", file=out)
            print(f"  {'':20s} code: ablate.attention.carafe", file=out)
            for key, default, valid, meaning in SETTINGS:
                print(f"  {'':20s}   {f'{key} = {default}':26s} {valid}; {meaning}", file=out)


def _channels(rest: list[str]) -> int | None:
    """The value of ``--channels`` (default 32), or None after printing why it is invalid."""
    if not rest:
        return DEFAULT_CHANNELS
    if len(rest) == 2 and rest[0] == "--channels" and rest[1].isdigit() and int(rest[1]) >= 1:
        return int(rest[1])
    print(f"error: ablate list takes only --channels C with C a positive integer "
          f"(the block's input channels, default {DEFAULT_CHANNELS}), got {' '.join(rest)!r}.", file=sys.stderr)
    return None


def list_main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(LIST_HELP)
        return 0
    channels = _channels(argv)
    if channels is None:
        return 2
    try:
        list_mechanisms(channels=channels)
    except StudyError as e:  # an installed plugin that is broken (ablate.plugins.PluginError)
        print(textwrap.fill(e.paragraph(), width=100, break_on_hyphens=False, break_long_words=False),
              file=sys.stderr)
        return 2
    return 0


def _command(cmd: str):
    """The function behind ``cmd``, imported only now (torch and Lightning are slow to import)."""
    module, attr = COMMANDS[cmd]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return None
    return getattr(mod, attr, None)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"ablate {version('ablate')}")
        except PackageNotFoundError:
            print("ablate (not installed; running from a checkout)")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "run" and "--submit" in rest:  # ablate run STUDY --submit ...: ablate submit, its options too
        cmd, rest = "submit", [a for a in rest if a != "--submit"]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd[:60]!r}; valid: {', '.join(COMMANDS)} (ablate --help says what "
              "each does).", file=sys.stderr)
        return 2
    if cmd == "bench" and rest[:1] == ["storage"]:  # the storage benchmark; plain bench is the kernels'
        from .run.bench_storage import main as storage_bench

        return int(storage_bench(rest[1:]) or 0)
    if cmd == "bench" and rest[:1] == ["parallel"]:  # workers x threads side by side on this machine
        from .run.bench_parallel import main as parallel_bench

        return int(parallel_bench(rest[1:]) or 0)
    func = _command(cmd)
    if func is None:
        module, attr = COMMANDS[cmd]
        print(f"error: ablate {cmd} is not available in this installation ({module}.{attr} is missing); "
              f"reinstall ablate (pip install -e .).", file=sys.stderr)
        return 2
    code = func(rest)
    return 0 if code is None else int(code)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`ablate list | head -3`): stop quietly; point stdout at /dev/null so
        # that the interpreter's own flush at exit does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
