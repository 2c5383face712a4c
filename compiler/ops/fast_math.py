"""Elementwise math as plain arithmetic, so it vectorises on CPUs: libm's expf is a call per lane
(and, under the ARM cycle model, code outside the kernels' library, which the model does not
count)."""

from __future__ import annotations

import math


def fast_exp(x):
    """exp(x) for float32 x as plain arithmetic (range reduction by ln 2, degree-6 polynomial,
    exponent bits), so it vectorises where libm's expf would be one call per lane. Relative error
    ~2e-7; exactly 0 below -87 (masked scores). NaN stays NaN (as in numpy's softmax): the clamp
    below would make it -87, since TVM lowers max/min to compares, which a NaN fails."""
    from tvm.script import tirx as T

    xc = T.min(T.max(x, T.float32(-87.0)), T.float32(88.0))
    n = T.floor(xc * T.float32(1.4426950408889634) + T.float32(0.5))
    r = xc - n * T.float32(0.693359375) - n * T.float32(-2.12194440e-4)
    poly = T.float32(1.0 / 720)
    for coef in (1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0):
        poly = poly * r + T.float32(coef)
    two_n = T.reinterpret(T.shift_left(T.Cast("int32", n) + 127, 23), dtype="float32")
    return T.Select(x < T.float32(-87.0), T.float32(0), T.Select(T.isnan(x), x, poly * two_n))


def fast_sin_turns(r, quadrant):
    """sin(2 pi (r + quadrant / 4)) for float32 r in [-1/8, 1/8] turns and an int32 quadrant, as
    plain arithmetic (Taylor polynomials to x^9 / x^10 on |x| <= pi/4: truncation below 2e-9, so
    float32 rounding (~6e-8) is the error); cos(2 pi t) is fast_sin_turns(r, quadrant + 1). Give r
    and quadrant as buffer reads: each is used several times (no Let: MetaSchedule's FLOP
    estimate has no rule for it, so a kernel with one cannot be tuned)."""
    from tvm.script import tirx as T

    x = r * T.float32(2 * math.pi)
    x2 = x * x
    sin = T.float32(1.0 / 362880)
    for coef in (-1.0 / 5040, 1.0 / 120, -1.0 / 6, 1.0):
        sin = sin * x2 + T.float32(coef)
    sin = sin * x
    cos = T.float32(-1.0 / 3628800)
    for coef in (1.0 / 40320, -1.0 / 720, 1.0 / 24, -0.5, 1.0):
        cos = cos * x2 + T.float32(coef)
    turn = T.bitwise_and(quadrant, T.int32(3))
    return T.Select(turn == 0, sin, T.Select(turn == 1, cos, T.Select(turn == 2, -sin, -cos)))
