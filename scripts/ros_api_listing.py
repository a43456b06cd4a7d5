#!/usr/bin/env python3
"""List the public Python API of rclpy, launch and launch_ros from their sources, as JSON.

The sources are parsed with ``ast`` and never imported, so any distro can be listed on any machine. Each package
comes either from a git directory at a ref (``--git PKG GITDIR REF``; the package is ``PKG/PKG/`` in the tree and
its version comes from ``PKG/package.xml``) or from a plain folder that holds ``PKG/__init__.py`` (``--dir PKG
FOLDER``, e.g. a venv's site-packages; the version comes from ``PKG/package.xml``, an install prefix's
``share/PKG/package.xml`` or a ``*.dist-info``/``*.egg-info`` there, if any).

Output (compact, sorted keys)::

    {"distro": "humble",
     "sources": {"rclpy": {"repo": ..., "ref": ..., "commit": ..., "version": ...}, ...},
     "modules": {"rclpy.node": {"Node": ENTRY, ...}, ...}}

ENTRY is one of
  {"kind": "class", "bases": ["rclpy.qos.QoSPolicyEnum", ...], "members": {NAME: MEMBER}}
  {"kind": "function", "params": ["a", "b", "*args", "kw_only", "**kwargs"]}
  {"kind": "variable"}           plus "target" (resolved like bases) when assigned a plain name, i.e. an alias
  {"kind": "module"}             a submodule of a package (importable; an attribute once imported)
  {"kind": "import", "target": "rclpy.qos.QoSProfile"}   a name bound by an import (``from X import *`` expanded)
MEMBER is {"kind": "function" | "property" | "attribute"}; functions have "params" without the bound first
parameter (``self``/``cls``) of plain and class methods.

Functions and methods also carry "required" (the params without a default) when there are any, and
"deprecated": true under a ``@deprecated`` decorator. Class attributes include enum members; attributes that
``__init__`` assigns on ``self`` are listed with "instance": true; names only annotated in the class body
(TypedDict keys, NamedTuple/dataclass fields) with "annotated": true; names that a class decorator such as
``@_deprecated_policy_value_aliases((("OLD", "NEW"), ...))`` adds (rclpy.qos) with "deprecated": true.
Inherited members are not expanded; bases are fully qualified where the module's imports or definitions
resolve them. Only public names (no leading underscore) are listed, plus the dunder members in ``DUNDERS``.
Names imported under ``if TYPE_CHECKING:`` are left out (they do not exist at run time). Names from rclpy's C
extension stay unresolved targets under ``rclpy.impl.implementation_singleton.rclpy_implementation``.

Example::

    python scripts/ros_api_listing.py --distro humble -o test/data/ros_api/humble.json \\
        --git rclpy /work/.mirror/ros2+rclpy/repo humble --git launch /work/.mirror/ros2+launch/repo humble \\
        --git launch_ros /work/.mirror/ros2+launch_ros/repo humble
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PACKAGES = ("rclpy", "launch", "launch_ros")
DUNDERS = frozenset({"__init__", "__call__", "__enter__", "__exit__"})
Entry = dict[str, Any]
TRY_NODES = (ast.Try, getattr(ast, "TryStar", ast.Try))  # TryStar is Python 3.11+


def is_public(name: str) -> bool:
    """Whether a name is public (no leading underscore)."""
    return not name.startswith("_")


def module_name(rel_path: str) -> str | None:
    """Dotted module name for a ``.py`` path relative to the package's parent, or None for private modules."""
    parts = rel_path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or any(p.startswith("_") for p in parts[1:]):
        return None
    return ".".join(parts)


def params_of(args: ast.arguments, drop_first: bool) -> list[str]:
    """Parameter names of a function, with ``*args``/``**kwargs`` marked; optionally without ``self``/``cls``."""
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    if drop_first and positional:
        positional = positional[1:]
    out = positional
    if args.vararg:
        out.append("*" + args.vararg.arg)
    out += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        out.append("**" + args.kwarg.arg)
    return out


