"""The GLSL printer's expressions: buffer accesses (vector views of storage buffers where the
index is provably aligned), arithmetic with GLSL's truncating division made flooring where TIR
floors, casts, selects, lets and calls (math functions, bit operations, OpSDotKHR)."""

from __future__ import annotations

import math
import struct

from tvm import tirx

from compiler.backends.vulkan.glsl_types import (BINARY, CALL_BINARY, MATH, SDOT4, CodegenError, dtype_of, is_zero,
                                                 split_lanes)


class ExprPrinter:
    """The expression half of the GLSL printer (glsl._Printer)."""

    def access(self, buf, indices, dtype: str) -> str:
        if len(indices) != 1:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} is accessed with {len(indices)} indices (not flattened)")
        if buf not in self.buffers:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} is not declared")
        prefix, elem, offset = self.buffers[buf]
        if elem != dtype:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} of {elem} is accessed as {dtype}")
        index = indices[0] if is_zero(offset) else offset + indices[0]
        return f"{prefix}[{self.expr(index)}]"

    def expr(self, e) -> str:
        kind = type(e).__name__
        if kind in BINARY:
            return f"({self.expr(e.a)} {BINARY[kind]} {self.expr(e.b)})"
        method = getattr(self, "expr_" + kind, None)
        if method is None:
            raise CodegenError(f"{self.func_name}: expression {kind} ({e}) is not supported by the GLSL printer")
        return method(e)

    def expr_Var(self, e):
        if e not in self.names:
            raise CodegenError(f"{self.func_name}: variable {e.name} is used before it is defined")
        return self.names[e]

    def expr_IntImm(self, e):
        dtype = dtype_of(e)
        value = int(e.value)
        if dtype == "int32":
            return str(value) if value >= 0 else f"({value})" if value > -2**31 else "(-2147483647 - 1)"
        if dtype == "uint32":
            return f"{value}u"
        if dtype == "bool":
            return "true" if value else "false"
        return f"{self.type(dtype)}({value})"

    def expr_FloatImm(self, e):
        dtype = dtype_of(e)
        value = float(e.value)
        if math.isfinite(value):
            text = repr(value)
            if "e" not in text and "." not in text:
                text += ".0"
            literal = text if dtype == "float32" else f"{self.type(dtype)}({text})"
            return f"({literal})" if value < 0 else literal
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        literal = f"uintBitsToFloat({bits}u)"
        return literal if dtype == "float32" else f"{self.type(dtype)}({literal})"

    def _nonneg(self, *exprs) -> bool:
        return all(self.analyzer.can_prove(x >= 0) for x in exprs)

    def expr_Div(self, e):  # truncating for ints, as GLSL's / is
        return f"({self.expr(e.a)} / {self.expr(e.b)})"

    def expr_Mod(self, e):
        if self._int(e) and not self._nonneg(e.a, e.b):
            a, b = self.expr(e.a), self.expr(e.b)
            return f"({a} - ({a} / {b}) * {b})"
        return f"({self.expr(e.a)} % {self.expr(e.b)})" if self._int(e) else f"mod({self.expr(e.a)}, {self.expr(e.b)})"

    def expr_FloorDiv(self, e):
        if not self._int(e):
            return f"floor({self.expr(e.a)} / {self.expr(e.b)})"
        if self._nonneg(e.a) and self.analyzer.can_prove(e.b > 0):
            return f"({self.expr(e.a)} / {self.expr(e.b)})"
        return f"ekc_floordiv({self.expr(e.a)}, {self.expr(e.b)})"

    def expr_FloorMod(self, e):
        if not self._int(e):
            a, b = self.expr(e.a), self.expr(e.b)
            return f"({a} - {b} * floor({a} / {b}))"
        if self._nonneg(e.a) and self.analyzer.can_prove(e.b > 0):
            return f"({self.expr(e.a)} % {self.expr(e.b)})"
        return f"ekc_floormod({self.expr(e.a)}, {self.expr(e.b)})"

    def _int(self, e) -> bool:
        dtype = dtype_of(e)
        if dtype.startswith(("int", "uint")) and dtype != "int32" and type(e).__name__ in ("FloorDiv", "FloorMod"):
            raise CodegenError(f"{self.func_name}: floor division on {dtype}")
        return dtype.startswith(("int", "uint"))

    def expr_Min(self, e):
        return f"min({self.expr(e.a)}, {self.expr(e.b)})"

    def expr_Max(self, e):
        return f"max({self.expr(e.a)}, {self.expr(e.b)})"

    def expr_Not(self, e):
        return f"(!{self.expr(e.a)})"

    def expr_BitwiseNot(self, e):
        return f"(~{self.expr(e.a)})"

    def expr_Select(self, e):
        return f"({self.expr(e.condition)} ? {self.expr(e.true_value)} : {self.expr(e.false_value)})"

    def expr_Cast(self, e):
        return f"{self.type(dtype_of(e))}({self.expr(e.value)})"

    def _vector_access(self, buf, ramp, dtype: str):
        """(array expression, element offset, lane indices) of a vector access."""
        scalar, _ = split_lanes(dtype)
        if buf not in self.buffers:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} is not declared")
        prefix, elem, offset = self.buffers[buf]
        if elem != scalar:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} of {elem} is accessed as {dtype}")
        base = self.expr(offset + ramp.base)
        unit = isinstance(ramp.stride, tirx.IntImm) and ramp.stride.value == 1
        step = "" if unit else f" * {self.expr(ramp.stride)}"
        lanes = [f"{base} + {lane}{step}" if lane else base for lane in range(int(ramp.lanes))]
        return prefix, offset, lanes

    def expr_BufferLoad(self, e):
        return self.access(e.buffer, e.indices, dtype_of(e))

    def _vector_load(self, buf, ramp, dtype: str) -> str:
        """A unit-stride read of a storage buffer at a multiple of the lane count goes through a
        view of the same binding as an array of vectors: one vector load (Mali's vec4 access).
        Other vector reads are assembled lane by lane."""
        prefix, offset, lanes = self._vector_access(buf, ramp, dtype)
        count, base = len(lanes), offset + ramp.base
        unit = isinstance(ramp.stride, tirx.IntImm) and ramp.stride.value == 1
        if prefix in self.parameters and unit and self.analyzer.can_prove(tirx.floormod(base, count) == 0):
            vtype = self.type(dtype)
            if self.vector_views.setdefault(prefix, vtype) != vtype:
                raise CodegenError(f"{self.func_name}: {buf.name} is read as two vector types")
            return f"{prefix.replace('_buf.data', '_vec.data')}[({lanes[0]}) / {count}]"
        return f"{self.type(dtype)}({', '.join(f'{prefix}[{at}]' for at in lanes)})"

    def expr_TensorLoad(self, e):  # TVM 0.27's load node: `source` is the buffer
        index = e.indices[0] if len(e.indices) == 1 else None
        if isinstance(index, tirx.Ramp):
            return self._vector_load(e.source, index, dtype_of(e))
        return self.access(e.source, e.indices, dtype_of(e))

    def expr_Let(self, e):
        # Declared just before the statement being printed (its text is built before it is emitted).
        self.emit(f"{self.type(dtype_of(e.var))} {self.name(e.var)} = {self.expr(e.value)};")
        return self.expr(e.body)

    def expr_Call(self, e):
        op = e.op.name
        args = e.args
        if op == "tirx.call_pure_extern" and str(args[0].value) == "ekc_sdot4":  # 4 int8 x 4 int8 -> int32
            self.extensions.add("GL_EXT_spirv_intrinsics")
            self.extensions.add("GL_EXT_shader_explicit_arithmetic_types_int8")
            self.features |= {"shaderIntegerDotProduct", "shaderInt8"}
            self.helpers.add(SDOT4)
            a, b = (", ".join(self.expr(v) for v in args[i:i + 4]) for i in (1, 5))
            return f"ekc_sdot4(pack32(i8vec4({a})), pack32(i8vec4({b})))"
        if op == "tirx.call_pure_extern":  # a C math function name (expf, sqrtf, ...)
            extern = str(args[0].value).lstrip("_")
            base = extern[:-1] if extern.endswith("f") and extern[:-1] in MATH else extern
            if base not in MATH:
                raise CodegenError(f"{self.func_name}: extern function {extern} has no GLSL counterpart")
            return f"{MATH[base]}({', '.join(self.expr(a) for a in args[1:])})"
        if op.split(".", 1)[-1] == "if_then_else":
            return f"({self.expr(args[0])} ? {self.expr(args[1])} : {self.expr(args[2])})"
        if op in CALL_BINARY:
            return f"({self.expr(args[0])} {CALL_BINARY[op]} {self.expr(args[1])})"
        if op == "tirx.bitwise_not":
            return f"(~{self.expr(args[0])})"
        if op == "tirx.likely":
            return self.expr(args[0])
        if op == "tirx.sigmoid":
            x = self.expr(args[0])
            return f"(1.0 / (1.0 + exp(-{x})))"
        if op == "tirx.reinterpret":
            src, dst = dtype_of(args[0]), dtype_of(e)
            casts = {("float32", "int32"): "floatBitsToInt", ("float32", "uint32"): "floatBitsToUint",
                     ("int32", "float32"): "intBitsToFloat", ("uint32", "float32"): "uintBitsToFloat"}
            if (src, dst) not in casts:
                raise CodegenError(f"{self.func_name}: reinterpret {src} as {dst}")
            return f"{casts[src, dst]}({self.expr(args[0])})"
        short = op.split(".", 1)[1] if "." in op else op
        if short in MATH:
            return f"{MATH[short]}({', '.join(self.expr(a) for a in args)})"
        raise CodegenError(f"{self.func_name}: call to {op} is not supported by the GLSL printer")
