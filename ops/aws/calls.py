"""The AWS calls the code makes, found by reading it: the source of the operator's IAM policy.

:func:`scan` reads ``ops/`` and ``tasks.py`` with :mod:`ast`. Every call of a method of a client
named ``ec2``, ``route53`` or ``kms`` (``ec2.describe_vpcs(...)``, ``self.ec2.run_instances``,
``ctx.ec2.get_paginator("describe_instances")``, ``get_waiter("volume_in_use")``) becomes its IAM
action through botocore's service model (the operation's name: ``ec2:DescribeVpcs``). What
refers to what (functions, methods, module-level tables such as promotion's steps) tells which
calls each task can reach: a name resolves through the module's imports; ``obj.method`` on an
object of unknown type stands for every method of that name in the classes the module can see
(its own and those of the modules it imports, the type-checking ones included), which can only
give a task more actions, never fewer. A call named like an AWS operation on something not named
as a client is kept apart (:attr:`Scan.unattributed`): the policy could lack it, so a test keeps
that list empty.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ec2", "route53", "kms")
"""The services whose calls are scanned; a client is recognised by its name (``ec2``, ...)."""
CLIENT_HELPERS = frozenset({"meta", "exceptions", "close", "can_paginate"})
"""Client methods that are no AWS operation and call none."""


@functools.cache
def operations(service: str) -> dict[str, str]:
    """boto3 method name -> API operation name (``describe_vpcs`` -> ``DescribeVpcs``)."""
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


@functools.cache
def waiter_operations(service: str) -> dict[str, str]:
    """boto3 waiter name -> the operation it polls (``volume_in_use`` -> ``DescribeVolumes``)."""
    model = botocore.session.get_session().get_waiter_model(service)
    return {xform_name(name): model.get_waiter(name).operation for name in model.waiter_names}


@dataclass(frozen=True)
class Call:
    """An AWS call the code makes, and where."""

    action: str
    """The IAM action: ``ec2:DescribeVpcs``."""
    where: str
    """``ops/aws/network.py:123``."""


@dataclass
class Def:
    """A function, method, class body or module-level name: its AWS calls and what it uses."""

    calls: list[Call] = field(default_factory=list)
    uses: set[str] = field(default_factory=set)
    """Keys of other defs (``module:name``, ``module:Class.method``), or ``?module.name``: a
    method ``name`` of an object of unknown type, used in ``module``."""


@dataclass(frozen=True)
class Scan:
    """The code's AWS calls and references, by def; and the calls it could not attribute."""

    defs: Mapping[str, Def]
    aliases: Mapping[str, str]
    """``module:name`` imported from elsewhere -> the key it names there."""
    visible: Mapping[str, frozenset[str]]
    """Module -> the classes (keys) it can see: its own, and its imported modules'."""
    unattributed: tuple[str, ...]
    """``file:line method`` of a call named like an AWS operation on something not named as a
    client."""

    def _targets(self, use: str) -> set[str]:
        if use.startswith("?"):
            module, _, attr = use[1:].rpartition(".")
            return {f"{c}.{attr}" for c in self.visible.get(module, ())} & set(self.defs)
        return {_resolve(use, self.aliases)}

    def reachable(self, entry: str) -> set[str]:
        """The defs ``entry`` can reach, itself included (a class: its body and constructor)."""
        seen: set[str] = set()
        todo = [entry]
        while todo:
            for key in self._targets(todo.pop()):
                if key in seen or key not in self.defs:
                    continue
                seen.add(key)
                todo.extend(self.defs[key].uses)
                todo.extend(f"{key}.{init}" for init in ("__init__", "__post_init__"))
        return seen

    def calls_of(self, entry: str) -> list[Call]:
        """Every AWS call of the code ``entry`` can reach."""
        return [call for key in sorted(self.reachable(entry)) for call in self.defs[key].calls]

    def every_call(self) -> list[Call]:
        """Every AWS call anywhere in the scanned code."""
        return [call for d in self.defs.values() for call in d.calls]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _Module:
    """One module: its imports, its top-level names, and a :class:`Def` for each of them."""

    def __init__(self, name: str, shown: str, tree: ast.Module, modules: set[str]) -> None:
        self.name, self.shown, self.modules = name, shown, modules
        self.package = name if shown.endswith("__init__.py") else name.rpartition(".")[0]
        self.imports: dict[str, str] = {}
        """Local name -> a module (``ops.aws.client``, ``subprocess``) or ``module:name``."""
        for node in ast.walk(tree):  # imports inside functions and TYPE_CHECKING blocks too
            if isinstance(node, ast.Import | ast.ImportFrom):
                self._import(node)
        self.names: set[str] = set()
        self.classes: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.names.add(node.name)
            if isinstance(node, ast.ClassDef):
                self.classes.add(f"{name}:{node.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                self.names.update(t.id for t in _targets(node))
        self.defs: dict[str, Def] = {}
        self.unattributed: list[str] = []
        for node in tree.body:
            self._top(node)

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                self.imports[local] = alias.name if alias.asname else local
            return
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            target = full if full in self.modules else f"{base}:{alias.name}"
            self.imports[alias.asname or alias.name] = target

    def _top(self, node: ast.stmt) -> None:
        name = self.name
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self._def(f"{name}:{node.name}", [node], None)
        elif isinstance(node, ast.ClassDef):
            methods = [
                n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            rest: list[ast.AST] = [n for n in node.body if n not in methods]
            self._def(f"{name}:{node.name}", [*node.bases, *node.decorator_list, *rest], node.name)
            for item in methods:
                self._def(f"{name}:{node.name}.{item.name}", [item], node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in _targets(node):
                self._def(f"{name}:{target.id}", [node], None)

    def visible_modules(self) -> set[str]:
        """This module and the modules of what it imports."""
        out = {self.name}
        for target in self.imports.values():
            module = target.split(":")[0]
            if module in self.modules:
                out.add(module)
        return out

    def _def(self, key: str, nodes: list[ast.AST], cls: str | None) -> None:
        found = self.defs.setdefault(key, Def())
        for node in nodes:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                    self._call(sub, sub.func, found)
                used: str | None = None
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                    used = self._name(sub.id)
                elif isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load):
                    used = self._attribute(sub, cls)
                if used is not None:
                    found.uses.add(used)

    def _name(self, name: str) -> str | None:
        if name in self.names:
            return f"{self.name}:{name}"
        target = self.imports.get(name, "")
        return target if ":" in target else None  # a module, a local, a parameter, a builtin

    def _attribute(self, node: ast.Attribute, cls: str | None) -> str | None:
        value = node.value
        if isinstance(value, ast.Name):
            if value.id in ("self", "cls") and cls:
                return f"{self.name}:{cls}.{node.attr}"
            target = self.imports.get(value.id)
            if target is not None and ":" not in target:
                return f"{target}:{node.attr}" if target in self.modules else None
            if value.id in self.names:
                return f"{self.name}:{value.id}.{node.attr}"
            if target is not None:
                return f"{target}.{node.attr}"
        return f"?{self.name}.{node.attr}"

    def _call(self, node: ast.Call, func: ast.Attribute, found: Def) -> None:
        receiver = func.value
        client = ""
        if isinstance(receiver, ast.Name):
            client = receiver.id
        elif isinstance(receiver, ast.Attribute):
            client = receiver.attr
        where = f"{self.shown}:{node.lineno}"
        method = func.attr
        if client not in SERVICES:
            known = isinstance(receiver, ast.Name) and (
                receiver.id in self.imports or receiver.id in self.names
            )  # a module or a class of ours, not a client
            if not known and any(method in operations(s) for s in SERVICES):
                self.unattributed.append(f"{where} {method}")
            return
        if method in ("get_paginator", "get_waiter"):
            arg = node.args[0] if node.args else None
            name = arg.value if isinstance(arg, ast.Constant) else None
            table = operations(client) if method == "get_paginator" else waiter_operations(client)
            if isinstance(name, str) and name in table:
                found.calls.append(Call(f"{client}:{table[name]}", where))
            else:
                self.unattributed.append(f"{where} {method}")
        elif method in operations(client):
            found.calls.append(Call(f"{client}:{operations(client)[method]}", where))
        elif method not in CLIENT_HELPERS:
            self.unattributed.append(f"{where} {method}")


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.Name]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t for t in targets if isinstance(t, ast.Name)]