def function_entry(node: ast.FunctionDef | ast.AsyncFunctionDef, drop_first: bool) -> Entry:
    """Entry for a function or method: params, plus "required" (no default) and "deprecated" when they apply."""
    entry: Entry = {"kind": "function", "params": params_of(node.args, drop_first)}
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    required = [a.arg for a in positional[: len(positional) - len(args.defaults)]]
    if drop_first:
        required = required[1:]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    if required:
        entry["required"] = required
    if any(d.rpartition(".")[2] == "deprecated" for d in decorator_names(node)):
        entry["deprecated"] = True
    return entry


def decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Decorator names as dotted text (``property``, ``x.setter``, ``typing.overload``), calls unwrapped."""
    names = []
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        names.append(ast.unparse(target))
    return names


def is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` test is ``TYPE_CHECKING`` (bare or ``typing.TYPE_CHECKING``)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def flat_body(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that bind names at this level, looking into ``if``/``try``/``with`` (not ``if TYPE_CHECKING``)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if not is_type_checking(stmt.test):
                yield from flat_body(stmt.body)
            yield from flat_body(stmt.orelse)
        elif isinstance(stmt, TRY_NODES):
            yield from flat_body(stmt.body)
            for handler in stmt.handlers:
                yield from flat_body(handler.body)
            yield from flat_body(stmt.orelse)
            yield from flat_body(stmt.finalbody)
        elif isinstance(stmt, ast.With):
            yield from flat_body(stmt.body)
        else:
            yield stmt


def target_names(target: ast.expr) -> Iterator[str]:
    """Plain names bound by an assignment target (tuples unpacked)."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for elt in target.elts:
            yield from target_names(elt)
    elif isinstance(target, ast.Starred):
        yield from target_names(target.value)


