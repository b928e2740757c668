"""The report's provenance lines: which invocation and which worker processes ran the finished
trials, and the fingerprint the trials share with any confound between cells. Used by
:mod:`ablate.report.markdown`; nothing here reads storage."""
from __future__ import annotations


def provenance_lines(data: dict) -> list[str]:
    """The last invocation's run line, and who ran the finished trials (worker processes found
    in the trials' owner records, so independent runners on one storage are all counted)."""
    run = data.get("run") or {}
    lines = []
    if run:
        here, total = run.get("trials_here"), run.get("trials_total")
        if here is not None and total is not None and here < total:
            lines.append(f"Produced by `{run.get('command')}`; other invocations worked on the study too: "
                         f"that last one ({run.get('workers')} worker(s)) ran {here} of the {total} finished trials in "
                         f"{run.get('wall_s', 0):.0f} s wall time, {run.get('compute_s', 0):.0f} s of trial compute, "
                         f"harness overhead {100 * run.get('overhead', 0):.1f}% of worker time; all {total} trials "
                         f"took {run.get('compute_total_s', 0):.0f} s of trial compute.")
        else:
            lines.append(f"Produced by `{run.get('command')}` ({run.get('workers')} worker(s); study wall time "
                         f"{run.get('wall_s', 0):.0f} s; sum of trial compute {run.get('compute_s', 0):.0f} s; "
                         f"harness overhead {100 * run.get('overhead', 0):.1f}% of worker time).")
    workers = _workers(data.get("finished", []))
    if workers:
        lines.append(f"Workers: {workers['processes']} worker process(es) in {workers['runs']} invocation(s) of the "
                     f"runner ran the {workers['trials']} finished trials (by the trials' owner records); trial "
                     f"compute {workers['compute']:.0f} s, harness overhead {100 * workers['overhead']:.1f}% of their "
                     "busy time (each worker's first trial start to its last trial end).")
    return lines


def fingerprint_lines(study, data: dict, cells: list) -> list[str]:
    """The fingerprint fields all finished trials share, once, and a confound line for each
    non-factor field whose value differs between cells (:func:`ablate.trainer.fingerprint.confounds`)."""
    from ..trainer.fingerprint import confound_line, confounds, describe, exempt_fields, shared

    per_key = data.get("fingerprints") or {}
    titles = {c.key: c.title() for c in cells}
    found = {titles.get(k, str(k)): [f for f in fps if isinstance(f, dict)] for k, fps in per_key.items()}
    found = {name: fps for name, fps in found.items() if fps}
    missing = sum(not isinstance(f, dict) for fps in per_key.values() for f in fps)
    if not found:
        return ["Fingerprint: no fingerprint recorded (trials from before fingerprints)."] if missing else []
    every = [f for fps in found.values() for f in fps]
    common = shared(every)
    lines = [f"Fingerprint (shared by all {len(every)} fingerprinted finished trials): "
             + (describe(common) or "no field is shared by all of them") + "."]
    if missing:
        lines.append(f"{missing} finished trial(s) have no fingerprint recorded (trials from before fingerprints); "
                     "the confound check covers the others only.")
    exempt = exempt_fields(study.factors)
    conf = confounds(found, exempt)
    lines += [confound_line(c) for c in conf]
    if not conf and len(found) > 1:
        lines.append("Confound check: the cells' fingerprints agree on every field"
                     + (f" but the factor-varied {', '.join(sorted(exempt))}" if exempt else "") + ".")
    return lines


def _workers(finished: list[dict]) -> dict | None:
    """Distinct worker processes over the finished trials' owner records, and their overhead."""
    owned = [f for f in finished if isinstance(f, dict) and f.get("owner") and f.get("start") is not None]
    if not owned:
        return None
    spans: dict = {}
    for f in owned:
        lo, hi = spans.get(f["owner"], (f["start"], f["when"]))
        spans[f["owner"]] = (min(lo, f["start"]), max(hi, f["when"]))
    busy = sum(hi - lo for lo, hi in spans.values())
    compute = sum(f["compute"] for f in owned)
    return {"trials": len(owned), "processes": len(spans), "runs": len({f["run"] for f in owned if f["run"]}) or 1,
            "compute": compute, "overhead": max(0.0, 1 - compute / busy) if busy > 0 else 0.0}
