"""The package's layering: every import points down, and no import cycle.

Every module of `motionmae` lives in a subpackage (or is a top-level module) with a
layer number. A module may import:
- any module of a subpackage on a lower layer;
- modules of its own subpackage (subpackages on the same layer never import each other);
and no import may close a cycle between modules. Imports inside functions count too.
The library never imports the `bench` package (benchmarks are not installed; the CLI's
`bench` command loads it by name from a source checkout). The README's Layout drawing
lists every module of `motionmae/` and `bench/`, with the layers of this table.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "motionmae"

LAYERS = {  # subpackage or top-level module -> layer; bottom to top (README "Layout" draws the same)
    "errors": -1,  # MotionMAEError and UsageError: below common, whose ListError is one
    "common": 0,  # lists, per-sample RNGs, video tallies
    "config": 1,  # typed config, presets
    "figures": 1,  # RGB images: building blocks, charts, overlays
    "motion": 2,  # flow, cuts, trajectories, HOG, targets, masks
    "io": 3,  # video files, the motion cache and prepare
    "data": 4,  # datasets, augmentation, synthetic data, shards
    "models": 4,  # ViT, checkpoints, interop
    "train": 5,  # pretrain, finetune, linear probe
    "evaluation": 6,  # multi-view test, what a pretrained model predicts
    "demo": 7,  # the demo end to end
    "cli": 8,  # the command line
    "__main__": 9,  # python -m motionmae
}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (packages by their __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def resolve(name: str, known: dict) -> str:
    """The module a dotted name imports: the longest prefix of it that is a module of the package."""
    while name not in known:
        name = name.rpartition(".")[0]
    return name


def imported(path: Path, known: dict) -> tuple[set[str], set[str]]:
    """(modules of the package the file imports, anywhere in it; other top-level packages it imports)."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; use absolute motionmae.* imports"
            names = [f"{node.module}.{alias.name}" for alias in node.names]  # `from pkg import module` or a name
        else:
            continue
        for name in names:
            if name.split(".")[0] == "motionmae":
                ours.add(resolve(name, known))
            else:
                others.add(name.split(".")[0])
    return ours - {"motionmae"}, others


def area(module: str) -> str:
    """The subpackage (or top-level module) a dotted module name belongs to."""
    parts = module.split(".")
    assert parts[0] == "motionmae" and len(parts) > 1, module
    return parts[1]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known)[0] for name, path in known.items()}


def test_every_module_has_a_layer():
    unplaced = sorted({area(m) for m in modules() if m != "motionmae"} - set(LAYERS))
    assert not unplaced, f"add these to LAYERS (and to the README's Layout drawing): {unplaced}"


def test_imports_point_down():
    wrong = []
    for module, targets in graph().items():
        if module == "motionmae":
            assert not targets, "motionmae/__init__.py imports nothing: `import motionmae` stays light"
            continue
        for target in sorted(targets):
            mine, theirs = area(module), area(target)
            if mine != theirs and LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{module} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS[theirs]})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_import_cycle():
    edges = graph()
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_library_never_imports_bench():
    known = modules()
    importing = [name for name, path in known.items() if "bench" in imported(path, known)[1]]
    assert not importing, f"these import the bench package, which is not installed: {importing}"


def drawing() -> dict[str, str]:
    """The README's Layout drawing: path of every entry -> the rest of its line (layer, description)."""
    block = (REPO / "README.md").read_text().split("### Layout\n", 1)[1].split("```\n", 2)[1]
    entries, folders = {}, []
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip())) // 2
        name, _, rest = line.strip().partition(" ")
        folders = folders[:depth] + [name]
        entries["".join(folders)] = rest.strip()
    return entries


def test_the_readme_draws_every_module_and_its_layer():
    drawn = drawing()
    files = {
        path.relative_to(REPO).as_posix()
        for folder in ("motionmae", "bench")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(files - set(drawn)) == [], "modules missing from the README's Layout drawing"
    assert sorted(p for p in drawn if p.endswith(".py") and p not in files) == [], "drawn modules that do not exist"
    for name, layer in LAYERS.items():
        path = f"motionmae/{name}" + ("/" if (PACKAGE / name).is_dir() else ".py")
        assert drawn[path].split()[0] == str(layer), f"README draws {path} on layer {drawn[path].split()[0]}"