class ModuleParser:
    """Turns one module's source into its listing of public names."""

    def __init__(self, modname: str, is_package: bool) -> None:
        self.modname = modname
        self.package = modname if is_package else modname.rpartition(".")[0]
        self.imports: dict[str, str] = {}  # every name bound by an import (private ones too), for resolving bases
        self.defined: set[str] = set()
        self.star_imports: list[str] = []  # modules of ``from X import *``, expanded once every module is parsed
        self.all_names: list[str] | None = None  # a literal ``__all__``, which limits what a star import takes

    def absolute(self, module: str | None, level: int) -> str:
        """Absolute module name of a (possibly relative) ``from`` import."""
        if level == 0:
            return module or ""
        base = self.package.split(".")
        base = base[: len(base) - (level - 1)] if level > 1 else base
        return ".".join([*base, module] if module else base)

    def resolve(self, expr: ast.expr) -> str:
        """Fully qualified name of a base-class expression where the module's imports resolve it."""
        if isinstance(expr, ast.Subscript):  # Generic[T], Enum subscripts and the like
            return self.resolve(expr.value)
        if isinstance(expr, ast.Call):
            return ast.unparse(expr)
        text = ast.unparse(expr)
        head, _, rest = text.partition(".")
        if head in self.imports:
            full = self.imports[head]
        elif head in self.defined:
            full = f"{self.modname}.{head}"
        elif hasattr(builtins, head):
            full = f"builtins.{head}"
        else:
            full = head
        return f"{full}.{rest}" if rest else full

    def parse(self, source: str) -> dict[str, Entry]:
        """Listing of one module: public top-level names and what they are."""
        tree = ast.parse(source)
        body = list(flat_body(tree.body))
        for stmt in body:  # first pass: imports and local definitions, so bases resolve regardless of order
            self.record_import(stmt)
            if isinstance(stmt, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                self.defined.add(stmt.name)
        out: dict[str, Entry] = {}
        for stmt in body:
            for name, entry in self.entries(stmt):
                if is_public(name):
                    out[name] = merge(out.get(name), entry)
        return out

    def record_import(self, stmt: ast.stmt) -> None:
        """Remember what each imported name refers to, star imports, and a literal ``__all__``."""
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    self.imports[head] = head
        elif isinstance(stmt, ast.ImportFrom):
            base = self.absolute(stmt.module, stmt.level)
            for alias in stmt.names:
                if alias.name == "*":
                    self.star_imports.append(base)
                else:
                    self.imports[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name
        elif isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                try:
                    value = ast.literal_eval(stmt.value)
                except ValueError:
                    return
                if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                    self.all_names = list(value)

    def entries(self, stmt: ast.stmt) -> Iterator[tuple[str, Entry]]:
        """(name, entry) pairs bound by one top-level statement."""
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                if alias.name == "*":
                    continue
                name = alias.asname or (alias.name.split(".")[0] if isinstance(stmt, ast.Import) else alias.name)
                yield name, {"kind": "import", "target": self.imports[name]}
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield stmt.name, function_entry(stmt, drop_first=False)
        elif isinstance(stmt, ast.ClassDef):
            yield stmt.name, self.class_entry(stmt)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign) and stmt.value is not None:
            entry: Entry = {"kind": "variable"}
            if isinstance(stmt.value, ast.Name | ast.Attribute) and not isinstance(stmt, ast.AugAssign):
                entry["target"] = self.resolve(stmt.value)  # an alias such as QoSReliabilityPolicy = ...
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                for name in target_names(target):
                    yield name, entry
        elif sys.version_info >= (3, 12) and isinstance(stmt, ast.TypeAlias):
            yield stmt.name.id, {"kind": "variable"}

    def class_entry(self, node: ast.ClassDef) -> Entry:
        """Entry for a class: resolved bases and its own (not inherited) members."""
        members: dict[str, Entry] = {}
        overloads: dict[str, list[str]] = {}
        for stmt in flat_body(node.body):
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                name = stmt.name
                if not (is_public(name) or name in DUNDERS):
                    continue
                decs = decorator_names(stmt)
                if any(d.endswith((".setter", ".deleter")) for d in decs):
                    continue
                if any(d in ("property", "functools.cached_property", "cached_property") for d in decs):
                    members[name] = {"kind": "property"}
                    continue
                entry = function_entry(stmt, drop_first="staticmethod" not in decs)
                if any(d in ("overload", "typing.overload") for d in decs):
                    overloads.setdefault(name, [])
                    overloads[name] += [p for p in entry["params"] if p not in overloads[name]]
                    continue
                members[name] = entry
                if name == "__init__":
                    self.instance_attributes(stmt, members)
            elif isinstance(stmt, ast.ClassDef):
                if is_public(stmt.name):
                    members[stmt.name] = {"kind": "attribute"}
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                annotated = isinstance(stmt, ast.AnnAssign) and stmt.value is None
                for target in targets:
                    for name in target_names(target):
                        if is_public(name):
                            members[name] = (
                                {"kind": "attribute", "annotated": True} if annotated else {"kind": "attribute"}
                            )
        for name, params in overloads.items():  # overloads without an implementation in the class body
            members.setdefault(name, {"kind": "function", "params": params})
        for name in self.decorator_aliases(node):
            members.setdefault(name, {"kind": "attribute", "deprecated": True})
        bases = [self.resolve(b) for b in node.bases]
        return {"kind": "class", "bases": bases, "members": members}

    @staticmethod
    def decorator_aliases(node: ast.ClassDef) -> list[str]:
        """Names a class decorator like ``@_deprecated_policy_value_aliases((('OLD', 'NEW'), ...))`` sets on it."""
        names: list[str] = []
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and dec.args and "deprecated" in ast.unparse(dec.func)):
                continue
            try:
                pairs = ast.literal_eval(dec.args[0])
            except ValueError:
                continue
            if isinstance(pairs, list | tuple):
                names += [p[0] for p in pairs if isinstance(p, tuple) and p and isinstance(p[0], str)]
        return [n for n in names if n.isidentifier() and is_public(n)]

    @staticmethod
    def instance_attributes(init: ast.FunctionDef | ast.AsyncFunctionDef, members: dict[str, Entry]) -> None:
        """Add the public attributes that ``__init__`` assigns on ``self`` (marked ``"instance": true``)."""
        if not init.args.args:
            return
        self_name = init.args.args[0].arg
        for sub in ast.walk(init):
            targets: list[ast.expr] = []
            if isinstance(sub, ast.Assign):
                targets = sub.targets
            elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
                targets = [sub.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == self_name
                    and is_public(target.attr)
                    and target.attr not in members
                ):
                    members[target.attr] = {"kind": "attribute", "instance": True}


