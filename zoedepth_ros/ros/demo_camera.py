"""``zoedepth_demo_camera``: a built-in moving camera feed, so a first run shows depth without any camera.

It publishes a generated indoor scene (floor, walls, ceiling, boxes, a bouncing ball, a slow pan) on
``image`` (sensor_msgs/Image, rgb8) and ``camera_info`` (a calibrated pinhole CameraInfo matching ``fov_deg``),
both with the same header stamp and frame_id, at ``rate`` Hz. Usage::

    ros2 run zoedepth_ros zoedepth_demo_camera --ros-args -p rate:=10.0
    python -m zoedepth_ros.ros.demo_camera --ros-args -p width:=320 -p height:=240

The scene is ray-cast once (with numpy) into a panorama slightly wider than the frame, together with its
depth, so a frame is a crop of it (the pan) plus a small ray-cast ball composited by depth: about a
millisecond for 640x480. Only numpy is imported at module level so the generator works without ROS.
"""

from __future__ import annotations

import math
import signal
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ConfigError", "DemoConfig", "DemoScene", "camera_info", "intrinsics", "main"]

NODE_NAME = "demo_camera"
MIN_SIZE, MAX_SIZE = 16, 8192

# The room, in the camera's optical frame (x right, y down, z forward), metres. The camera is level, 1.4 m
# above the floor, so the horizon is the image's middle row and the floor fills the lower half.
CAMERA_HEIGHT = 1.4
CEILING_Y = CAMERA_HEIGHT - 2.8  # a 2.8 m high room
BACK_WALL_Z = 7.0
SIDE_WALL_X = 3.2
LIGHT = np.array([0.3, -0.6, 3.0], dtype=np.float32)  # a hanging lamp in the middle of the room
TILE = 0.5  # floor tile size
PAN_FRACTION = 0.25  # the panorama is this much wider than the frame; the pan sweeps across it
PAN_PERIOD = 16.0  # seconds for one sweep there and back
BALL_RADIUS = 0.25
BALL_PERIOD = 7.0  # seconds per loop around the room

# Boxes standing on the floor: (x centre, near z, width, height, depth), metres; and their colours.
BOXES = (
    (-1.6, 3.2, 0.8, 0.9, 0.7),
    (1.3, 4.6, 1.0, 0.6, 0.8),
    (-0.2, 5.8, 1.4, 1.5, 0.6),
    (2.3, 2.6, 0.5, 1.1, 0.5),
)
BOX_COLOURS = ((0.75, 0.35, 0.2), (0.2, 0.45, 0.7), (0.35, 0.6, 0.3), (0.8, 0.7, 0.25))

# Surface ids in the panorama's surface map (the ball's shadow falls on the floor only).
FLOOR, CEILING, WALL = 1, 2, 3


def intrinsics(width: int, height: int, fov_deg: float) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a pinhole camera with square pixels and the given horizontal field of view.

    The principal point is the image centre in ROS's convention (pixel centres at integer coordinates).
    """
    fx = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return fx, fx, (width - 1) / 2, (height - 1) / 2


def _shade(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambert shading from the lamp with distance fall-off, plus ambient light: (N,) factors."""
    to_light = LIGHT - points
    dist2 = np.einsum("ij,ij->i", to_light, to_light)
    lambert = np.clip(np.einsum("ij,ij->i", to_light, normals), 0, None) / np.sqrt(dist2)
    return 0.35 + 0.8 * lambert * (4.0 / (4.0 + dist2))


