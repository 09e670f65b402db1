"""The stage contract, read from ``dvc.yaml`` and the code, and checked.

For every stage DVC resolves: the paths on its command line, its deps, outs and params. The checks
(:func:`problems`, run by tests/code/test_contract.py):
- every path on the command line is a dep or an out of the stage (or its checkpoint scratch), and
  every data dep and out lies on or under a path of the command line;
- every data dep is an output of another stage (or a folder of them), or a source file in git;
- every module the stage's command imports, transitively inside ``pipeline/``, is a dep.
:func:`table` renders the contract for docs/architecture.md (``python -m pipeline contract``).
"""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "pipeline"
#: Command-line options that name scratch space, not a dep or an output.
SCRATCH_OPTIONS = ("--checkpoints",)
#: Files of the package with no code of their own (a docstring and the CLI's start).
CODELESS = ("pipeline/__init__.py", "pipeline/__main__.py")


@dataclass(frozen=True)
class Stage:
    name: str                     # as DVC addresses it (train@pedestrian-mobilenetv2_100)
    command: str                  # the `python -m pipeline <command>` it runs
    options: dict[str, str]       # --option -> path on the command line
    code: tuple[str, ...]         # deps inside pipeline/
    data: tuple[str, ...]         # every other dep
    outs: tuple[str, ...]
    params: tuple[str, ...]


def _options(cmd: str) -> tuple[str, dict[str, str]]:
    words = shlex.split(cmd)
    if words[:3] != ["python", "-m", PACKAGE]:
        raise ValueError(f"stage command must start with `python -m {PACKAGE}`: {cmd!r}")
    opts = {w: v for w, v in zip(words[3:], words[4:]) if w.startswith("--") and not v.startswith("--")}
    return words[3], opts


def stages(root: Path) -> list[Stage]:
    """Every stage of ``root/dvc.yaml``, resolved by DVC (params interpolated, matrix expanded)."""
    from dvc.repo import Repo

    out = []
    with Repo(str(root)) as repo:
        for s in repo.index.stages:
            command, options = _options(s.cmd if isinstance(s.cmd, str) else " ".join(s.cmd))
            deps = [d for d in s.deps if not hasattr(d, "params")]
            params = [p for d in s.deps if hasattr(d, "params") for p in d.params]
            code = tuple(d.def_path for d in deps if d.def_path.startswith(PACKAGE + "/"))
            data = tuple(d.def_path for d in deps if not d.def_path.startswith(PACKAGE + "/"))
            out.append(Stage(s.name, command, options, code, data,
                             tuple(o.def_path for o in s.outs), tuple(params)))
    return out


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def module_file(root: Path, module: str) -> Path | None:
    """``pipeline.x.y`` -> its file under ``root`` (module or package), None if not ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(tree: ast.AST) -> set[str]:
    """Every ``pipeline.*`` module named by an import anywhere in ``tree`` (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pipeline import schema`
    return {n for n in names if n.split(".")[0] == PACKAGE}


def command_modules(root: Path, command: str) -> set[Path]:
    """Files a CLI command runs: cli.py's own imports, the command's, and theirs, transitively."""
    cli = root / PACKAGE / "cli.py"
    tree = ast.parse(cli.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    commands = {}
    for fn in functions.values():
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "command":
                name = dec.args[0].value if dec.args else fn.name
                commands[name] = fn
    if command not in commands:
        raise ValueError(f"`python -m {PACKAGE} {command}`: no such command in {cli}")
    # The command, plus the helpers every stage command goes through.
    body = [commands[command], *(functions[f] for f in ("stage", "load", "fail", "main") if f in functions)]
    todo = {m for fn in body for m in _imports(fn)} | \
        {m for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for m in _imports(n)}
    seen: set[Path] = {cli}
    while todo:
        f = module_file(root, todo.pop())
        if f is None or f in seen:
            continue
        seen.add(f)
        todo |= _imports(ast.parse(f.read_text()))
        for parent in f.relative_to(root).parents[:-1]:  # importing a.b.c runs a/__init__ and a/b/__init__
            init = root / parent / "__init__.py"
            if init.exists() and init not in seen:
                todo.add(".".join(parent.parts))
    return seen


def problems(root: Path) -> list[str]:
    """Every way ``dvc.yaml`` and the code disagree; empty when the contract holds."""
    found: list[str] = []
    all_stages = stages(root)
    produced = {o: s.name for s in all_stages for o in s.outs}
    tracked = set(_git_files(root))
    for s in all_stages:
        named = {k: v for k, v in s.options.items() if k not in SCRATCH_OPTIONS and ("/" in v or "." in v)}
        files = s.data + s.outs
        for opt, path in named.items():
            if not any(_under(f, path) or _under(path, f) for f in files):
                found.append(f"{s.name}: {opt} {path} is neither a dep nor an out of the stage")
        for f in files:
            if not any(_under(f, p) for p in named.values()):
                found.append(f"{s.name}: {f} is a dep/out but not on the command line")
        others = [o for o, owner in produced.items() if owner != s.name]
        for dep in s.data:
            # A dep may also be a folder of other stages' outputs (retrieve reads every member's predictions).
            if not (any(_under(dep, o) or _under(o, dep) for o in others) or dep in tracked):
                found.append(f"{s.name}: data dep {dep} is no other stage's output and not a file in git")
        covered = [root / c for c in s.code]
        for module in sorted(command_modules(root, s.command)):
            rel = module.relative_to(root).as_posix()
            if rel not in CODELESS and not any(_under(rel, c.relative_to(root).as_posix()) for c in covered):
                found.append(f"{s.name}: runs {rel}, which is not in its deps")
    return found


def _git_files(root: Path) -> list[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []


def table(root: Path) -> str:
    """The contract as a Markdown table: stage -> command-line files -> params (matrix folded)."""
    rows, seen = [], set()
    for s in stages(root):
        name = s.name.split("@")[0]
        if name in seen:
            continue
        seen.add(name)
        ins = [f"`{p}`" for p in s.data]
        outs = [f"`{p}`" for p in s.outs]
        rows.append(f"| `{name}` | `{s.command}` | {'<br>'.join(ins) or '-'} | {'<br>'.join(outs)} | "
                    f"{', '.join(f'`{p}`' for p in s.params) or '-'} |")
    head = ("| stage | command | reads | writes | params |\n"
            "|---|---|---|---|---|")
    note = "\n\n(`train` is shown for its first matrix item; the others differ only in domain and backbone.)"
    return head + "\n" + "\n".join(rows) + note


BEGIN, END = "<!-- contract:begin (python -m pipeline contract --write) -->", "<!-- contract:end -->"


def render_into(doc: Path, root: Path) -> str:
    """``doc``'s text with the table between the contract markers replaced by :func:`table`."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no contract markers ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(root)}\n{END}{tail}"