def merge(old: Entry | None, new: Entry) -> Entry:
    """Combine two bindings of one name (e.g. both branches of an ``if``/``try``): definitions beat imports."""
    if old is None:
        return new
    rank = {"class": 3, "function": 2, "variable": 1, "import": 0, "module": 0}
    return new if rank.get(new.get("kind", ""), -1) >= rank.get(old.get("kind", ""), -1) else old


def list_package(files: dict[str, str], parsers: dict[str, ModuleParser]) -> dict[str, dict[str, Entry]]:
    """Listings of every public module, given ``{path relative to the package's parent: source}``.

    The parser of each module is left in ``parsers`` (for ``expand_star_imports``).
    """
    modules: dict[str, dict[str, Entry]] = {}
    for rel in sorted(files):
        name = module_name(rel)
        if name is None:
            continue
        parser = parsers[name] = ModuleParser(name, is_package=rel.endswith("/__init__.py"))
        try:
            modules[name] = parser.parse(files[rel])
        except SyntaxError as exc:
            raise SystemExit(f"ros_api_listing: cannot parse {rel}: {exc}") from exc
    for name in modules:  # submodules are attributes of their package (once imported)
        parent, _, leaf = name.rpartition(".")
        if parent in modules and leaf not in modules[parent]:
            modules[parent][leaf] = {"kind": "module"}
    return modules


def expand_star_imports(modules: dict[str, dict[str, Entry]], parsers: dict[str, ModuleParser]) -> None:
    """Add the names that ``from X import *`` binds (X's literal ``__all__``, else its public names) as imports."""
    for _ in range(len(parsers)):  # repeat so that chains of star imports settle
        changed = False
        for name, parser in parsers.items():
            for source in parser.star_imports:
                if source not in modules:
                    print(f"ros_api_listing: {name}: star import from unlisted {source} left out", file=sys.stderr)
                    continue
                src = parsers[source]
                names = src.all_names if src.all_names is not None else list(modules[source])
                for star_name in names:
                    entry = modules[source].get(star_name)
                    if is_public(star_name) and star_name not in modules[name] and entry and entry["kind"] != "module":
                        modules[name][star_name] = {"kind": "import", "target": f"{source}.{star_name}"}
                        changed = True
        if not changed:
            break
    for parser in parsers.values():
        parser.star_imports = [s for s in parser.star_imports if s not in modules]


def git(gitdir: str, *args: str) -> str:
    """Output of a git command on a (bare) git directory."""
    return subprocess.run(["git", "--git-dir", gitdir, *args], check=True, capture_output=True, text=True).stdout


def package_version(package_xml: str) -> str | None:
    """The ``<version>`` of a package.xml."""
    match = re.search(r"<version>\s*([^<\s]+)\s*</version>", package_xml)
    return match.group(1) if match else None


def repo_label(gitdir: str) -> str:
    """``owner/name`` for a git directory: its origin URL, or a mirror path like ``.../ros2+rclpy/repo``."""
    try:
        url = git(gitdir, "config", "--get", "remote.origin.url").strip()
    except subprocess.CalledProcessError:
        url = ""
    if url:
        return re.sub(r"(\.git)?/?$", "", url.split("github.com")[-1].lstrip(":/"))
    for part in reversed(Path(gitdir).resolve().parts):
        if "+" in part:
            return part.replace("+", "/", 1)
    return str(Path(gitdir).resolve())


