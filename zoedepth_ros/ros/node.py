"""``zoedepth_node [--managed] [--ros-args ...]``: the executable around ``depth_node.ZoeDepthNode``.

Light on purpose: the stop-signal handlers are installed before torch and rclpy are imported, so that a SIGINT
or SIGTERM at any moment (importing, initialising, loading or downloading the model, spinning, shutting down;
once or twice, as ``ros2 launch`` without a tty delivers it) ends the process with exit status 0 and no
traceback. Without ``--managed`` the node configures and activates itself; with it, a lifecycle manager (or
``ros2 lifecycle set``) drives it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import StartupError
from .signals import Interrupted, StopSignals


def main(args: list[str] | None = None) -> int:
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

            argv = list(sys.argv if args is None else args)
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
        if not isinstance(e, ended):
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
