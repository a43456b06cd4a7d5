"""Check the rclpy / launch / launch_ros names a source file uses against one distro's API listing.

The listings (``test/data/ros_api/<distro>.json``, made by ``scripts/ros_api_listing.py`` from the upstream
sources) hold every public module, class (bases, members, parameters) and function of those packages. A use is:

- an import (``from rclpy.qos import QoSProfile``, ``import launch_ros.actions``) and any attribute chain on an
  imported name (``rclpy.executors.SingleThreadedExecutor``, ``QoSReliabilityPolicy.BEST_EFFORT``);
- the keywords of a call of such a name (``rclpy.init(signal_handler_options=...)``, ``Node(ros_arguments=...)``);
- a method called on an object the checker cannot type (``sub.get_publisher_count()``) whose name is a member of
  some class of these packages on any distro: it must be a member of some class on this distro, with the keywords
  passed. That is a heuristic (it cannot know the object's class), so it checks names, not receivers.

Anything deprecated on the distro counts as a problem too. Names reached through ``zoedepth_ros.ros.compat`` are
its business: that module is not checked.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("rclpy", "launch", "launch_ros")
DATA = Path(__file__).resolve().parent / "data" / "ros_api"
DISTROS = ("humble", "jazzy", "kilted")
# rclpy's C extension: names bound to it exist, but the listing cannot know their members.
OPAQUE_PREFIXES = ("rclpy.impl.implementation_singleton.rclpy_implementation", "typing.", "enum.", "builtins.")


@dataclass(frozen=True)
class Found:
    qualname: str
    entry: dict | None  # None: exists but opaque (C extension, stdlib)


@dataclass
class Api:
    """One distro's listing, with name resolution through imports, aliases and class bases."""

    distro: str
    modules: dict[str, dict]
    members_by_name: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def load(cls, distro: str) -> Api:
        listing = json.loads((DATA / f"{distro}.json").read_text())
        api = cls(distro, listing["modules"])
        for names in api.modules.values():
            for entry in names.values():
                for member, m in entry.get("members", {}).items():
                    api.members_by_name.setdefault(member, []).append(m)
        for names in api.modules.values():  # a module reached through a variable (self._rclpy.try_shutdown)
            for name, entry in names.items():
                if entry["kind"] == "function" and name in api.members_by_name:
                    api.members_by_name[name].append(entry)
        return api

    def resolve(self, qualname: str, depth: int = 0) -> Found | None:
        """The entry ``qualname`` names (module, class, function, member), following imports and aliases."""
        if depth > 20:
            return None
        if qualname.startswith(OPAQUE_PREFIXES):
            return Found(qualname, None)
        if qualname in self.modules:
            return Found(qualname, {"kind": "module"})
        parts = qualname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:i])
            if module not in self.modules:
                continue
            found = self._entry(module, parts[i], depth)
            for attr in parts[i + 1 :]:
                if found is None or found.entry is None:
                    return found
                found = self.member(found, attr, depth)
            return found
        return None

    def _entry(self, module: str, name: str, depth: int) -> Found | None:
        entry = self.modules[module].get(name)
        if entry is None:
            return self.resolve(f"{module}.{name}", depth + 1) if f"{module}.{name}" in self.modules else None
        target = entry.get("target")
        if entry["kind"] in ("import", "variable") and target:
            return self.resolve(target, depth + 1)
        return Found(f"{module}.{name}", entry)

    def member(self, found: Found, attr: str, depth: int = 0) -> Found | None:
        """``attr`` of a class (its own members, then its bases') or of a module."""
        entry = found.entry
        if entry is None:
            return found
        if entry["kind"] == "module":
            return self.resolve(f"{found.qualname}.{attr}", depth + 1)
        if entry["kind"] != "class":
            return Found(f"{found.qualname}.{attr}", None)  # an attribute of a value: not listed
        if attr in entry.get("members", {}):
            return Found(f"{found.qualname}.{attr}", entry["members"][attr])
        for base in entry.get("bases", []):
            b = self.resolve(base, depth + 1)
            if b is None:
                continue
            if b.entry is None:
                return Found(f"{found.qualname}.{attr}", None)  # an opaque base may have it
            m = self.member(b, attr, depth + 1)
            if m is not None:
                return m
        return None

    def init_params(self, found: Found, depth: int = 0) -> list[list[str]] | None:
        """The ``__init__`` parameter lists along a class's bases (None: unknown, an opaque base)."""
        if found.entry is None or depth > 20:
            return None
        chain = []
        init = found.entry.get("members", {}).get("__init__")
        if init is not None:
            chain.append(init.get("params", []))
            if not any(p.startswith("**") for p in init.get("params", [])):
                return chain
        bases = found.entry.get("bases", [])
        if init is not None and not bases:
            return None  # **kwargs read by the class itself (QoSProfile on Humble): any keyword may be right
        for base in bases:
            b = self.resolve(base, depth + 1)
            if b is None or b.entry is None:
                return None
            rest = self.init_params(b, depth + 1)
            if rest is None:
                return None
            chain.extend(rest)
        return chain


