"""``fleetsim specs``: browse the hardware catalog.

``fleetsim specs gpus|links|systems|memory`` prints a table in human units;
``fleetsim specs show NAME`` prints every field of one part (resolved by alias) with its
sources; ``fleetsim specs cluster SHORTHAND`` shows how a cluster shorthand expands.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from fleetsim.hardware import catalog, cluster, report
from fleetsim.hardware.errors import SpecError


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as left-aligned text columns under their keys; ``None`` shows as ``-``."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    cells = [[("-" if r.get(c) is None else f"{r[c]:g}" if isinstance(r[c], float) else str(r[c])) for c in cols]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("specs", help="list or show catalog hardware (GPUs, links, systems, memory)",
                       description="Browse the hardware catalog in human units.")
    p.add_argument("what", choices=[*report.KINDS, "show", "cluster"],
                   help="a table of gpus/links/systems/memory, 'show NAME' or 'cluster SHORTHAND'")
    p.add_argument("name", nargs="?", help="part name or alias (show), cluster shorthand or YAML (cluster)")
    p.add_argument("--json", action="store_true", help="print JSON (SI units for show) instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what in report.KINDS:
        if args.name:
            raise SpecError(f"'fleetsim specs {args.what}' takes no NAME, got {args.name!r} "
                            f"(use 'fleetsim specs show {args.name}')")
        rows = report.catalog_rows(args.what)
        print(json.dumps(rows, indent=1) if args.json else format_table(rows))
        return 0
    if not args.name:
        raise SpecError(f"'fleetsim specs {args.what}' needs a NAME")
    if args.what == "cluster":
        spec = cluster.load_cluster(args.name)
        if args.json:
            print(spec.model_dump_json(indent=1))
            return 0
        print(cluster.describe(spec))
        try:
            print(f"price: ${cluster.price_per_hour(spec):.2f}/h")
        except SpecError as exc:
            print(f"price: unknown ({exc})")
        print(f"accelerator TDP total: {cluster.gpu_power_w(spec) / 1e3:.1f} kW")
        return 0
    kind, spec, fields, sources = report.part_fields(args.name)
    if args.json:
        print(spec.model_dump_json(indent=1))
        return 0
    path = catalog.source_file(kind, spec.name)
    print(f"{kind} {spec.name}" + (f"  ({path})" if path else ""))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"  {key.ljust(width)}  {value}")
    if sources:
        print("sources:")
        for key, note in sources.items():
            print(f"  {key}: {note}")
    return 0
