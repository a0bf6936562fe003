"""The package's import arrows run one way, cli -> engine -> weights / data / inference /
export / integrations -> models -> nn -> ops, and no package imports another's underscore
names. Read from the source with ast (every import, also those inside functions), so a lazy
import cannot hide an arrow that points up."""

from __future__ import annotations

import ast
import os

import ddetr

PACKAGE = os.path.dirname(os.path.abspath(ddetr.__file__))

# Each top-level part of ddetr and its layer: a part may import from lower layers and from
# its own; parts of one layer may import each other as long as no cycle forms.
LAYERS = {
    # shared by every layer: the error type, small utilities, the build's generated modules
    "errors": 0,
    "util": 0,
    "_build_info": 0,
    "_C": 0,
    "": 1,  # ddetr/__init__.py: loads the op library
    "ops": 1,
    "nn": 2,
    "models": 3,
    "weights": 4,
    "data": 4,
    "inference": 4,
    "export": 4,
    "integrations": 4,
    "visualize": 4,
    "engine": 5,
    "cli": 6,
    "__main__": 6,
}
SHARED = {"errors", "util", "_build_info", "_C"}  # their underscore is the build's, not privacy

# The one arrow that points up on purpose: `ddetr.optimize_for_inference`, a public name of
# the package, is imported on first use (so `import ddetr` loads only the op).
ALLOWED_UP = {("", "inference")}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _is_package(name: str) -> bool:
    return os.path.isfile(os.path.join(os.path.dirname(PACKAGE), *name.split("."), "__init__.py"))


def _is_module(name: str) -> bool:
    base = os.path.join(os.path.dirname(PACKAGE), *name.split("."))
    return os.path.isfile(base + ".py") or os.path.isdir(base)


def imports():
    """(importer module, imported ddetr module, names imported from it) for every import."""
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            me = _module_name(path)
            package = me if _is_package(me) else me.rpartition(".")[0]
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] == "ddetr":
                            yield me, alias.name, []
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")
                        base = base[: len(base) - (node.level - 1)]
                        target = ".".join(base + ([node.module] if node.module else []))
                    else:
                        target = node.module or ""
                    if target.split(".")[0] != "ddetr":
                        continue
                    names = [a.name for a in node.names]
                    modules = [n for n in names if _is_module(f"{target}.{n}")]
                    for n in modules:  # `from . import ops`: the module ddetr.ops
                        yield me, f"{target}.{n}", []
                    if len(modules) < len(names):
                        yield me, target, [n for n in names if n not in modules]


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_has_a_layer():
    found = {part(_module_name(os.path.join(d, f))) for d, _, fs in os.walk(PACKAGE) for f in fs if f.endswith(".py")}
    assert found <= set(LAYERS), f"parts of ddetr with no layer in this test: {sorted(found - set(LAYERS))}"


def test_imports_run_one_way():
    up = sorted(
        f"{me} imports {target}"
        for me, target, _ in imports()
        if LAYERS[part(target)] > LAYERS[part(me)] and (part(me), part(target)) not in ALLOWED_UP
    )
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_no_cycle_between_parts():
    edges = {}
    for me, target, _ in imports():
        a, b = part(me), part(target)
        if a != b and (a, b) not in ALLOWED_UP:
            edges.setdefault(a, set()).add(b)

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in edges.get(start, ()))

    cycles = sorted(f"{a} <-> {b}" for a, bs in edges.items() for b in bs if reaches(b, a))
    assert not cycles, "parts that import each other: " + ", ".join(cycles)


def test_no_part_imports_another_parts_underscore_names():
    private = []
    for me, target, names in imports():
        if part(me) == part(target):
            continue
        inner = target.split(".")[1:]
        hidden = [p for p in inner if p.startswith("_") and not p.startswith("__") and p not in SHARED]
        hidden += [n for n in names if n.startswith("_") and not n.startswith("__")]
        if hidden:
            private.append(f"{me} imports {target} {names or ''}".rstrip())
    assert not private, "underscore names imported across parts:\n" + "\n".join(sorted(private))
