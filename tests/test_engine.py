"""The engine seam: one error base, one method plan, one place that assembles an edit, and
dependencies that point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lib_mrgd
from lib_mrgd.errors import ArgumentError, ImageError, InversionError, ModelError, MrgdError, SpecError
from lib_mrgd.method import METHODS, MethodPlan
from lib_mrgd.spec import Options

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lib_mrgd"


def test_every_refusal_is_an_mrgd_error_with_its_path():
    for error in (SpecError("regions[0].box", "x"), ImageError("x"), InversionError("x"), ModelError("x", "m"),
                  ArgumentError("--limit", "x")):
        assert isinstance(error, MrgdError) and error.reason == "x"
        assert str(error) == f"{error.path}: x"
    assert str(ModelError("no such model")) == "no such model"  # no path: the reason alone
    assert isinstance(SpecError("a", "b"), ValueError)  # callers that caught ValueError still do


def test_causes_are_chained(tmp_path):
    from lib_mrgd.images import read_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ImageError) as err:
        read_image(broken)
    assert err.value.__cause__ is not None
    with pytest.raises(SpecError) as err:
        lib_mrgd.load_spec(str(tmp_path / "missing.json"))
    assert isinstance(err.value.__cause__, FileNotFoundError)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError) as err:
        lib_mrgd.load_pipeline(str(bad), device="cpu")
    assert err.value.__cause__ is not None


def test_command_line_argument_errors_are_not_spec_errors():
    from lib_mrgd.evaluation import parse_methods, parse_shard

    for call in (lambda: parse_methods("nope"), lambda: parse_shard("3/2")):
        with pytest.raises(ArgumentError) as err:
            call()
        assert not isinstance(err.value, SpecError)


@pytest.mark.parametrize("method, options, has_regions, expected", [
    ("multidiffusion", {}, True, dict(total_region=False, attention=False, keywords=False, guidance=False, report=False)),
    ("p2p", {}, True, dict(total_region=False, attention=True, keywords=False, guidance=False, report=False)),
    ("mrgd", {}, True, dict(total_region=True, attention=True, keywords=True, guidance=True, report=True)),
    ("mrgd", {}, False, dict(total_region=True, attention=True, keywords=True, guidance=False, report=True)),
    ("mrgd", {"total_region": False}, True, dict(total_region=False, keywords=False, guidance=True)),
    ("mrgd", {"keyword_selection": False, "kssa": False}, True, dict(total_region=True, keywords=False)),
    ("mrgd", {"keyword_selection": False}, True, dict(keywords=True)),  # KSSA alone still reads r_total
    ("mrgd", {"guidance": False}, True, dict(guidance=False, attention=True)),
])
def test_method_plan(method, options, has_regions, expected):
    plan = MethodPlan.of(method, Options.from_dict(options), has_regions)
    assert {k: getattr(plan, k) for k in expected} == expected


def test_an_unknown_method_is_refused():
    with pytest.raises(SpecError, match="^method: unknown method 'sdedit'"):
        MethodPlan.of("sdedit", Options(), True)
    assert METHODS == ("multidiffusion", "p2p", "mrgd")


def _imports(path: Path) -> set[str]:
    """Every lib_mrgd module ``path`` imports, at module level or inside a function."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            names = [name] + ([f"{name}.{a.name}" for a in node.names] if not node.module or node.level else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("lib_mrgd"))
    return found


def test_no_import_cycle_in_the_package():
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in files and i != m and i != "lib_mrgd"} for m, p in files.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_webui_adapter_loads_no_standalone_module():
    code = (f"import sys; sys.path[:0] = [{str(ROOT / 'tests' / 'standin')!r}, {str(ROOT)!r}]\n"
            "import lib_mrgd.webui.script, lib_mrgd.webui.runtime\n"
            "print(sorted(m for m in sys.modules if m.startswith('lib_mrgd')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out.strip().splitlines()[-1]))
    standalone = {"lib_mrgd.backends.loaders", "lib_mrgd.backends.pipeline", "lib_mrgd.runner", "lib_mrgd.cli",
                  "lib_mrgd.evaluation", "lib_mrgd.metrics", "lib_mrgd.backends.tiny"}
    assert "lib_mrgd.engine" in loaded and not loaded & standalone


def test_an_edit_is_assembled_only_by_the_engine():
    """Fusion, attention control and guidance are constructed in engine.py and nowhere else."""
    builders = ("RegionFusion(", "build_controller(", "Guidance(")
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py")]:
        if path.name in ("engine.py",):
            continue
        text = path.read_text()
        for builder in builders:
            calls = [line for line in text.splitlines()
                     if builder in line and not line.lstrip().startswith(("def ", "class ", "#", '"', "'"))]
            assert not calls, f"{path.relative_to(ROOT)} builds {builder[:-1]} itself: {calls}"
