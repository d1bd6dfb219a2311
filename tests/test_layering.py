"""Import directions between svdeploy's parts (docs/ARCHITECTURE.md, "Import rules").

Every module's imports are read with ``ast`` (module level and inside functions both), so a
lazy import breaks a rule as much as a top-level one. Each test lists all its violations with
file:line in one failure message.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "svdeploy"
# The core: what every part may import. The package itself holds only __version__.
CORE = {
    "svdeploy",
    "svdeploy.config",
    "svdeploy.errors",
    "svdeploy.fsutil",
    "svdeploy.manifest",
    "svdeploy.contract",
    "svdeploy.numerics",
    "svdeploy.cliutil",
}
FRAMEWORKS = ("mindspore", "mindspore_lite", "torch", "onnx", "onnxruntime", "openvino")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[Tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement of ``path``; a
    ``from X import name`` where X.name is a module counts as importing X.name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    # module level: statements of the body, also inside if/try at that level (not in defs,
    # nor under ``if TYPE_CHECKING:``, which never runs)
    stack: List[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for child in ast.iter_child_nodes(node):
                top_level.add(id(child))
                stack.append(child)
    for node in ast.walk(tree):
        at_top = id(node) in top_level
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, at_top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield (sub if sub in MODULES else source), node.lineno, at_top


IMPORTS = {m: list(_imports(m, p)) for m, p in MODULES.items()}


def _part(module: str) -> str:
    """svdeploy.runtime.pipeline → runtime; core modules → core."""
    if module in CORE:
        return "core"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "core"


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def _violations(part: str, allowed: Set[str]) -> List[str]:
    """Imports of svdeploy modules from modules of ``part`` into parts outside ``allowed``."""
    found = []
    for module, imports in IMPORTS.items():
        if not module.startswith("svdeploy.") or _part(module) != part:
            continue
        for target, line, _ in imports:
            if target.split(".")[0] == "svdeploy" and _part(target) not in allowed | {part}:
                found.append(f"{_where(module, line)} imports {target}")
    return found


def _check(found: List[str], rule: str) -> None:
    assert not found, f"{rule}; {len(found)} violation(s):\n  " + "\n  ".join(found)


def test_the_module_table_is_read():
    assert {
        "svdeploy.contract",
        "svdeploy.runtime.pipeline",
        "svdeploy.train.conditioning",
        "svdeploy.kernels.linear",
    } <= set(MODULES)
    # relative, absolute and function-level imports are all seen
    assert ("svdeploy.runtime.backends", True) in {
        (t, top) for t, _, top in IMPORTS["svdeploy.runtime.pipeline"]
    }
    assert ("svdeploy.numerics", True) in {
        (t, top) for t, _, top in IMPORTS["svdeploy.train.conditioning"]
    }
    assert ("svdeploy.fsutil", False) in {(t, top) for t, _, top in IMPORTS["svdeploy.demo"]}


def test_runtime_imports_only_core():
    _check(
        _violations("runtime", {"core"}),
        f"svdeploy.runtime may import only the core ({', '.join(sorted(CORE))}) and itself",
    )


def test_models_import_only_core_and_kernels():
    _check(
        _violations("models", {"core", "kernels"}),
        "svdeploy.models may import only the core and svdeploy.kernels",
    )


def test_kernels_import_nothing_of_svdeploy():
    _check(_violations("kernels", set()), "svdeploy.kernels imports nothing of svdeploy but itself")


def test_train_never_imports_runtime_export_serve_or_benchmarks():
    _check(
        _violations("train", {"core", "models", "kernels"}),
        "svdeploy.train never imports svdeploy.runtime, svdeploy.export, "
        "svdeploy.serve or svdeploy.benchmarks",
    )


def test_serve_uses_the_runtime_through_its_package_api_only():
    """svd-serve is the runtime behind HTTP: it takes what it needs from ``svdeploy.runtime``'s
    public names, never from the runtime's modules, nor from models, export or train."""
    found = _violations("serve", {"core", "runtime"})
    for module, imports in IMPORTS.items():
        if _part(module) == "serve":
            found += [
                f"{_where(module, line)} imports {target}"
                for target, line, _ in imports
                if target.startswith("svdeploy.runtime.")
            ]
    _check(found, "svdeploy.serve imports only the core and the svdeploy.runtime package")


def test_core_modules_import_only_core():
    found = []
    for module in sorted(CORE):
        for target, line, _ in IMPORTS[module]:
            if target.split(".")[0] == "svdeploy" and target not in CORE:
                found.append(f"{_where(module, line)} imports {target}")
    _check(found, "core modules import only core modules")


def test_contract_fsutil_and_numerics_import_no_framework():
    found = []
    for module in ("svdeploy.contract", "svdeploy.fsutil", "svdeploy.numerics"):
        for target, line, _ in IMPORTS[module]:
            if target.split(".")[0] in FRAMEWORKS:
                found.append(f"{_where(module, line)} imports {target}")
    _check(
        found,
        f"contract.py, fsutil.py and numerics.py import no framework ({', '.join(FRAMEWORKS)})",
    )


def _cycles() -> List[List[str]]:
    """Cycles among svdeploy modules through module-level imports (Tarjan's strongly connected
    components; a package's __init__ is a node of its own)."""
    graph = {
        m: sorted({t for t, _, top in imports if top and t in MODULES and t != m})
        for m, imports in IMPORTS.items()
    }
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_at_module_level():
    cycles = _cycles()
    _check(
        [" ↔ ".join(c) for c in cycles],
        "svdeploy modules form no import cycle through module-level imports",
    )


# ---------------------------------------------------------------------------------------------
# What the code cites exists in the repository
# ---------------------------------------------------------------------------------------------
def test_no_module_cites_design_md():
    """DESIGN.md is not in the repository; what the numerics comments rely on is written in
    docs/NUMERICS.md, which they cite instead."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in MODULES.values()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "DESIGN.md" in line
    ]
    _check(found, "no svdeploy module cites DESIGN.md (cite docs/NUMERICS.md)")
    assert (ROOT / "docs" / "NUMERICS.md").is_file()


# ---------------------------------------------------------------------------------------------
# Functions read top to bottom
# ---------------------------------------------------------------------------------------------
MAX_FUNCTION_LINES = 60


def _long_functions(limit: int) -> List[str]:
    """Every function or method of svdeploy/ longer than ``limit`` lines (from its ``def`` line
    to its last line; decorators not counted), as file:line name (length)."""
    found = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return sorted(found)


def test_no_function_is_longer_than_60_lines():
    _check(
        _long_functions(MAX_FUNCTION_LINES),
        f"no function in svdeploy/ is longer than {MAX_FUNCTION_LINES} lines (split it into "
        "steps that read top to bottom)",
    )
    assert _long_functions(20), "the function scan finds functions"
