"""The house's shape, measured from its own imports: modules, arrows (module → module it
imports, function-level imports included), floors (the longest import chain) and import
circles, for the modules and for units (a package counts as one unit, a flat module as one).

    python benchmarks/import_graph.py [ROOT] [--json benchmarks/results/import_graph.json]
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

PACKAGES = ("distill", "teachers", "students")


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] in PACKAGES:
            name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def arrows(found: dict[str, Path]) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in found:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def shape(graph: dict[str, set[str]], nodes: list[str]) -> dict:
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in nodes:
        if node not in index:
            connect(node)
    owner = {m: i for i, c in enumerate(components) for m in c}

    @lru_cache(None)
    def floor(i: int) -> int:
        below = [floor(owner[o]) for m in components[i] for o in graph[m] if owner[o] != i]
        return 1 + max(below, default=0)

    return {"nodes": len(nodes), "arrows": sum(len(graph[n]) for n in nodes),
            "floors": max(floor(i) for i in range(len(components))),
            "circles": sorted(sorted(c) for c in components if len(c) > 1)}


def unit_of(name: str, found: dict[str, Path]) -> str:
    """distill.culling.run → distill.culling (a package); distill.errors stays itself."""
    parts = name.split(".")
    if len(parts) > 2 or (len(parts) == 2 and found[name].name == "__init__.py"):
        return ".".join(parts[:2])
    return name if parts[0] == "distill" else parts[0]


def measure(root: Path) -> dict:
    found = modules(root)
    graph = arrows(found)
    units = defaultdict(set)
    for source, targets in list(graph.items()):
        for target in targets:
            a, b = unit_of(source, found), unit_of(target, found)
            if a != b and a != "distill" and b != "distill":
                units[a].add(b)
    names = sorted({unit_of(m, found) for m in found} - {"distill"})
    return {"modules": shape(graph, sorted(found)), "units": shape(units, names)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=Path(__file__).resolve().parents[1], type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.root)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
