"""Run plumbing shared by the device scripts (validate_forward.py, train_bench.py).

Imports torch only inside functions, like the rest of the harness; runs both as part of the
package and as a plain file next to the others on a machine without fleetsim installed.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

try:
    from fleetsim.calibration.bench.common import catalog_name_for, collect_meta, write_meta
except ImportError:
    from common import catalog_name_for, collect_meta, write_meta  # type: ignore[no-redef]


def free_port() -> int:
    """A free TCP port on the loopback interface for torch.distributed's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_run_meta(out: Path, script: str, argv: list[str] | None, device: str, t0: float) -> None:
    """meta.json of a validation run: device, versions, the exact invocation and its duration."""
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    meta = collect_meta(catalog_gpu=catalog_name_for(name),
                        invocation=f"python3 calibration/bench/{script}.py "
                        + " ".join(argv if argv is not None else sys.argv[1:]),
                        torch_version=torch.__version__, cuda_version=str(torch.version.cuda),
                        device_name=name, num_gpus=torch.cuda.device_count() if device == "cuda" else 0,
                        extra={"elapsed_s": round(time.monotonic() - t0, 1), "script": script})
    write_meta(out, meta)
