"""The package layers: which distdiff package may import which, and where the heavy libraries live.

Every import statement of every module counts, at module level or inside a function (a lazy import
is still an edge). The table is the one in the README's layout section.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distdiff"

# What each part of distdiff may import besides itself ("*": any part of the library).
LIBRARY = {"launchers", "train", "eval", "data", "tasks", "models", "diffusion", "losses", "nn", "config", "images",
           "console", "text", "provenance"}
ALLOWED = {
    "cli": LIBRARY | {"trilemma", "make_shards", "segment", "sample"},  # the command line and the entry modules it runs
    "trilemma": LIBRARY,
    "make_shards": LIBRARY,
    "segment": LIBRARY,
    "sample": LIBRARY,
    "launchers": {"train", "eval", "data", "tasks", "models", "diffusion", "config", "nn", "losses", "images",
                  "console", "distdiff", "text"},
    "train": {"tasks", "data", "models", "diffusion", "losses", "config", "nn", "images", "console", "text"},
    "eval": {"tasks", "data", "models", "diffusion", "config", "nn", "images", "console", "text"},
    "tasks": {"models", "diffusion", "losses", "nn", "config", "text"},
    "data": {"config", "text"},
    "models": {"nn"},
    "diffusion": {"console"},  # progress bars of the samplers (tqdm, imported on use)
    "losses": set(),
    "nn": set(),
    "config": set(),
    "images": set(),
    "console": set(),
    "text": set(),  # the caption tokenizer (torch only)
    "provenance": set(),  # host, code and time of a measured run (torch and the standard library)
    "distdiff": set(),  # the package's own __init__
    # Scaffolding: benchmarks and test servers may use anything; nothing in the library uses them.
    "bench": LIBRARY | {"testing"},
    "testing": LIBRARY,
}
# Third-party libraries confined to one place (module path prefixes inside distdiff/).
CONFINED = {
    "deepspeed": ("train/deepspeed_engines.py", "bench/"),
    "ray": ("launchers/", "train/ray_context.py", "bench/"),
    "webdataset": ("data/",),
    "boto3": ("data/", "testing/"),
    "botocore": ("data/", "testing/"),
}


def _part(path: Path) -> str:
    """The layer a module belongs to: its subpackage, or its own name for a top-level module."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0] if relative.parts[0] != "__init__" else "distdiff"


def _imports(path: Path):
    """(imported module, line) of every absolute import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_in_the_table():
    assert {_part(path) for path in _modules()} <= set(ALLOWED), "a new package needs its row in ALLOWED"


def test_imports_follow_the_layers():
    wrong = []
    for path in _modules():
        part = _part(path)
        for module, line in _imports(path):
            names = module.split(".")
            if names[0] != "distdiff":
                continue
            target = names[1] if len(names) > 1 else "distdiff"
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {part} imports {module}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_heavy_libraries_stay_where_they_belong(library):
    wrong = []
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        for module, line in _imports(path):
            if module.split(".")[0] == library and not relative.startswith(CONFINED[library]):
                wrong.append(f"distdiff/{relative}:{line}: imports {module}")
    assert not wrong, f"{library} outside {CONFINED[library]}:\n" + "\n".join(wrong)


def test_the_table_catches_a_wrong_edge(tmp_path, monkeypatch):
    """The check itself: a models module that imports the data package is reported."""
    fake = tmp_path / "distdiff"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text("def f():\n    from distdiff.data import storage\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="models imports distdiff.data"):
        test_imports_follow_the_layers()
