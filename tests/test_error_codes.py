"""README's error table and the API's error codes match, both ways (issue 15, item 5).

The code side is read from the source with ``ast``: a class's ``code = "..."`` (with its ``status``, or the
one it inherits), ``code="..."`` given to an error class, and the ``(status, "code", ...)`` of the calls and
tables that build error responses (``ApiError``, ``Refusal``, ``error_response``, ...). The README side is
the table under "**Errors**": each row's status and the backticked codes in it, leaving out what is in
parentheses (examples and settings).
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_SOURCES = ("deployments", "engines", "graphs", "realtime_avatar")  # signaling/ documents its own
CODE = re.compile(r"[a-z][a-z_]*[a-z]")
# Codes the HTTP API cannot answer with, and why (README's table is the API's).
NOT_HTTP = {
    "image_not_found": "a portrait given as a path: the CLI (the API takes bytes)",
    "bad_output": "the CLI's output path",
    "bad_source": "`avatar models fetch --from`",
    "persona_not_found": "the persona file, read when the conversation deployment starts",
    "invalid_asset_id": "an id that cannot be one of ours reads as not found (404 voice/avatar_not_found)",
}


def _is_status(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, int) and 400 <= node.value <= 599


def _is_code(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(CODE.fullmatch(node.value))


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def code_errors() -> dict[str, set[int | None]]:
    """Every error code the API can answer with, and the statuses it comes with (None: set elsewhere)."""
    trees = [ast.parse(path.read_text(), str(path))
             for folder in API_SOURCES for path in sorted((ROOT / folder).rglob("*.py"))]
    classes: dict[str, tuple[list[str], str | None, int | None]] = {}  # name -> (bases, code, status)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found: dict[str, ast.AST] = {}
                for item in node.body:
                    if isinstance(item, ast.Assign) and len(item.targets) == 1:
                        found[_name(item.targets[0])] = item.value
                code = found.get("code")
                status = found.get("status")
                classes[node.name] = ([_name(b) for b in node.bases],
                                      code.value if code is not None and _is_code(code) else None,
                                      status.value if status is not None and _is_status(status) else None)

    def status_of(name: str) -> int | None:
        bases, _, status = classes.get(name, ([], None, None))
        if status is not None:
            return status
        return next((s for s in map(status_of, bases) if s is not None), None)

    errors: dict[str, set[int | None]] = {}

    def add(code: str, status: int | None) -> None:
        errors.setdefault(code, set()).add(status)

    for name, (_, code, _) in classes.items():
        if code is not None:
            add(code, status_of(name))
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "code" and _is_code(keyword.value):
                        add(keyword.value.value, status_of(_name(node.func)))
                values = node.args
                for first, second in itertools.pairwise(values):
                    if _is_status(first) and _is_code(second):
                        add(second.value, first.value)
                if _name(node.func) == "get" and isinstance(node.func, ast.Attribute) and isinstance(
                        node.func.value, ast.Dict) and len(values) == 2 and _is_code(values[1]):
                    add(values[1].value, None)  # a table's default
            elif isinstance(node, ast.Tuple) and len(node.elts) >= 2:
                if _is_status(node.elts[0]) and _is_code(node.elts[1]):
                    add(node.elts[1].value, node.elts[0].value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if key is not None and _is_status(key) and _is_code(value):
                        add(value.value, key.value)
    return errors


def _without_parentheses(text: str) -> str:
    while (stripped := re.sub(r"\([^()]*\)", "", text)) != text:
        text = stripped
    return text


def readme_errors() -> dict[str, set[int]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("**Errors** are JSON"):].split("\n\n", 2)[1]
    errors: dict[str, set[int]] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        status = int(re.match(r"\d{3}", cells[0]).group())  # type: ignore[union-attr]
        for code in re.findall(r"`([^`]+)`", _without_parentheses(cells[1])):
            if CODE.fullmatch(code):
                errors.setdefault(code, set()).add(status)
    return errors


def test_readme_lists_every_error_code_and_only_those():
    documented = readme_errors()
    answered = {code: s for code, s in code_errors().items() if code not in NOT_HTTP}
    assert not set(NOT_HTTP) & set(documented), "README lists a code the API cannot answer with"
    assert sorted(set(answered) - set(documented)) == [], "codes the API answers but README does not list"
    assert sorted(set(documented) - set(answered)) == [], "codes README lists but the API never answers"


def test_readme_gives_each_code_its_status():
    documented = readme_errors()
    wrong = {code: (sorted(documented[code]), sorted(s for s in statuses if s is not None))
             for code, statuses in code_errors().items()
             if code in documented and not {s for s in statuses if s is not None} <= documented[code]}
    assert not wrong, wrong