class DemoScene:
    """The generated scene: ``frame(t)`` is the ``height x width x 3`` uint8 RGB image at time ``t`` seconds.

    Deterministic (no random state), so frames are reproducible and tests can compare them.
    """

    def __init__(self, width: int = 640, height: int = 480, fov_deg: float = 60.0) -> None:
        self.width, self.height = width, height
        self.fx, self.fy, self.cx, self.cy = intrinsics(width, height, fov_deg)
        self.pan_range = max(int(PAN_FRACTION * width), 1)
        self.pano_width = width + self.pan_range
        self.pano_cx = (self.pano_width - 1) / 2
        self.rgb = np.empty((height, self.pano_width, 3), np.float32)
        self.depth = np.empty((height, self.pano_width), np.float32)
        self.surface = np.empty((height, self.pano_width), np.uint8)
        band = max(1, (1 << 20) // self.pano_width)  # bounded temporaries even for 8192-wide frames
        for y0 in range(0, height, band):
            self._render_rows(y0, min(y0 + band, height))
        self.pano = self._encode(self.rgb)
        del self.rgb

    # ----------------------------------------------------------------------------------- the static room

    def _rays(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Unnormalised ray directions (x, y, z=1) for a block of panorama pixels, as (rows*cols, 3)."""
        xs = (np.arange(x0, self.pano_width if x1 is None else x1, dtype=np.float32) - self.pano_cx) / self.fx
        ys = (np.arange(y0, y1, dtype=np.float32) - self.cy) / self.fy
        rays = np.empty((len(ys), len(xs), 3), np.float32)
        rays[..., 0] = xs[None, :]
        rays[..., 1] = ys[:, None]
        rays[..., 2] = 1.0
        return rays.reshape(-1, 3)

    def _render_rows(self, y0: int, y1: int) -> None:
        d = self._rays(y0, y1)
        n = len(d)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Ray parameter t equals depth z because d_z = 1. Planes first: floor, ceiling, walls.
            t_floor = np.where(d[:, 1] > 0, CAMERA_HEIGHT / d[:, 1], np.inf)
            t_ceiling = np.where(d[:, 1] < 0, CEILING_Y / d[:, 1], np.inf)
            t_side = np.where(d[:, 0] != 0, SIDE_WALL_X / np.abs(d[:, 0]), np.inf)
            candidates = [t_floor, t_ceiling, np.full(n, BACK_WALL_Z, np.float32), t_side]
            normals_of = [(0, -1, 0), (0, 1, 0), (0, 0, -1), None]
            for x, z, w, h, dz in BOXES:
                lo = np.array([x - w / 2, CAMERA_HEIGHT - h, z], np.float32)
                hi = np.array([x + w / 2, CAMERA_HEIGHT, z + dz], np.float32)
                t1, t2 = lo / d, hi / d
                near = np.fmin(t1, t2)
                t_in, t_out = np.nanmax(near, axis=1), np.nanmin(np.fmax(t1, t2), axis=1)
                candidates.append(np.where((t_in <= t_out) & (t_in > 0), t_in, np.inf))
                normals_of.append(near)  # the axis whose slab was entered last is the face hit
        stack = np.stack(candidates)
        hit = np.argmin(stack, axis=0)
        t = stack[hit, np.arange(n)].astype(np.float32)
        p = d * t[:, None]
        normal = np.zeros((n, 3), np.float32)
        colour = np.empty((n, 3), np.float32)
        surface = np.zeros(n, np.uint8)

        is_floor = hit == 0
        fx_, fz_ = p[is_floor, 0], p[is_floor, 2]
        checker = (np.floor(fx_ / TILE) + np.floor(fz_ / TILE)) % 2
        tile_px = self.fx * TILE / np.maximum(fz_, 1e-3)  # fade the checker where tiles get too small to show
        contrast = np.clip((tile_px - 3.0) / 9.0, 0, 1)
        colour[is_floor] = np.array([0.55, 0.42, 0.3], np.float32) * (1 + 0.18 * contrast * (2 * checker - 1))[:, None]
        normal[is_floor] = normals_of[0]
        surface[is_floor] = FLOOR

        is_ceiling = hit == 1
        colour[is_ceiling] = (0.9, 0.9, 0.88)
        normal[is_ceiling] = normals_of[1]
        surface[is_ceiling] = CEILING

        is_back = hit == 2
        bx, by = p[is_back, 0], p[is_back, 1]
        back = np.tile(np.array([0.82, 0.78, 0.68], np.float32), (len(bx), 1))
        picture = (np.abs(bx + 0.9) < 0.7) & (np.abs(by + 0.2) < 0.45)  # a framed picture on the back wall
        inner = (np.abs(bx + 0.9) < 0.62) & (np.abs(by + 0.2) < 0.37)
        back[picture] = (0.25, 0.2, 0.15)
        sky = np.clip(0.5 - by[inner] / 0.8, 0, 1)[:, None]
        back[inner] = sky * np.array([0.45, 0.65, 0.9], np.float32) + (1 - sky) * np.array([0.3, 0.55, 0.3])
        colour[is_back] = back
        normal[is_back] = normals_of[2]
        surface[is_back] = WALL

        is_side = hit == 3
        colour[is_side] = (0.7, 0.74, 0.78)
        normal[is_side, 0] = -np.sign(d[is_side, 0])
        surface[is_side] = WALL

        skirting = (surface == WALL) & (p[:, 1] > CAMERA_HEIGHT - 0.12)
        colour[skirting] = (0.95, 0.95, 0.95)

        for i, rgb in enumerate(BOX_COLOURS):
            is_box = hit == 4 + i
            axis = np.argmax(np.nan_to_num(normals_of[4 + i][is_box], nan=-np.inf), axis=1)
            face = np.zeros((int(is_box.sum()), 3), np.float32)
            face[np.arange(len(axis)), axis] = -np.sign(d[is_box][np.arange(len(axis)), axis])
            normal[is_box] = face
            colour[is_box] = rgb

        light = _shade(p, normal)
        self.rgb[y0:y1] = (colour * light[:, None]).reshape(y1 - y0, self.pano_width, 3)
        self.depth[y0:y1] = t.reshape(y1 - y0, self.pano_width)
        self.surface[y0:y1] = surface.reshape(y1 - y0, self.pano_width)

    @staticmethod
    def _encode(linear: np.ndarray) -> np.ndarray:
        return (255 * np.clip(linear, 0, 1) ** (1 / 2.2) + 0.5).astype(np.uint8)

    # ------------------------------------------------------------------------------------------ motion

    def pan_offset(self, t: float) -> int:
        """Left edge of the crop in the panorama: a slow sweep across it and back."""
        return round(0.5 * self.pan_range * (1 - math.cos(2 * math.pi * t / PAN_PERIOD)))

    def ball_centre(self, t: float) -> tuple[float, float, float]:
        """The ball loops between the boxes (never into them) and bounces."""
        phase = 2 * math.pi * t / BALL_PERIOD
        bounce = 0.6 * abs(math.sin(3 * phase))
        return 0.8 * math.sin(phase), CAMERA_HEIGHT - BALL_RADIUS - bounce, 3.4 + 1.0 * math.cos(phase)

    def frame(self, t: float) -> np.ndarray:
        """The image at time ``t``: a crop of the panorama with the ball and its shadow drawn in by depth."""
        x0 = self.pan_offset(t)
        out = self.pano[:, x0 : x0 + self.width].copy()
        bx, by, bz = self.ball_centre(t)
        self._draw_shadow(out, x0, bx, bz, CAMERA_HEIGHT - BALL_RADIUS - by)
        self._draw_ball(out, x0, np.array([bx, by, bz], np.float32))
        return out

    def _box(self, x0: int, centre_u: float, centre_v: float, radius: float) -> tuple[int, int, int, int] | None:
        """Panorama column/row bounds of a square around a projected point, clipped to the crop; None if empty."""
        u0, u1 = max(int(centre_u - radius), x0), min(int(centre_u + radius) + 2, x0 + self.width)
        v0, v1 = max(int(centre_v - radius), 0), min(int(centre_v + radius) + 2, self.height)
        return (u0, u1, v0, v1) if u0 < u1 and v0 < v1 else None

    def _draw_shadow(self, out: np.ndarray, x0: int, bx: float, bz: float, lift: float) -> None:
        """Darken the floor under the ball: a soft blob that fades and widens as the ball bounces up."""
        spread = BALL_RADIUS * (0.8 + lift)
        reach = 2.5 * spread
        v_near = self.cy + self.fy * CAMERA_HEIGHT / max(bz - reach, 0.3)
        v_far = self.cy + self.fy * CAMERA_HEIGHT / (bz + reach)
        u = self.pano_cx + self.fx * bx / bz
        box = self._box(x0, u, 0.5 * (v_near + v_far), max(0.5 * (v_near - v_far), self.fx * reach / bz))
        if box is None:
            return
        u0, u1, v0, v1 = box
        floor = self.surface[v0:v1, u0:u1] == FLOOR
        z = self.depth[v0:v1, u0:u1]
        x = (np.arange(u0, u1, dtype=np.float32)[None, :] - self.pano_cx) / self.fx * z
        dist2 = (x - bx) ** 2 + (z - bz) ** 2
        dark = 1 - (0.55 / (1 + 2 * lift)) * np.exp(-dist2 / (2 * spread**2)) * floor
        view = out[v0:v1, u0 - x0 : u1 - x0]
        view[...] = (view * dark[..., None]).astype(np.uint8)

    def _draw_ball(self, out: np.ndarray, x0: int, centre: np.ndarray) -> None:
        """Ray-cast the ball inside its projected bounding square and keep it where it is nearer than the room."""
        u = self.pano_cx + self.fx * centre[0] / centre[2]
        v = self.cy + self.fy * centre[1] / centre[2]
        box = self._box(x0, u, v, self.fx * BALL_RADIUS / (centre[2] - BALL_RADIUS) + 1)
        if box is None:
            return
        u0, u1, v0, v1 = box
        d = self._rays(v0, v1, u0, u1)
        a = np.einsum("ij,ij->i", d, d)
        b = d @ centre
        disc = b * b - a * (centre @ centre - BALL_RADIUS**2)
        hit = disc > 0
        t = (b - np.sqrt(np.where(hit, disc, 0))) / a
        hit &= t < self.depth[v0:v1, u0:u1].reshape(-1)
        if not hit.any():
            return
        p = d[hit] * t[hit, None]
        normal = (p - centre) / BALL_RADIUS
        to_light = LIGHT - p
        to_light /= np.linalg.norm(to_light, axis=1, keepdims=True)
        highlight = np.clip(np.einsum("ij,ij->i", normal, to_light), 0, 1) ** 24
        linear = np.array([0.85, 0.12, 0.1], np.float32) * _shade(p, normal)[:, None] + 0.6 * highlight[:, None]
        block = out[v0:v1, u0 - x0 : u1 - x0].reshape(-1, 3)
        block[hit] = self._encode(linear)
        out[v0:v1, u0 - x0 : u1 - x0] = block.reshape(v1 - v0, u1 - u0, 3)


# ------------------------------------------------------------------------------------------------- ROS


class ConfigError(ValueError):
    """A parameter value the demo camera cannot use; the message is one line, for the user."""


@dataclass(frozen=True)
class DemoConfig:
    """The node's parameters, checked: ``from_values`` raises ConfigError with a one-line reason."""

    rate: float = 10.0
    width: int = 640
    height: int = 480
    frame_id: str = "camera_optical_frame"
    fov_deg: float = 60.0
    info_first: bool = True

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> DemoConfig:
        def number(name: str) -> float:
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"parameter '{name}' must be a number, got {value!r}")
            return float(value)

        def integer(name: str) -> int:
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"parameter '{name}' must be an integer, got {value!r}")
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise ConfigError(f"parameter '{name}' must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {value}")
            return value

        rate, fov = number("rate"), number("fov_deg")
        if rate <= 0:
            raise ConfigError(f"parameter 'rate' must be positive (Hz), got {values['rate']!r}")
        if not 1 < fov < 179:
            raise ConfigError(f"parameter 'fov_deg' must be between 1 and 179 degrees (exclusive), got {fov:g}")
        frame_id, info_first = values["frame_id"], values["info_first"]
        if not isinstance(frame_id, str) or not frame_id.strip():
            raise ConfigError(f"parameter 'frame_id' must be a non-empty string, got {frame_id!r}")
        if not isinstance(info_first, bool):
            raise ConfigError(f"parameter 'info_first' must be true or false, got {info_first!r}")
        return cls(rate, integer("width"), integer("height"), frame_id, fov, info_first)


