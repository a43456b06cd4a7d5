"""The package as a user drives it from a shell: `ros2 launch`, `ros2 run`, `ros2 param` and `ros2 lifecycle`.

Each command is a subprocess with the venv on PATH and AMENT_PREFIX_PATH (test_launch.child_env), a private
domain and localhost discovery. Long-running ones start in their own session and are stopped like Ctrl-C: SIGINT
to the whole process group (`ros2 run` does not forward SIGINT; `ros2 launch` does, so its nodes get it twice);
then exit status 0, no node that launch reports as died, and nothing of it left running. `ros2 param` /
`ros2 lifecycle` use a ros2 daemon started for this module's domain and stopped at its end (with --no-daemon
every command rediscovers the graph, and alternate ones miss the node: twice as slow).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_launch import DOMAIN_BASE, TOOLS_REASON, Camera, apply_env, child_env, launch_pytest, rgb_image, stamp_of

DOMAIN = DOMAIN_BASE + 2
ROS2 = shutil.which("ros2", path=child_env(DOMAIN)["PATH"]) if launch_pytest is not None else None
DISCOVER = ("--spin-time", "0.5")
"""How long a `ros2 param/lifecycle` command's own node spins; --timeout's wait for the node, or a retry, covers
discovery that takes longer."""
MARK = f"zd{os.getpid()}"  # in every namespace used here, to find (left-over) processes by their command line

pytestmark = [
    pytest.mark.skipif(ROS2 is None, reason=TOOLS_REASON.replace("launch_pytest", "ros2cli, launch_pytest")),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module", autouse=True)
def cli_env(monkeypatch_module):
    env = apply_env(monkeypatch_module, DOMAIN)
    ros2("daemon", "start", timeout=30)  # discovers the graph from now on, for all of this module's commands
    try:
        yield env
    finally:
        stopped = ros2("daemon", "stop", timeout=30)
        assert stopped.returncode == 0, stopped.stdout


def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """A short `ros2 ...` command; its output (stdout + stderr) is in .stdout."""
    return subprocess.run(
        [ROS2, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def processes_with(text: str) -> list[str]:
    """Command lines of live processes (not this one) that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def wait_for(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


class Command:
    """A long-running `ros2 ...` in its own session (its own process group), output into a log file."""

    def __init__(self, log: Path, ns: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.log, self.ns, self.args = log, ns, args
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [ROS2, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        assert self.proc.poll() is None, f"`ros2 {' '.join(self.args)}` exited:\n{self.text()}"

    def stop(self) -> None:
        """Ctrl-C (SIGINT to the group), then: exit status 0, no node died, nothing of it left running."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"`ros2 {' '.join(self.args)}` ignored Ctrl-C for 30 s:\n{self.text()}") from None
        assert self.proc.returncode == 0, self.text()
        assert "process has died" not in self.text(), self.text()
        wait_for(lambda: not processes_with(self.ns), f"the processes in {self.ns} to end", 10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for line in processes_with(self.ns):  # a node that left the group: ours by its unique namespace
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


@pytest.fixture(scope="module")
def model_args(tiny_checkpoint) -> tuple[str, ...]:
    return (f"checkpoint:={tiny_checkpoint('nk')}", "device:=cpu")


@pytest.fixture
def started(tmp_path):
    """Start long-running commands with ``started(name, *args)``; whatever a test leaves running is killed."""
    commands: list[Command] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Command:
        commands.append(Command(tmp_path / f"{name}.log", f"/{MARK}_{name}", *args, env=env))
        return commands[-1]

    yield start
    for command in commands:
        command.kill()


LAUNCH = ("launch", "zoedepth_ros", "zoedepth.launch.py")
FAKE_RVIZ2 = """import os, signal, sys
from pathlib import Path

args = sys.argv[1:]
config = Path(args[args.index("-d") + 1])
Path(sys.argv[0]).with_name("seen.txt").write_text(str(config) + "\\n" + config.read_text())
signal.signal(signal.SIGINT, lambda *_: os._exit(0))  # at once: launch sends a second SIGINT
signal.pause()
"""


def fake_rviz2(prefix: Path) -> Path:
    """An ament prefix with a stand-in `rviz2` that records the view it was given and waits for SIGINT; returns
    the file it records into (path of the view, then its text)."""
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "rviz2").write_text("")
    exe = prefix / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text(f"#!{sys.executable}\n{FAKE_RVIZ2}")
    exe.chmod(0o755)
    return exe.with_name("seen.txt")


def common_stamp(cam: Camera, topics: tuple[str, ...]) -> int | None:
    """A stamp for which every one of ``topics`` has arrived."""
    both = set.intersection(*({stamp_of(m) for m in cam.received[t]} for t in topics))
    return max(both) if both else None


def lifecycle_state(node: str, timeout: float = 30.0) -> str:
    """`ros2 lifecycle get NODE`, retried while discovery has not found the node yet."""
    deadline = time.monotonic() + timeout
    while True:
        result = ros2("lifecycle", "get", *DISCOVER, node)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result.stdout.strip()
        time.sleep(0.2)


def test_rviz_without_rviz2_fails_at_once_and_starts_nothing(tiny_checkpoint):
    rviz = ros2("pkg", "prefix", "rviz2", timeout=30)
    if rviz.returncode == 0:
        pytest.skip(f"rviz2 is installed here ({rviz.stdout.strip()}): the missing-rviz2 error cannot be seen")
    ns = f"/{MARK}_rviz"
    result = ros2(
        "launch",
        "zoedepth_ros",
        "zoedepth.launch.py",
        f"namespace:={ns}",
        "rviz:=true",
        f"checkpoint:={tiny_checkpoint('nk')}",
        "device:=cpu",
        timeout=60,
    )
    message = "rviz:=true but rviz2 is not installed; install ros-<distro>-rviz2 or run without rviz:=true"
    assert result.returncode != 0, result.stdout
    assert result.stdout.count(message) == 1, result.stdout
    assert "process started" not in result.stdout, result.stdout
    assert not processes_with(ns), "rviz:=true without rviz2 left processes behind"


def test_ros2_launch_with_the_demo_camera_and_rviz_publishes_depth_and_stops_on_ctrl_c(started, model_args, tmp_path):
    seen = fake_rviz2(tmp_path / "rviz_prefix")  # rviz2 itself is not installed here
    ament = {"AMENT_PREFIX_PATH": f"{os.environ['AMENT_PREFIX_PATH']}{os.pathsep}{tmp_path / 'rviz_prefix'}"}
    ns = f"/{MARK}_demo"
    command = started("demo", *LAUNCH, f"namespace:={ns}", "demo:=true", "rviz:=true", *model_args, env=ament)
    cam = Camera(DOMAIN, command.ns)  # listens only: the demo camera publishes in the same namespace
    topics = ("depth", "info", "points")
    try:
        cam.wait(
            lambda: common_stamp(cam, topics) is not None or command.proc.poll() is not None,
            "depth, depth camera info and cloud of one demo frame",
            60,
        )
        command.alive()
        depth, info, cloud = (cam.find(t, common_stamp(cam, topics)) for t in topics)
    finally:
        cam.close()
    assert depth.encoding == "32FC1" and depth.header.frame_id == "camera_optical_frame"
    assert info.header == depth.header == cloud.header and (info.width, info.height) == (depth.width, depth.height)
    wait_for(seen.exists, "rviz2 to be started", 10)
    view_path, view = seen.read_text().split("\n", 1)
    for topic in ("points", "depth/colormap", "depth/image"):
        assert f"Value: {ns}/{topic}\n" in view, view
    assert "Fixed Frame: camera_optical_frame\n" in view, view
    command.stop()
    assert not Path(view_path).exists(), "the generated rviz view was not removed at shutdown"


def test_ros2_run_and_ros2_param_get_set(started, tiny_checkpoint):
    command = started(
        "run",
        "run",
        "zoedepth_ros",
        "zoedepth_node",
        "--ros-args",
        "-r",
        f"__ns:=/{MARK}_run",
        "-p",
        f"checkpoint:={tiny_checkpoint('nk')}",
        "-p",
        "device:=cpu",
        "-p",
        "max_depth:=12.5",
    )
    node = f"{command.ns}/zoedepth"
    got = ros2("param", "get", *DISCOVER, "--timeout", "30", node, "max_depth")
    assert got.stdout.strip() == "Double value is: 12.5", got.stdout + command.text()
    changed = ros2("param", "set", *DISCOVER, "--timeout", "10", node, "max_depth", "20.0")
    assert changed.stdout.strip() == "Set parameter successful", changed.stdout
    got = ros2("param", "get", *DISCOVER, "--timeout", "10", node, "max_depth")
    assert got.stdout.strip() == "Double value is: 20.0", got.stdout
    command.alive()
    command.stop()


@pytest.fixture(scope="module")
def managed(tmp_path_factory, model_args):
    """Both managed nodes, started at once (they share the start-up time): autostart on and off."""
    tmp = tmp_path_factory.mktemp("managed")
    common = (*LAUNCH, "lifecycle:=true", "image:=image", "camera_info:=camera_info", *model_args)
    commands = {
        name: Command(tmp / f"{name}.log", f"/{MARK}_{name}", *common, f"namespace:=/{MARK}_{name}", *extra)
        for name, extra in (("lc_on", ()), ("lc_off", ("autostart:=false",)))
    }
    yield commands
    for command in commands.values():
        command.kill()


def test_lifecycle_autostart_reaches_active_and_publishes_depth(managed):
    command = managed["lc_on"]
    cam = Camera(DOMAIN, command.ns)
    try:
        stamp = 1_700_000_200_000_000_000
        try:
            (depth,) = cam.request(rgb_image(4), stamp, topics=("depth",), timeout=60)
        except AssertionError as e:  # say where the node got to: its lifecycle state and the launch output
            state = lifecycle_state(f"{command.ns}/zoedepth")
            raise AssertionError(f"{e}; the node is {state}; launch output:\n{command.text()}") from None
        assert depth.encoding == "32FC1" and stamp_of(depth) == stamp
    finally:
        cam.close()
    assert lifecycle_state(f"{command.ns}/zoedepth") == "active [3]", command.text()
    command.stop()


def test_lifecycle_without_autostart_stays_unconfigured(managed):
    command = managed["lc_off"]  # started with lc_on, seconds ago: nothing has configured it since
    state = lifecycle_state(f"{command.ns}/zoedepth")
    assert state == "unconfigured [1]", state + "\n" + command.text()
    cam = Camera(DOMAIN, command.ns)
    try:  # unconfigured: no model, no subscription to the camera
        cam.spin(1.0)
        assert cam.pub_image.get_subscription_count() == 0
    finally:
        cam.close()
    command.alive()
    command.stop()
