"""``--check`` of ``simulate`` and ``train``: run the result invariants and report them."""

from __future__ import annotations

import sys
from typing import Any


def report_checks(command: str, result: Any) -> int:
    """Print "checks: N invariants passed" (exit 0) or each violation on stderr (exit 2)."""
    from fleetsim.sim import check

    if command == "train":
        violations, n = check.check_train_estimate(result), len(check.TRAINING_INVARIANTS)
    else:
        violations, n = check.check_serving_result(result), len(check.SERVING_INVARIANTS)
    for v in violations:
        print(f"fleetsim {command}: invariant violated: {v}", file=sys.stderr)
    if violations:
        return 2
    print(f"checks: {n} invariants passed")
    return 0