def accepts(param_lists: list[list[str]], keyword: str) -> bool:
    return any(keyword in params for params in param_lists)


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    what: str  # a qualified name, or ".method" for an untyped method call
    keywords: tuple[str, ...] = ()


def uses(path: Path, source: str | None = None) -> Iterator[Use]:
    """Every use of the three packages in one file (see the module docstring)."""
    text = path.read_text() if source is None else source
    tree = ast.parse(text, str(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    local = a.asname or a.name.split(".")[0]
                    aliases[local] = a.name if a.asname else a.name.split(".")[0]
                    yield Use(str(path), node.lineno, a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PACKAGES:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    yield Use(str(path), node.lineno, f"{node.module}.{a.name}")
    if not aliases:
        return

    def chain(expr: ast.expr) -> str | None:
        parts = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if isinstance(expr, ast.Name) and expr.id in aliases:
            return ".".join([aliases[expr.id], *reversed(parts)])
        return None

    called: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
            name = chain(node.func)
            if name is not None:
                called.add(id(node.func))
                yield Use(str(path), node.lineno, name, keywords)
            elif isinstance(node.func, ast.Attribute):
                yield Use(str(path), node.lineno, f".{node.func.attr}", keywords)
        elif isinstance(node, ast.Attribute) and id(node) not in called:
            name = chain(node)
            if name is not None and not isinstance(getattr(node, "ctx", None), ast.Store):
                yield Use(str(path), node.lineno, name)


def defined_names(paths: list[Path]) -> set[str]:
    """The functions and methods the checked sources define: a call of one of these names may well be ours."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
    return names


def problems(
    api: Api, found_uses: list[Use], all_member_names: set[str], ours: frozenset[str] = frozenset()
) -> list[str]:
    """What of ``found_uses`` does not exist on ``api``'s distro (or is deprecated there); untyped method calls
    named in ``ours`` (defined by the checked code itself) are left alone."""
    out = []
    for use in found_uses:
        where = f"{use.path}:{use.line}"
        if use.what.startswith("."):
            name = use.what[1:]
            if name not in all_member_names or name in ours:
                continue  # not a method of these packages on any distro, or one of our own
            candidates = api.members_by_name.get(name, [])
            if not candidates:
                out.append(f"{where}: no class of rclpy/launch/launch_ros on {api.distro} has a method {name}()")
                continue
            if all(c.get("deprecated") for c in candidates):
                out.append(f"{where}: {name}() is deprecated on {api.distro}")
            for kw in use.keywords:
                if not any(kw in c.get("params", []) or has_var_kw(c) for c in candidates):
                    out.append(f"{where}: {name}() takes no keyword {kw!r} on {api.distro}")
            continue
        found = api.resolve(use.what)
        if found is None:
            out.append(f"{where}: {use.what} does not exist on {api.distro}")
            continue
        if found.entry is None:
            continue
        if found.entry.get("deprecated"):
            out.append(f"{where}: {use.what} is deprecated on {api.distro}")
        if not use.keywords:
            continue
        if found.entry["kind"] == "class":
            params = api.init_params(found)
        elif found.entry["kind"] == "function":
            params = [found.entry.get("params", [])]
        else:
            params = None
        if params is None:
            continue
        for kw in use.keywords:
            if not accepts(params, kw):
                out.append(f"{where}: {use.what}() takes no keyword {kw!r} on {api.distro}")
    return out


def has_var_kw(entry: dict) -> bool:
    return any(p.startswith("**") for p in entry.get("params", []))
