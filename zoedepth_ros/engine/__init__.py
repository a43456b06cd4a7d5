"""The engine, without ROS: a loaded ZoeDepth run on camera frames, batched, down a ladder of fallbacks.

What the node and the offline tools call: ``open_engine`` (weights -> model -> the first rung that opens), then
``Engine.run`` / ``run_batch`` (or ``submit_batch`` + ``results`` to overlap host and device work) on
``pipeline.FrameInput``s, giving host-side ``pipeline.DepthFrame``s (depth, cloud, colour map, routing).
"""

from .engine import DROPPED_KINDS, FAILURES_BEFORE_STEP_DOWN, Engine, EngineError, FrameDropped, open_engine

__all__ = ["DROPPED_KINDS", "FAILURES_BEFORE_STEP_DOWN", "Engine", "EngineError", "FrameDropped", "open_engine"]