def from_git(pkg: str, gitdir: str, ref: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Source record and ``{relative path: source}`` of package ``pkg`` at ``ref`` (tree path ``pkg/pkg``)."""
    commit = git(gitdir, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    paths = [p for p in git(gitdir, "ls-tree", "-r", "--name-only", commit, "--", f"{pkg}/{pkg}/").split("\n")]
    files = {p[len(pkg) + 1 :]: git(gitdir, "show", f"{commit}:{p}") for p in paths if p.endswith(".py")}
    if not files:
        raise SystemExit(f"ros_api_listing: no {pkg}/{pkg}/*.py in {gitdir} at {ref}")
    version = package_version(git(gitdir, "show", f"{commit}:{pkg}/package.xml"))
    source = {"repo": repo_label(gitdir), "ref": ref, "commit": commit, "version": version}
    return source, files


def from_dir(pkg: str, folder: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Source record and ``{relative path: source}`` of package ``pkg`` in a plain folder holding ``pkg/``."""
    root = Path(folder)
    if not (root / pkg / "__init__.py").is_file():
        raise SystemExit(f"ros_api_listing: no {pkg}/__init__.py in {folder}")
    files = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted((root / pkg).rglob("*.py"))}
    version = None
    # package.xml next to the package, or in an install prefix's share/PKG (a venv: lib/pythonX.Y/site-packages)
    for xml in [root / pkg / "package.xml", *(a / "share" / pkg / "package.xml" for a in root.resolve().parents[:3])]:
        if xml.is_file():
            version = package_version(xml.read_text(encoding="utf-8"))
            break
    for meta in sorted(root.glob("*.dist-info/METADATA")) + sorted(root.glob("*.egg-info/PKG-INFO")):
        top = meta.parent / "top_level.txt"
        if version is None and top.is_file() and pkg in top.read_text(encoding="utf-8").split():
            match = re.search(r"^Version:\s*(\S+)", meta.read_text(encoding="utf-8", errors="replace"), re.M)
            version = match.group(1) if match else None
    source = {"repo": f"dir:{root.resolve()}", "ref": None, "commit": None, "version": version}
    return source, files


def build(distro: str, gits: list[list[str]], dirs: list[list[str]], labels: dict[str, str]) -> dict[str, Any]:
    """The whole listing for one distro."""
    sources: dict[str, Any] = {}
    modules: dict[str, Any] = {}
    parsers: dict[str, ModuleParser] = {}
    for pkg, gitdir, ref in gits:
        sources[pkg], files = from_git(pkg, gitdir, ref)
        modules.update(list_package(files, parsers))
    for pkg, folder in dirs:
        sources[pkg], files = from_dir(pkg, folder)
        modules.update(list_package(files, parsers))
    expand_star_imports(modules, parsers)
    for pkg, label in labels.items():
        if pkg in sources:
            sources[pkg]["repo"] = label
    return {"distro": distro, "sources": sources, "modules": modules}


def main(argv: list[str] | None = None) -> int:
    """Command line: write one distro's listing."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distro", required=True, help="distro name recorded in the output, e.g. humble")
    ap.add_argument(
        "--git",
        nargs=3,
        action="append",
        default=[],
        metavar=("PKG", "GITDIR", "REF"),
        help="list package PKG from PKG/PKG/ of a git directory at REF (branch, tag or commit)",
    )
    ap.add_argument(
        "--dir",
        nargs=2,
        action="append",
        default=[],
        metavar=("PKG", "FOLDER"),
        help="list package PKG from FOLDER/PKG/ (e.g. a site-packages)",
    )
    ap.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="PKG=TEXT",
        help="what to record as the source 'repo' of PKG (e.g. 'PyPI ros-rclpy 9.1.2')",
    )
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    args = ap.parse_args(argv)
    labels = dict(item.split("=", 1) for item in args.label)
    listing = build(args.distro, args.git, args.dir, labels)
    text = json.dumps(listing, sort_keys=True, separators=(",", ":")) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
