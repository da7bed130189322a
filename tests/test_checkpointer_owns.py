"""The Checkpointer runs its own work (issue 16): no module under src/fito other than fito/ckpt/checkpointer.py
reads or writes a private member (`_name`, not a dunder) of a Checkpointer, and none assigns any attribute of
one (`ck.storage = ...`: give the storage to the constructor instead).

What it checks, read with `ast` (nothing imported): an attribute access whose object is a name bound to a
Checkpointer by this module's own text, i.e.
  - the names fito uses for one: `ck`, `ckpt`, `checkpointer` (also as `self.ck`, `self._ckpt`, ...),
  - a parameter annotated `Checkpointer` (or "Checkpointer"),
  - a name or `self.x` assigned from a `Checkpointer(...)` call.
What it does not see: a Checkpointer reached through another name (a list element, a value returned by a
function, `getattr(ck, "_x")`). Honest about that, it is a guard against the pattern the issue found, not a
proof."""
from __future__ import annotations

import ast
from pathlib import Path

import fito

SRC = Path(fito.__file__).parent
OWNER = SRC / "ckpt" / "checkpointer.py"
CONVENTIONAL = {"ck", "ckpt", "checkpointer"}


def _is_checkpointer_type(annotation: ast.expr | None) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.strip() == "Checkpointer"
    return isinstance(annotation, ast.Name) and annotation.id == "Checkpointer" or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Checkpointer")


def _is_checkpointer_call(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Call) and _is_checkpointer_type(value.func)


def _bound_names(tree: ast.AST) -> set[str]:
    """The names (and `self.<name>` attribute names) this module binds to a Checkpointer."""
    names = set(CONVENTIONAL) | {"_" + n for n in CONVENTIONAL}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and _is_checkpointer_type(node.annotation):
            names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and (_is_checkpointer_type(node.annotation) or _is_checkpointer_call(node.value)):
            target = node.target
            names.add(target.id if isinstance(target, ast.Name) else getattr(target, "attr", ""))
        elif isinstance(node, ast.Assign) and _is_checkpointer_call(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:  # `with Checkpointer(root) as ck2:`
                if _is_checkpointer_call(item.context_expr) and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    names.discard("")
    return names


def _is_checkpointer(node: ast.expr, names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in names
    # `self.ck`, `self._checkpointer`, `trainer.checkpointer`: an attribute named like one
    return isinstance(node, ast.Attribute) and node.attr in names


def violations(path: Path, base: Path = SRC.parent) -> list[str]:
    """Each access of `path` that breaks the rule, in line order, named `file:line: reads|writes expr`."""
    tree = ast.parse(path.read_text(), str(path))
    names = _bound_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_checkpointer(node.value, names):
            continue
        private = node.attr.startswith("_") and not (node.attr.startswith("__") and node.attr.endswith("__"))
        written = isinstance(node.ctx, (ast.Store, ast.Del))
        if private or written:
            what = "writes" if written else "reads"
            found.append((node.lineno, f"{path.relative_to(base)}:{node.lineno}: {what} {ast.unparse(node)}"))
    return [text for _, text in sorted(found)]


def test_no_module_but_the_checkpointer_touches_its_private_members() -> None:
    found = [v for path in sorted(SRC.rglob("*.py")) if path != OWNER for v in violations(path)]
    assert not found, ("modules outside fito/ckpt/checkpointer.py reach into a Checkpointer (make it a method of "
                       "the Checkpointer, pass the piece as an argument, or give it to the constructor):\n"
                       + "\n".join(found))


def test_the_check_sees_the_patterns_it_names(tmp_path: Path) -> None:
    """The checker itself: each pattern it claims to catch is caught, and public reads are not flagged."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(ck, other: 'Checkpointer', c3):\n"
        "    ck._take_fence()\n"          # conventional name, private read
        "    other._fence_error = None\n"  # annotated parameter, private write
        "    ck.storage = object()\n"      # any write
        "    ck.save(1, {})\n"             # public read: fine
        "    c3._x\n"                      # a name not bound to a Checkpointer: not seen
        "class A:\n"
        "    def __init__(self, root):\n"
        "        self.saver = Checkpointer(root)\n"
        "        self.saver._staging\n"     # assigned from the constructor
        "        with Checkpointer(root) as c2:\n"
        "            c2._inflight\n"
        "            c2.__class__\n")       # dunder: fine
    found = violations(sample, tmp_path)
    assert [line.split(": ", 1)[1] for line in found] == [
        "reads ck._take_fence", "writes other._fence_error", "writes ck.storage", "reads self.saver._staging",
        "reads c2._inflight"], found

