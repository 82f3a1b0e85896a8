"""List the cases under a root and check their grids (``brainseg3d cases``)."""

from __future__ import annotations

import sys

from brainseg3d.cli._common import _n


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.core.cases import CaseError, discover, inspect_case
    from brainseg3d.core.checks import check_headers

    warnings: list[str] = []
    cases = discover(args.root, warnings)
    bad = 0
    print("case\tt1\tt1ce\tt2\tflair\tlabel\tshape\tspacing\tstatus")
    for c in cases:
        info = inspect_case(c)
        if not c.problems and (info.ok or info.problem.startswith("modalities on different grids")):
            try:
                check_headers(c)
            except CaseError as e:
                info.problem = e.problem
        if c.image4d is not None:
            files = [c.image4d.name + " (4D)"] + ["-"] * 3
        else:
            files = [c.images[m].name if m in c.images else "MISSING" for m in ("t1", "t1ce", "t2", "flair")]
        shape = "x".join(map(str, info.shape)) if info.shape else "-"
        spacing = "x".join(f"{s:.2f}" for s in info.spacing) if info.spacing else "-"
        registers = not info.ok and info.problem.startswith("modalities on different grids")
        status = "ok" if info.ok else (f"{info.problem}; `segment` registers them (--register auto)" if registers else info.problem)
        bad += not info.ok and not registers
        print("\t".join([c.case_id, *files, c.label.name if c.label else "none", shape, spacing, status]))
        warnings += [f"{c.case_id}: {w}" for w in info.warnings]
    for w in warnings:
        print(f"WARNING {w}", file=sys.stderr)
    print(f"{_n(len(cases), 'case')}, {len(cases) - bad} ok, {bad} with problems", file=sys.stderr)
    return 0 if cases and not bad else 1


def add_parser(sub) -> None:
    """Register the ``cases`` command on the top-level subparsers."""
    s = sub.add_parser("cases", help="list the cases under ROOT (any BraTS naming) and check their grids")
    s.add_argument("root", help="a case folder, a folder of case folders, a 4D NIfTI, or a text file listing them")
    s.set_defaults(func=run)

