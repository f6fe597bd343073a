"""Imports run downward (cli → engine, transfer → evaluation → inference, data → models ...):
read from the source with ``ast``, lazy imports inside functions included, so an upward import
cannot hide in a function body."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vgglocal"


def imports_of(path: Path) -> set[str]:
    """The ``vgglocal`` modules ``path`` imports, anywhere in the file (``from vgglocal.data
    import voc`` names ``vgglocal.data.voc`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vgglocal"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vgglocal"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if module_path(f"{node.module}.{a.name}"))
    return found


def module_path(name: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def test_the_parser_sees_lazy_imports():
    assert "vgglocal.transfer.features" in MODULES["vgglocal.cli.transfer"]  # imported inside the command


def test_only_the_cli_imports_transfer():
    users = {m for m, imps in MODULES.items() if layer(m) not in ("cli", "transfer") and any(layer(i) == "transfer" for i in imps)}
    assert users == set()


def test_transfer_imports_no_layer_above_or_beside_it():
    above = {(m, i) for m, imps in MODULES.items() if layer(m) == "transfer" for i in imps if layer(i) in ("cli", "engine")}
    assert above == set()


def test_data_imports_nothing_above_it():
    above = {(m, i) for m, imps in MODULES.items() if layer(m) == "data"
             for i in imps if layer(i) in ("cli", "engine", "transfer", "evaluation", "inference")}
    assert above == set()


def test_no_import_cycle_among_the_data_readers():
    graph = {m: {i for i in imps if layer(i) == "data" and i in MODULES and i != "vgglocal.data"}
             for m, imps in MODULES.items() if layer(m) == "data"}
    state: dict[str, int] = {}

    def cycle_from(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*stack, m, n]
            if n not in state and (found := cycle_from(n, [*stack, m])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert cycle_from(m, []) is None


def test_no_reader_imports_a_private_name_of_another():
    private = set()
    for path in sorted((PACKAGE / "data").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vgglocal"):
                private.update((path.name, a.name) for a in node.names if a.name.startswith("_"))
    assert private == set()
