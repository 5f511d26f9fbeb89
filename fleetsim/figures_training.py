"""Figures of one simulated training step (``fleetsim.figures.training_figures``).

``pipeline_timeline``: the simulated schedule as bars per stage and stream (the compute
stream's forwards, backwards and optimizer; the communication stream's gradient reductions
and parameter gathers; point-to-point sends), one bar per event of ``TrainEstimate.timeline``.
``memory``: the bytes on one GPU of each stage by part, stacked to the total that must fit
(weights, gradients, optimizer state, activations, ..., fragmentation, CUDA context), with
the GPU's capacity. ``step_breakdown``: each stage's step time split into forward, backward
(their compute-stream time), optimizer, waits for the pipeline and for communication, and
idle until the slowest stage ends; the parts add up to the step time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fleetsim.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GIB = 2.0**30
MAX_BARS = 20_000
"""Most timeline events drawn (the first ones in time)."""
MEMORY_PARTS = ("weights", "grads", "optimizer", "activations", "embedding_logits", "comm_buffers",
                "weight_copies", "fragmentation", "context")
"""The parts of ``MemoryBreakdown`` that add up to its ``total_bytes``."""
COLORS = {"forward": "#4C72B0", "backward": "#DD8452", "optimizer": "#55A868", "grad_reduce": "#C44E52",
          "param_all_gather": "#8172B3", "send_activation": "#937860", "send_gradient": "#DA8BC3"}
STREAM_ORDER = {"compute": 0, "comm": 1, "p2p": 2}
LABEL_LIMIT = 160
"""Forward/backward bars are labelled with their micro-batch when there are at most this many."""


def _color(name: str, extra: dict[str, str]) -> str:
    if name in COLORS:
        return COLORS[name]
    if name not in extra:
        extra[name] = f"C{(len(extra) + 4) % 10}"
    return extra[name]


def pipeline_timeline(est: Any) -> Figure:
    tl = est.timeline.sort_values(["start_s", "stage"], kind="stable")
    shown = tl.head(MAX_BARS)
    lanes = sorted({(int(s), str(k)) for s, k in zip(shown["stage"], shown["stream"], strict=True)},
                   key=lambda x: (x[0], STREAM_ORDER.get(x[1], 9), x[1]))
    fig, axes = new_figure(1, 1, (12.0, 1.2 + 0.42 * max(1, len(lanes))))
    ax = axes[0, 0]
    y_of = {lane: i for i, lane in enumerate(lanes)}
    extra: dict[str, str] = {}
    seen: set[str] = set()
    for (stage, stream, name), g in shown.groupby(["stage", "stream", "name"], sort=True):
        y = y_of[(int(stage), str(stream))]
        start_ms = g["start_s"].to_numpy(float) * 1e3
        dur_ms = (g["end_s"] - g["start_s"]).to_numpy(float) * 1e3
        height = 0.8 if stream == "compute" else 0.5
        coll = ax.broken_barh(list(zip(start_ms, dur_ms, strict=True)), (y - height / 2, height),
                              facecolors=_color(str(name), extra), edgecolor="white", linewidth=0.3,
                              label=None if name in seen else str(name))
        coll.set_gid(f"bars:{stage}:{stream}:{name}")
        seen.add(str(name))
    fb = shown[shown["name"].isin(("forward", "backward"))]
    if 0 < len(fb) <= LABEL_LIMIT:
        for row in fb.itertuples(index=False):
            mid = (row.start_s + row.end_s) / 2 * 1e3
            ax.text(mid, y_of[(int(row.stage), str(row.stream))], str(row.micro_batch), ha="center",
                    va="center", fontsize=6, color="white")
    ax.set_yticks(range(len(lanes)), [f"stage {s} {k}" for s, k in lanes])
    ax.invert_yaxis()
    ax.axvline(est.time_s * 1e3, color="black", linestyle=":", linewidth=1, label="step end")
    job = est.job
    par = job.parallel
    more = f"; first {MAX_BARS:,} of {len(tl):,} events" if len(tl) > MAX_BARS else ""
    ax.set(xlabel="time (ms)", title=f"{job.model.name}: {job.schedule} schedule, pp={par.pp} vpp={par.vpp} "
           f"tp={par.tp} dp={par.dp}, {job.grad_accum} micro-batches, step {est.time_s * 1e3:.4g} ms, "
           f"bubble {est.bubble_fraction:.1%}{more}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def memory_frame(est: Any) -> pd.DataFrame:
    """Bytes per stage (rows) and part (``MEMORY_PARTS`` columns that are nonzero somewhere)."""
    mem = est.memory.set_index("stage")
    cols = [p for p in MEMORY_PARTS if (mem[f"{p}_bytes"] > 0).any()]
    return mem[[f"{p}_bytes" for p in cols]].rename(columns=lambda c: c.removesuffix("_bytes"))


def memory(est: Any) -> Figure:
    frame = memory_frame(est)
    stages = frame.index.to_numpy()
    fig, axes = new_figure(1, 1, (9.0, 1.6 + 0.45 * len(stages)))
    ax = axes[0, 0]
    left = np.zeros(len(stages))
    for i, part in enumerate(frame.columns):
        w = frame[part].to_numpy(float) / GIB
        ax.barh([f"stage {s}" for s in stages], w, left=left, color=f"C{i % 10}", label=part,
                gid=f"memory:{part}")
        left += w
    cap = est.gpu.memory_bytes / GIB
    ax.axvline(cap, color="red", linestyle="--", linewidth=1.2, label=f"{est.gpu.name} HBM {cap:.1f} GiB")
    mem = est.memory
    off = float(mem["host_bytes"].max() + mem["nvme_bytes"].max())
    note = f"; offloaded per GPU: host {mem['host_bytes'].max() / GIB:.3g} GiB, NVMe " \
           f"{mem['nvme_bytes'].max() / GIB:.3g} GiB" if off > 0 else ""
    ax.set(xlabel="GiB per GPU", title=f"memory per pipeline stage (peak {est.peak_memory_bytes / GIB:.3g} GiB){note}")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def step_parts(est: Any) -> pd.DataFrame:
    """Seconds per stage (rows) of: forward, backward (compute-stream time of the recorded
    events; one ``forward_backward`` column when the timeline was not recorded), optimizer,
    pipeline_wait, comm_wait and idle_to_step_end. Each row adds up to the step time: a
    stage's compute stream runs forwards/backwards (``busy_s``), waits for activations and
    gradients (``pipeline_wait_s``) or for communication (``comm_wait_s``), runs the
    optimizer (the rest up to its ``end_s``), then idles until the last stage ends."""
    stages = est.result.engine.stages
    tl = est.timeline
    comp = tl[tl["stream"] == "compute"]
    dur = (comp["end_s"] - comp["start_s"]).groupby([comp["stage"], comp["name"]]).sum()
    rows = []
    for s, st in enumerate(stages):
        row: dict[str, float] = {}
        if len(tl):
            row["forward"] = float(dur.get((s, "forward"), 0.0))
            row["backward"] = float(dur.get((s, "backward"), 0.0))
            other = st.busy_s - row["forward"] - row["backward"]
            if abs(other) > 1e-9 * max(1.0, st.busy_s):
                row["other_compute"] = other
        else:
            row["forward_backward"] = st.busy_s
        row["optimizer"] = max(0.0, st.end_s - st.busy_s - st.pipeline_wait_s - st.comm_wait_s)
        row["pipeline_wait"] = st.pipeline_wait_s
        row["comm_wait"] = st.comm_wait_s
        row["idle_to_step_end"] = est.time_s - st.end_s
        rows.append(row)
    return pd.DataFrame(rows).fillna(0.0).rename_axis("stage")


def step_breakdown(est: Any) -> Figure:
    parts = step_parts(est)
    fig, axes = new_figure(1, 1, (9.0, 1.6 + 0.45 * len(parts)))
    ax = axes[0, 0]
    left = np.zeros(len(parts))
    colors = {"forward": COLORS["forward"], "backward": COLORS["backward"], "optimizer": COLORS["optimizer"],
              "pipeline_wait": "#BBBBBB", "comm_wait": COLORS["grad_reduce"], "idle_to_step_end": "#E5E5E5",
              "forward_backward": "#4C72B0", "other_compute": "#8C8C8C"}
    for part in parts.columns:
        w = parts[part].to_numpy(float) * 1e3
        ax.barh([f"stage {s}" for s in parts.index], w, left=left, color=colors.get(part, "C7"),
                label=part.replace("_", " "), gid=f"step:{part}")
        left += w
    br = est.breakdown
    ax.set(xlabel="ms", title=f"step time {est.time_s * 1e3:.4g} ms per stage: bubble {est.bubble_fraction:.1%}, "
           f"exposed comm {br['exposed_comm_s'] * 1e3:.3g} ms, MFU {est.mfu:.1%}")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def training_figures(est: Any) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    if len(est.timeline):
        out["pipeline_timeline"] = pipeline_timeline(est)
    out["memory"] = memory(est)
    out["step_breakdown"] = step_breakdown(est)
    return out

