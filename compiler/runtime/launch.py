"""The launch-expression language of Vulkan manifests: how a kernel's host-side integers (grid
sizes, push constants, temporary sizes) are written as JSON by the build (compiler/backends/vulkan/
spirv.py encodes TVM's expressions with these tables) and evaluated by the loader (evaluate)."""

from __future__ import annotations

# TVM expression node -> its JSON operator. "/t" and "%t" truncate (TIR's Div, Mod); "//" and "%"
# floor; ["?", c, a, b] selects.
EXPR_OPS = {"Add": "+", "Sub": "-", "Mul": "*", "FloorDiv": "//", "FloorMod": "%", "Div": "/t",
            "Mod": "%t", "Min": "min", "Max": "max", "LT": "<", "LE": "<=", "GT": ">", "GE": ">=",
            "EQ": "==", "NE": "!=", "RShift": ">>", "LShift": "<<", "BitwiseAnd": "&"}
CALL_OPS = {"tirx.shift_right": ">>", "tirx.shift_left": "<<", "tirx.bitwise_and": "&"}


def evaluate(expr, env: dict[str, int]) -> int:
    """A host expression from the manifest: ints, names, [op, a, b] (floor // and %, "/t" and "%t"
    truncating, "?" select)."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        return env[expr]
    op, *args = expr
    if op == "?":
        return evaluate(args[1], env) if evaluate(args[0], env) else evaluate(args[2], env)
    a, b = (evaluate(x, env) for x in args)
    if op == "/t":
        return int(a / b) if b else 0
    if op == "%t":
        return a - int(a / b) * b
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b,
            "%": lambda: a % b, "min": lambda: min(a, b), "max": lambda: max(a, b),
            "<": lambda: int(a < b), "<=": lambda: int(a <= b), ">": lambda: int(a > b),
            ">=": lambda: int(a >= b), "==": lambda: int(a == b), "!=": lambda: int(a != b),
            ">>": lambda: a >> b, "<<": lambda: a << b, "&": lambda: a & b}[op]()
