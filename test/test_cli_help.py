"""``--help`` and usage errors of the ROS executables: the usage and parameter table at once, exit 0, nothing started.

``zoedepth_node --help`` once started the node (and a 1.4 GB download); ``zoedepth_demo_camera --help`` started
publishing. Now both print their usage and their parameters (generated from the parameter tables, compared here
against those tables) without importing torch or rclpy, and an argument that is neither theirs nor ROS's is a
usage error (exit 2). The executables run as subprocesses, as a user runs them: ``python -m``, the venv's console
scripts and ``ros2 run``'s wrappers where they are installed, and ``ros2 run`` itself where the ROS 2 tools are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ros_graph import REPO

from zoedepth_ros.ros import cli, params
from zoedepth_ros.ros.demo_camera import PARAMETER_HELP, DemoConfig

MODULES = {"zoedepth_node": "zoedepth_ros.ros.node", "zoedepth_demo_camera": "zoedepth_ros.ros.demo_camera"}
HELP_SECONDS = 10.0  # measured ~0.25 s; generous for a loaded 2-core machine


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """An empty weights cache that must stay uncreated, a mirror that refuses connections, a private domain."""
    return {
        **os.environ,
        "ZOEDEPTH_ROS_CACHE": str(tmp_path / "cache"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "ZOEDEPTH_ROS_BASE_URL": "http://127.0.0.1:9/no-such-mirror",
        "ROS_DOMAIN_ID": str(1 + os.getpid() % 19),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }


def launchers(prog: str) -> list[list[str]]:
    """Every way this environment can start ``prog``: python -m, the console script, the ament-prefix wrapper."""
    found = [[sys.executable, "-m", MODULES[prog]]]
    for exe in (Path(sys.executable).parent / prog, Path(sys.prefix) / "lib" / "zoedepth_ros" / prog):
        if os.access(exe, os.X_OK):
            found.append([str(exe)])
    return found


def run(cmd: list[str], env: dict[str, str], timeout: float = 60.0) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - start


def table_entry(text: str, name: str) -> tuple[str, str]:
    """A parameter's row in the table, and its description (the indented lines beneath, joined)."""
    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if re.match(rf"^  {re.escape(name)}\s", line)]
    assert len(rows) == 1, f"{name}: {rows}\n{text}"
    description = []
    for line in lines[rows[0] + 1 :]:
        if not line.startswith("      "):
            break
        description.append(line.strip())
    return lines[rows[0]], " ".join(description)


