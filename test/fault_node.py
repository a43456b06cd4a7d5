"""The node with device failures injected (for test_node_faults): ``python test/fault_node.py --ros-args ...``.

``ZOEDEPTH_TEST_OOM_FRAMES=N`` makes the runner raise ``torch.OutOfMemoryError`` for the first N frames, as a GPU
that has run out of memory would; the node's engine must drop them, count them and step down its ladder.
"""

from __future__ import annotations

import os
import sys

from zoedepth_ros.engine import runtime
from zoedepth_ros.model.torch_compat import OutOfMemoryError
from zoedepth_ros.ros import node

remaining = [int(os.environ.get("ZOEDEPTH_TEST_OOM_FRAMES", "0"))]
real_call = runtime.DepthRunner.__call__


def failing_call(self, *args, **kwargs):
    if remaining[0] > 0:
        remaining[0] -= 1
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
    return real_call(self, *args, **kwargs)


runtime.DepthRunner.__call__ = failing_call

if __name__ == "__main__":
    sys.exit(node.main())
