"""``fleetsim specs``: browse the hardware catalog.

``fleetsim specs gpus|links|systems|memory`` prints a table in human units;
``fleetsim specs show NAME`` prints every field of one part (resolved by alias) with its
sources; ``fleetsim specs cluster SHORTHAND`` shows how a cluster shorthand expands;
``fleetsim specs engines`` lists the engine profiles (serving and training) and
``fleetsim specs show-engine NAME`` prints one with the source of every number.
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
    p.add_argument("what", choices=[*report.KINDS, "show", "cluster", "engines", "show-engine"],
                   help="a table of gpus/links/systems/memory/engines, 'show NAME', 'show-engine NAME' "
                        "or 'cluster SHORTHAND'")
    p.add_argument("name", nargs="?", help="part name or alias (show), engine profile name or YAML "
                   "(show-engine), cluster shorthand or YAML (cluster)")
    p.add_argument("--role", choices=["serving", "training"], default=None,
                   help="engine profiles of this role only (engines, show-engine; default: both / serving)")
    p.add_argument("--json", action="store_true", help="print JSON (SI units for show) instead of text")
    p.set_defaults(func=run)


def engine_rows(role: str | None = None) -> list[dict[str, Any]]:
    """One row per shipped engine profile: role, name, launch mode, fusions, version."""
    from fleetsim.calibration.engines import ROLES, engine_names, get_engine

    rows = []
    for r in ROLES if role is None else (role,):
        for name in engine_names(r):  # type: ignore[arg-type]
            p = get_engine(name, r)  # type: ignore[arg-type]
            k = p.kernels
            rows.append({"role": r, "name": name, "launch": p.launch.mode,
                         "graph_max_batch": p.launch.max_capture_batch,
                         "qkv": "fused" if k.fused_qkv else "separate",
                         "norm": k.norm, "logits": k.logits, "version": p.version})
    return rows


def show_engine(name: str, role: str | None, as_json: bool) -> None:
    from fleetsim.calibration.engines import fitted_values, get_engine

    prof = get_engine(name, role or "serving")  # type: ignore[arg-type]
    if as_json:
        print(prof.model_dump_json(indent=1))
        return
    print(f"engine {prof.name} ({prof.role}, {prof.version})")
    if prof.description:
        print(f"  {prof.description.strip()}")
    for section in ("kernels", "launch", "collectives", "memory", "training"):
        obj = getattr(prof, section)
        if obj is None:
            continue
        flat = {k: v for k, v in obj.model_dump().items() if not isinstance(v, dict)}
        print(f"{section}: " + ", ".join(f"{k}={v}" for k, v in flat.items()))
    print("numbers:")
    for key, f in fitted_values(prof):
        extra = f" [fit rows: {f.fit_rows}; test rows: {f.test_rows}; {f.date}]" if f.fit_rows else ""
        print(f"  {key} = {f.value:g}  ({f.source}){extra}")


def run(args: argparse.Namespace) -> int:
    if args.what == "engines":
        if args.name:
            raise SpecError(f"'fleetsim specs engines' takes no NAME, got {args.name!r} "
                            f"(use 'fleetsim specs show-engine {args.name}')")
        rows = engine_rows(args.role)
        print(json.dumps(rows, indent=1) if args.json else format_table(rows))
        return 0
    if args.what == "show-engine":
        if not args.name:
            raise SpecError("'fleetsim specs show-engine' needs a NAME (see 'fleetsim specs engines')")
        show_engine(args.name, args.role, args.json)
        return 0
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