def scan(root: Path = ROOT) -> Scan:
    """Scan ``ops/`` and ``tasks.py`` under ``root``."""
    paths = [*sorted((root / "ops").rglob("*.py")), root / "tasks.py"]
    modules = {_module_name(p, root) for p in paths}
    parsed = []
    for path in paths:
        shown = str(path.relative_to(root))
        tree = ast.parse(path.read_text(encoding="utf-8"), shown)
        parsed.append(_Module(_module_name(path, root), shown, tree, modules))
    defs = {key: d for m in parsed for key, d in m.defs.items()}
    aliases = {
        f"{m.name}:{local}": target
        for m in parsed
        for local, target in m.imports.items()
        if ":" in target and f"{m.name}:{local}" not in defs
    }
    classes_of = {m.name: m.classes for m in parsed}
    visible = {}
    for m in parsed:
        seen = {c for module in m.visible_modules() for c in classes_of[module]}
        # A class imported through a package's re-export is seen where it is defined.
        seen.update(
            _resolve(f"{m.name}:{local}", aliases) for local, t in m.imports.items() if ":" in t
        )
        visible[m.name] = frozenset(c for c in seen if c in defs)
    unattributed = tuple(line for m in parsed for line in m.unattributed)
    return Scan(defs, aliases, visible, unattributed)


def _resolve(key: str, aliases: Mapping[str, str]) -> str:
    seen: set[str] = set()
    while key in aliases and key not in seen:
        seen.add(key)
        key = aliases[key]
    return key
