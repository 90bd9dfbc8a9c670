"""Run a chapter's check cell to its end: failed assertions are recorded, not raised.

At smoke counts the papers' claims cannot hold, so a check cell's assertions fail; if
the first failure stopped the cell, everything after it would never run, and a bug
there (a setting looked up by a profile name the dict lacks, say) would only surface on
a reader's GPU. :func:`record_failed_asserts` rewrites every ``assert`` statement of a
cell into an ``if`` that appends the failure to a list, so the smoke runs execute every
statement and fail on any exception other than a failed claim.
"""

from __future__ import annotations

import ast

FAILED = "_failed_checks"


class _AssertRecorder(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        message = node.msg or ast.Constant(ast.unparse(node.test))
        record = ast.Expr(
            ast.Call(
                func=ast.Attribute(
                    value=ast.Name(FAILED, ast.Load()), attr="append", ctx=ast.Load()
                ),
                args=[ast.Tuple([ast.Constant(node.lineno), message], ast.Load())],
                keywords=[],
            )
        )
        check = ast.If(test=ast.UnaryOp(ast.Not(), node.test), body=[record], orelse=[])
        return ast.copy_location(check, node)


def record_failed_asserts(source: str) -> str:
    """``source`` with each ``assert test, message`` recorded in ``_failed_checks``.

    The rewritten cell starts by emptying ``_failed_checks`` (a list of
    ``(line, message)``; ``message`` is the assertion's own, or its condition's source)
    and ends by printing how many assertions failed and why. Comments are dropped.

    Raises:
        SyntaxError: where ``source`` is not plain Python (IPython magics, say).
    """
    tree = _AssertRecorder().visit(ast.parse(source))
    body = ast.unparse(ast.fix_missing_locations(tree))
    return (
        f"{FAILED} = []\n{body}\n"
        f"print(f'{{len({FAILED})}} assertion(s) failed at smoke counts')\n"
        f"for _line, _message in {FAILED}:\n"
        "    print(f'  line {_line}: {_message}')\n"
    )
