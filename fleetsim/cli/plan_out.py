"""``fleetsim plan --out DIR``: the plans as JSON and CSV, and their figures as PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fleetsim.cli.args import check_out_dir


def write_serving_plans(out_dir: str, res: Any, table: pd.DataFrame) -> list[Path]:
    """``plans.json`` (what ``--json`` prints), ``plans.csv`` (the printed table),
    ``pareto.csv`` (the frontier points) and the figures (``fleetsim.figures.plan_figures``)
    of the serving planner's answer ``res``; returns the files written."""
    from fleetsim.cli.plan_serving import _finite
    from fleetsim.figures import plan_figures, save_figures

    out = check_out_dir(out_dir)
    assert out is not None
    files = [out / "plans.json", out / "plans.csv", out / "pareto.csv"]
    files[0].write_text(json.dumps(_finite(res.to_json()), indent=2))
    table.to_csv(files[1], index=False)
    pd.DataFrame(list(res.pareto)).to_csv(files[2], index=False)
    return files + save_figures(plan_figures(res), out)


def write_training_plans(out_dir: str, plan: Any) -> list[Path]:
    """``plans.json`` (``TrainPlan.as_dict``), ``plans.csv`` (the printed table) and the
    figures of a training plan; returns the files written."""
    from fleetsim.figures import plan_figures, save_figures

    out = check_out_dir(out_dir)
    assert out is not None
    files = [out / "plans.json", out / "plans.csv"]
    files[0].write_text(json.dumps(plan.as_dict(), indent=1, sort_keys=True))
    plan.table().to_csv(files[1], index=False)
    return files + save_figures(plan_figures(plan), out)


def written(files: list[Path]) -> str:
    """One line naming the files written."""
    if not files:
        return "wrote nothing"
    return f"wrote {files[0].parent}/ (" + ", ".join(f.name for f in files) + ")"