PARAMETER_HELP = {
    "rate": "frames per second (Hz)",
    "width": f"image width in pixels ({MIN_SIZE}..{MAX_SIZE})",
    "height": f"image height in pixels ({MIN_SIZE}..{MAX_SIZE})",
    "frame_id": "header.frame_id of both the image and the camera_info",
    "fov_deg": "horizontal field of view in degrees, (1, 179): sets the CameraInfo focal length",
    "info_first": "publish camera_info before the image of each frame (false: the image first)",
}


def camera_info(width: int, height: int, fov_deg: float, frame_id: str = "") -> Any:
    """A calibrated, distortion-free sensor_msgs/CameraInfo for the demo camera (plumb_bob, zero Tx)."""
    from sensor_msgs.msg import CameraInfo

    fx, fy, cx, cy = intrinsics(width, height, fov_deg)
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.header.frame_id = frame_id
    return msg


class _DemoCamera:
    """The node's behaviour: parameters, publishers and a timer publishing one scene frame per tick."""

    def __init__(self, context: Any = None) -> None:
        import rclpy
        from rcl_interfaces.msg import ParameterDescriptor
        from sensor_msgs.msg import CameraInfo, Image

        from .qos import profile

        self.node = rclpy.create_node(NODE_NAME, context=context)
        defaults = DemoConfig()
        values = {}
        for name, text in PARAMETER_HELP.items():
            # dynamic typing so that `rate:=20` (an integer in YAML) is accepted; from_values checks types.
            descriptor = ParameterDescriptor(description=text, dynamic_typing=True, read_only=True)
            values[name] = self.node.declare_parameter(name, getattr(defaults, name), descriptor).value
        self.config = DemoConfig.from_values(values)  # ConfigError: main reports it in one line

        # Reliable serves both reliable and best-effort subscribers (the depth node's default); a short queue
        # keeps a slow subscriber from buffering stale frames.
        qos = profile("reliable", 5)
        self.pub_image = self.node.create_publisher(Image, "image", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info", qos)
        cfg = self.config
        self.scene = DemoScene(cfg.width, cfg.height, cfg.fov_deg)
        self.info = camera_info(cfg.width, cfg.height, cfg.fov_deg, cfg.frame_id)
        self.image = Image(height=cfg.height, width=cfg.width, encoding="rgb8", is_bigendian=0, step=3 * cfg.width)
        self.image.header.frame_id = cfg.frame_id
        self.count = 0
        self.timer = self.node.create_timer(1.0 / cfg.rate, self._tick)
        self.node.get_logger().info(
            f"publishing a generated {cfg.width}x{cfg.height} rgb8 scene at {cfg.rate:g} Hz on "
            f"{self.pub_image.topic_name} and {self.pub_info.topic_name} (frame_id '{cfg.frame_id}', "
            f"horizontal FOV {cfg.fov_deg:g} deg)"
        )

    def _tick(self) -> None:
        # Scene time follows the frame count, not the wall clock, so motion stays smooth under jitter.
        pixels = self.scene.frame(self.count / self.config.rate)
        self.count += 1
        stamp = self.node.get_clock().now().to_msg()
        self.image.header.stamp = stamp
        self.info.header.stamp = stamp
        self.image.data = pixels.tobytes()  # bytes, never an ndarray: that path copies per element
        if self.config.info_first:
            self.pub_info.publish(self.info)
            self.pub_image.publish(self.image)
        else:
            self.pub_image.publish(self.image)
            self.pub_info.publish(self.info)

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        self.node.destroy_node()


def _command() -> Any:
    """``zoedepth_demo_camera``'s command line (``--help``: usage and the parameters of ``PARAMETER_HELP``)."""
    from .cli import Command, type_name, value_text

    defaults = DemoConfig()

    def rows() -> list[tuple[str, str, str, str, str]]:
        values = {name: getattr(defaults, name) for name in PARAMETER_HELP}
        return [(n, type_name(v), value_text(v), "", PARAMETER_HELP[n]) for n, v in values.items()]

    return Command(
        prog="zoedepth_demo_camera",
        summary="A built-in moving camera feed for trying zoedepth_node without a camera: a generated indoor "
        "scene on image (sensor_msgs/Image, rgb8) and a matching calibrated CameraInfo on camera_info, both with "
        "the same stamp, at `rate` Hz (reliable QoS, depth 5).",
        flags={},
        parameters=rows,
        example="zoedepth_demo_camera --ros-args -p rate:=5.0 -p width:=320 -p height:=240",
    )


def main(args: list[str] | None = None) -> int:
    """Run the demo camera until SIGINT/SIGTERM (any number of them): exit 0, or 1 on bad parameters.

    ``--help`` prints the usage and parameters (exit 0) and an argument outside ``--ros-args`` that is not ours is
    a usage error (exit 2), both before rclpy is imported.
    """
    usage = _command().check(list(sys.argv if args is None else args)[1:])
    if usage is not None:
        return usage
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    # Our own handlers, installed before anything slow: rclpy's default turns SIGINT into a
    # KeyboardInterrupt that can land anywhere (a traceback, exit -2 when ros2 launch signals twice).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
    except ImportError as e:
        print(f"{NODE_NAME}: error: rclpy is not importable ({e}); install ROS 2 or the rclpy wheels", file=sys.stderr)
        return 1
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # malformed --ros-args and the like: rcl explains it
        print(f"{NODE_NAME}: error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    camera = None
    try:
        camera = _DemoCamera()
        executor = SingleThreadedExecutor()
        executor.add_node(camera.node)
        while not stop["requested"] and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ConfigError as e:  # only our own one-line messages; any other error keeps its traceback
        print(f"{NODE_NAME}: error: {e}", file=sys.stderr)
        return 1
    except ExternalShutdownException:
        pass
    finally:
        if camera is not None:
            camera.destroy()
        rclpy.try_shutdown()
        if stop["requested"]:
            # Asked to stop: ignore any further signal. Interpreter finalisation resets Python-level
            # handlers to SIG_DFL (not SIG_IGN ones), so a second SIGINT landing while the process exits
            # would otherwise kill it with -2.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
