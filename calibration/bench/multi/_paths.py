"""Import path set-up for the multi-GPU scripts run as plain files on a GPU box.

There fleetsim may not be installed: the scripts then import their siblings and the
harness modules one folder up (``common``, ``timing``, ``torch_models``...) by file name.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
