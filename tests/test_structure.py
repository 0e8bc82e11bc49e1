"""Dependencies point one way (entrypoint -> stages -> backends): checked on the imports themselves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_stage_imports_the_sweep_module():
    stages = sorted((ROOT / "crafter_exp" / "stages").glob("*.py"))
    assert stages
    offenders = {p.name: sorted(m for m in _imported_modules(p) if m.startswith("crafter_exp.sweep")) for p in stages}
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_compare_and_pipeline_load_without_sweep():
    code = (
        "import sys, crafter_exp.stages.compare, crafter_exp.stages.pipeline; print('crafter_exp.sweep' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_no_config_parameter_is_untyped():
    """Stages and backends take typed configs (Config or the section they use), never `cfg: Any` (issue #13 §5)."""
    untyped = []
    for path in sorted((ROOT / "crafter_exp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                if arg.arg.endswith("cfg") and (arg.annotation is None or ast.unparse(arg.annotation) == "Any"):
                    untyped.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({arg.arg})")
    assert untyped == []
