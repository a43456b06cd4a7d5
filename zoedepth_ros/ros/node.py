"""``zoedepth_node [-h] [--managed] [--ros-args ...]``: the executable around ``depth_node.ZoeDepthNode``.

Light on purpose: the stop-signal handlers are installed before torch and rclpy are imported, so that a SIGINT
or SIGTERM at any moment (importing, initialising, loading or downloading the model, spinning, shutting down;
once or twice, as ``ros2 launch`` without a tty delivers it) ends the process with exit status 0 and no
traceback. Without ``--managed`` the node configures and activates itself; with it, a lifecycle manager (or
``ros2 lifecycle set``) drives it. ``-h``/``--help`` prints the usage and the parameter table (from ``params``)
and exits 0 before anything is imported or started; any other argument outside ``--ros-args`` is a usage error
(exit 2).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import StartupError
from .cli import Command
from .fastdds import large_data_advice
from .params import help_rows
from .signals import Interrupted, StopSignals

COMMAND = Command(
    prog="zoedepth_node",
    summary="ZoeDepth metric depth for a camera, or several (`cameras`) on one model: reads image (or "
    "image/compressed) and camera_info; publishes depth/image, depth/camera_info, points, depth/colormap, routing "
    "and /diagnostics. The checkpoint is fetched into the weights cache on first use (`download`).",
    flags={
        "--managed": "a lifecycle node that starts unconfigured, for `ros2 lifecycle set` or a lifecycle manager "
        "(without it the node configures and activates itself)"
    },
    parameters=help_rows,
    example="zoedepth_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info -p device:=cuda",
    footer=lambda: f"Between processes, {large_data_advice()}.",
)


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv if args is None else args)
    usage = COMMAND.check(argv[1:])
    if usage is not None:  # --help, or an argument that is neither ours nor ROS's
        return usage
    stop = StopSignals().install()
    node = None
    code, finished = 0, True
    rclpy = None
    ended: tuple[type[BaseException], ...] = ()  # rclpy's "the context was shut down" exception, once imported
    try:
        with stop.interruptible():
            import rclpy
            from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
            from rclpy.signals import SignalHandlerOptions
            from rclpy.utilities import remove_ros_args

            from .depth_node import ZoeDepthNode

            ended = (ExternalShutdownException,)

            managed = "--managed" in remove_ros_args(argv)[1:]
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
            node = ZoeDepthNode(managed=managed, stop=stop)
            if not managed:
                node.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.requested:
            executor.spin_once(timeout_sec=0.1)
    except Interrupted:
        pass
    except StartupError as e:
        print(f"zoedepth_node: {e}", file=sys.stderr)
        code = 1
    except Exception as e:
        # a signal that lands inside an import (torch, numpy) can surface as that import's error: asked to stop,
        # the process stops, without a traceback
        if not isinstance(e, ended) and not stop.requested:
            raise
    except KeyboardInterrupt:  # pragma: no cover - only if a signal beat the handlers (never once installed)
        pass
    finally:
        stop.stopping()
        if node is not None:
            finished = _quietly(node.close)
            _quietly(node.destroy_node)
        if rclpy is not None:
            _quietly(rclpy.try_shutdown)
    if not finished:  # a worker thread is still inside the model: do not let interpreter teardown race it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _quietly(fn) -> Any:
    """A teardown step that must not turn an orderly exit into a traceback (a signal mid-way through start-up
    can leave a half-made node)."""
    try:
        return fn()
    except Exception as e:
        print(f"zoedepth_node: during shutdown: {type(e).__name__}: {e}", file=sys.stderr)
        return True


if __name__ == "__main__":
    sys.exit(main())