def assert_nothing_started(result: subprocess.CompletedProcess, tmp_path: Path) -> None:
    assert not (tmp_path / "cache").exists() and not (tmp_path / "xdg").exists(), "the weights cache was touched"
    out = result.stdout + result.stderr
    for sign in ("downloading", "URLError", "retrying", "[INFO]", "[WARN]", "publishing", "Traceback"):
        assert sign not in out, f"{sign!r} in the output of --help:\n{out}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_node_help_prints_usage_and_every_parameter_and_starts_nothing(offline_env, tmp_path, flag):
    for cmd in launchers("zoedepth_node"):
        result, seconds = run([*cmd, flag], offline_env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert seconds < HELP_SECONDS, f"{cmd} {flag} took {seconds:.1f} s"
        assert_nothing_started(result, tmp_path)
        text = result.stdout
        assert text.startswith("usage: zoedepth_node [-h] [--managed] [--ros-args"), text
        for shown in ("--ros-args", "-p NAME:=VALUE", "--params-file FILE", "-r image:=TOPIC", "camera_info:=TOPIC"):
            assert shown in text, shown
        for p in params.PARAMS:  # every parameter of the table: type, default, allowed values, description
            line, description = table_entry(text, p.name)
            assert line.split()[1:3] == [cli.type_name(p.default), cli.value_text(p.default)], line
            if p.choices:
                assert line.split()[3] == "|".join(p.choices), line
            if p.low is not None:
                assert line.split()[3] == f"{p.low:g}..{p.high:g}", line
            assert description.startswith(" ".join(p.description.split())), (p.name, description)
            assert description.endswith("[runtime]") == p.runtime, (p.name, description)
        assert table_entry(text, "device")[0].split()[3] == "auto|cpu|cuda|cuda:N"


@pytest.mark.timeout(120)
def test_demo_camera_help_prints_usage_and_its_parameters_and_publishes_nothing(offline_env, tmp_path):
    defaults = DemoConfig()
    for cmd in launchers("zoedepth_demo_camera"):
        result, seconds = run([*cmd, "--help"], offline_env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert seconds < HELP_SECONDS, f"{cmd} --help took {seconds:.1f} s"
        assert_nothing_started(result, tmp_path)
        assert result.stdout.startswith("usage: zoedepth_demo_camera [-h] [--ros-args"), result.stdout
        for name, description in PARAMETER_HELP.items():
            value = getattr(defaults, name)
            line, text = table_entry(result.stdout, name)
            assert line.split()[1:] == [cli.type_name(value), cli.value_text(value)], line
            assert text == " ".join(description.split()), name


def test_help_imports_neither_torch_nor_rclpy(offline_env):
    code = (
        "import sys\n"
        "from zoedepth_ros.ros import demo_camera, node\n"
        "assert node.main(['zoedepth_node', '--help']) == 0\n"
        "assert demo_camera.main(['zoedepth_demo_camera', '--help']) == 0\n"
        "print('LOADED', sorted(m for m in ('torch', 'rclpy') if m in sys.modules))\n"
    )
    result, _ = run([sys.executable, "-c", code], offline_env)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prog", sorted(MODULES))
def test_an_argument_that_is_neither_ours_nor_ros_is_a_usage_error(offline_env, tmp_path, prog):
    result, seconds = run([*launchers(prog)[0], "--bogus", "--ros-args", "-p", "device:=cpu"], offline_env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert seconds < HELP_SECONDS
    assert result.stderr.startswith(f"usage: {prog} [-h]"), result.stderr
    assert f"{prog}: error: unrecognized arguments: --bogus (ROS arguments go after --ros-args" in result.stderr
    assert_nothing_started(result, tmp_path)


@pytest.mark.timeout(120)
def test_help_after_the_ros_arguments_end_is_still_help(offline_env, tmp_path):
    cmd = [*launchers("zoedepth_node")[0], "--ros-args", "-p", "device:=cpu", "--", "--help"]
    result, _ = run(cmd, offline_env)
    assert result.returncode == 0 and result.stdout.startswith("usage: zoedepth_node"), result.stderr
    assert_nothing_started(result, tmp_path)


def test_user_args_are_those_outside_the_ros_sections():
    assert cli.user_args([]) == []
    assert cli.user_args(["--managed", "--ros-args", "-r", "__node:=zoedepth", "--params-file", "x.yaml"]) == [
        "--managed"
    ]
    # what launch_ros passes (--ros-args last) and rcl's `--` terminator, after which the user's own come back
    assert cli.user_args(["--ros-args", "-p", "a:=1", "--", "-h", "--ros-args", "-r", "b:=c"]) == ["-h"]
    assert cli.user_args(["--ros-args", "-p", "help:=--help"]) == []  # a ROS argument's value is never ours


def test_the_table_is_the_parameter_table():
    rows = params.help_rows()
    assert [r[0] for r in rows] == [p.name for p in params.PARAMS]
    lines = cli.parameter_table(rows, 100)
    assert lines[0].split() == ["NAME", "TYPE", "DEFAULT", "ALLOWED"]
    assert all(line == line.rstrip() for line in lines)
    assert cli.value_text(()) == "[]" and cli.value_text(False) == "false" and cli.value_text("") == "''"


@pytest.mark.timeout(120)
def test_ros2_run_help_reaches_the_executable(offline_env, tmp_path):
    try:
        from test_launch import child_env
    except ImportError:
        pytest.skip("the test helpers of test_launch need numpy and rclpy")
    env = {**offline_env, **child_env(int(offline_env["ROS_DOMAIN_ID"]))}
    ros2 = shutil.which("ros2", path=env["PATH"])
    if ros2 is None:
        pytest.skip("the ROS 2 command-line tools are not installed (../shared/ros_tools, or a ROS 2 distro)")
    for prog in sorted(MODULES):
        result, _ = run([ros2, "run", "zoedepth_ros", prog, "--help"], env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"usage: {prog} [-h]"), result.stdout
        assert_nothing_started(result, tmp_path)
