"""One lowered TVM device kernel (a PrimFunc after TVM's GPU lowering) -> a GLSL compute shader.

TVM 0.27's wheel has no SPIR-V backend. Its GPU lowering is complete by the time a device
function exists (threads bound, shared memory planned, barriers inserted, cross-thread reductions
turned into shared-memory trees), so what is left is a printer: statements and expressions to GLSL
450 with the Vulkan extensions for 8/16-bit types. glslang turns the text into SPIR-V.

Conventions of the generated shader (the loader's dispatcher relies on them):
- every pointer parameter is a storage buffer at `set = 0, binding = i` (i = its position among the
  pointer parameters);
- the scalar parameters are push constants, 4 bytes each, in parameter order;
- the workgroup size is the constant extents of threadIdx.x/y/z;
- a kernel using only blockIdx.x may be launched folded into rows (see `fold_x`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import tvm
import tvm.sym
import tvm_ffi
from tvm import tirx

# TVM dtype -> GLSL type, and the extension it needs.
_SCALARS = {
    "float32": ("float", None),
    "float16": ("float16_t", "GL_EXT_shader_explicit_arithmetic_types_float16"),
    "int32": ("int", None),
    "uint32": ("uint", None),
    "int8": ("int8_t", "GL_EXT_shader_explicit_arithmetic_types_int8"),
    "uint8": ("uint8_t", "GL_EXT_shader_explicit_arithmetic_types_int8"),
    "int16": ("int16_t", "GL_EXT_shader_explicit_arithmetic_types_int16"),
    "uint16": ("uint16_t", "GL_EXT_shader_explicit_arithmetic_types_int16"),
    "bool": ("bool", None),
}
_STORAGE_EXT = {8: "GL_EXT_shader_8bit_storage", 16: "GL_EXT_shader_16bit_storage"}
_THREADS = {"blockIdx": "gl_WorkGroupID", "threadIdx": "gl_LocalInvocationID"}
_BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=",
           "GT": ">", "GE": ">=", "And": "&&", "Or": "||", "BitwiseAnd": "&", "BitwiseOr": "|",
           "BitwiseXor": "^", "LShift": "<<", "RShift": ">>"}
_CALL_BINARY = {"tirx.shift_right": ">>", "tirx.shift_left": "<<", "tirx.bitwise_and": "&",
                "tirx.bitwise_or": "|", "tirx.bitwise_xor": "^"}
_MATH = {"exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "sqrt": "sqrt", "rsqrt": "inversesqrt",
         "tanh": "tanh", "fabs": "abs", "floor": "floor", "ceil": "ceil", "round": "roundEven",
         "nearbyint": "roundEven", "trunc": "trunc", "pow": "pow", "sin": "sin", "cos": "cos",
         "fma": "fma", "isnan": "isnan", "isinf": "isinf"}


# GLSL keywords and built-in names a TIR variable could be called.
_RESERVED = frozenset("""attribute const uniform varying buffer shared coherent volatile restrict readonly writeonly
atomic_uint layout centroid flat smooth noperspective patch sample break continue do for while switch case default
if else subroutine in out inout float double int void bool true false invariant precise discard return mat2 mat3 mat4
vec2 vec3 vec4 ivec2 ivec3 ivec4 bvec2 bvec3 bvec4 uint uvec2 uvec3 uvec4 lowp mediump highp precision struct common
partition active asm class union enum typedef template this resource goto inline noinline public static extern
external interface long short half fixed unsigned superp input output filter sizeof cast namespace using main
min max abs exp log sqrt floor ceil mod pow sin cos tanh fma barrier int8_t uint8_t int16_t float16_t""".split())


class CodegenError(ValueError):
    """A construct of the lowered kernel that this GLSL printer cannot express."""


@dataclass
class Shader:
    name: str
    source: str
    buffers: list[str]  # pointer parameter names, in binding order
    buffer_dtypes: list[str]
    push_constants: list[tuple[str, str]]  # (scalar parameter name, dtype), 4 bytes each
    fold_x: bool  # blockIdx.x folds into rows; the last push constant is the real grid width
    workgroup: tuple[int, int, int]
    shared_bytes: int
    features: set[str] = field(default_factory=set)  # device features the shader needs


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


# Vector type name prefixes (GLSL: vec4, i8vec4, ...), for 2 to 4 lanes.
_VECTORS = {"float32": "vec", "float16": "f16vec", "int32": "ivec", "uint32": "uvec", "int8": "i8vec",
            "uint8": "u8vec", "int16": "i16vec", "uint16": "u16vec", "bool": "bvec"}


def _lanes(dtype: str) -> tuple[str, int]:
    """("int8", 4) for "int8x4"; ("int8", 1) for "int8"."""
    scalar, _, lanes = dtype.partition("x")
    return scalar, int(lanes) if lanes else 1


def glsl_type(dtype: str) -> str:
    scalar, lanes = _lanes(dtype)
    if scalar not in _SCALARS or (lanes > 1 and (lanes > 4 or scalar not in _VECTORS)):
        raise CodegenError(f"type {dtype} has no GLSL counterpart here")
    return _SCALARS[scalar][0] if lanes == 1 else f"{_VECTORS[scalar]}{lanes}"


class _Printer:
    def __init__(self, func):
        self.func = func
        self.lines: list[str] = []
        self.indent = 1
        self.names: dict = {}  # tirx.Var -> unique GLSL identifier
        self.used_names: set[str] = set()
        self.buffers: dict = {}  # buffer or pointer Var -> (GLSL array expression, element dtype, element offset)
        self.parameters: set[str] = set()  # array expressions of the storage buffers (kernel parameters)
        self.vector_views: dict[str, str] = {}  # storage buffer array expression -> vector type it is read as
        self.shared: list[str] = []
        self.shared_bytes = 0
        self.extensions: set[str] = set()
        self.features: set[str] = set()
        self.workgroup = [1, 1, 1]
        self.analyzer = tvm.sym.Analyzer()
        self.stored: set = set()
        self.helpers: set[str] = set()
        tags = set()
        tvm_ffi.structural_walk(func.body, [(tirx.AttrStmt, lambda node: tags.add(str(node.node.thread_tag))
                                              if node.attr_key == "thread_extent" else None)], order="post")
        self.fold_x = "blockIdx.x" in tags and not tags & {"blockIdx.y", "blockIdx.z"}

    # -- names and types -------------------------------------------------------------------------
    def name(self, var) -> str:
        if var in self.names:
            return self.names[var]
        base = "".join(c if c.isalnum() else "_" for c in var.name) or "v"
        if base[0].isdigit() or base.startswith(("gl_", "ekc_")) or base in _RESERVED or "__" in base:
            base = "v_" + base.replace("__", "_")
        unique, n = base, 1
        while unique in self.used_names:
            unique, n = f"{base}_{n}", n + 1
        self.used_names.add(unique)
        self.names[var] = unique
        return unique

    def type(self, dtype: str) -> str:
        gtype = glsl_type(dtype)
        scalar, _ = _lanes(dtype)
        ext = _SCALARS[scalar][1]
        if ext:
            self.extensions.add(ext)
            self.features.add("shaderFloat16" if scalar == "float16" else
                              "shaderInt8" if "8" in scalar else "shaderInt16")
        return gtype

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    # -- statements ------------------------------------------------------------------------------
    def stmt(self, s) -> None:
        kind = type(s).__name__
        method = getattr(self, "stmt_" + kind, None)
        if method is None:
            raise CodegenError(f"{self.func_name}: statement {kind} is not supported by the GLSL printer")
        method(s)

    def stmt_SeqStmt(self, s):
        for item in s.seq:
            self.stmt(item)

    def stmt_DeclBuffer(self, s):
        data = s.data  # a pointer parameter, or buffer_data(an allocation or another view)
        if type(data).__name__ == "Call" and data.op.name == "tirx.buffer_data":
            data = data.args[0]
        if data not in self.buffers:
            raise CodegenError(f"{self.func_name}: buffer {s.buffer.name} is not backed by a parameter or allocation")
        prefix, dtype, offset = self.buffers[data]
        if str(s.buffer.dtype) != dtype:
            raise CodegenError(f"{self.func_name}: {s.buffer.name} views {dtype} memory as {s.buffer.dtype}")
        extra = s.buffer.elem_offset
        self.buffers[s.buffer] = (prefix, dtype, extra if _is_zero(offset) else offset + extra)

    def stmt_AllocBuffer(self, s):
        buf = s.buffer
        scope = buf.scope()
        dtype = str(buf.dtype)
        size = 1
        for extent in buf.shape:
            if not isinstance(extent, tirx.IntImm):
                raise CodegenError(f"{self.func_name}: {scope} buffer {buf.name} has a dynamic size")
            size *= int(extent.value)
        name = self.name(buf)
        gtype = self.type(dtype)
        if scope in ("shared", "shared.dyn"):
            self.shared.append(f"shared {gtype} {name}[{size}];")
            self.shared_bytes += size * _bytes(dtype)
        elif scope == "local":
            self.emit(f"{gtype} {name}[{size}];")
        else:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} in scope {scope!r} inside a kernel")
        self.buffers[buf] = (name, dtype, 0)

    def stmt_AttrStmt(self, s):
        if s.attr_key == "thread_extent":
            iv = s.node
            tag = str(iv.thread_tag)
            kind, axis = tag.split(".")
            if kind not in _THREADS:
                raise CodegenError(f"{self.func_name}: thread tag {tag} is not supported")
            name = self.name(iv.var)
            if tag == "blockIdx.x" and self.fold_x:
                # More workgroups than a grid row may hold fold into rows: the dispatcher launches
                # (min(n, limit), ceil(n / limit)) groups and passes n; the surplus ones leave at once.
                self.emit(f"int {name} = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y);")
                self.emit(f"if ({name} >= ekc_pc.ekc_grid_x) {{ return; }}")
            else:
                self.emit(f"int {name} = int({_THREADS[kind]}.{axis});")
            extent = s.value
            if kind == "threadIdx":
                if not isinstance(extent, tirx.IntImm):
                    raise CodegenError(f"{self.func_name}: threadIdx.{axis} extent {extent} is not a constant")
                self.workgroup["xyz".index(axis)] = int(extent.value)
            self.analyzer.bind(iv.var, tvm.ir.Range.from_min_extent(0, extent))
        self.stmt(s.body)

    def stmt_Bind(self, s):
        dtype = dtype_of(s.var)
        value = self.expr(s.value)
        self.emit(f"{self.type(dtype)} {self.name(s.var)} = {value};")

    def stmt_LetStmt(self, s):
        self.stmt_Bind(s)
        self.stmt(s.body)

    def stmt_For(self, s):
        if s.step is not None and not (isinstance(s.step, tirx.IntImm) and s.step.value == 1):
            raise CodegenError(f"{self.func_name}: loop {s.loop_var.name} has a step")
        if int(s.kind) not in (0, 3):  # serial, unrolled
            raise CodegenError(f"{self.func_name}: loop {s.loop_var.name} of kind {s.kind} is left in a GPU kernel")
        var = self.name(s.loop_var)
        lo, ext = self.expr(s.min), s.extent
        self.analyzer.bind(s.loop_var, tvm.ir.Range.from_min_extent(s.min, ext))
        end = self.expr(ext) if _is_zero(s.min) else self.expr(s.min + ext)
        self.emit(f"for (int {var} = {lo}; {var} < {end}; ++{var}) {{")
        self.block(s.body)

    def stmt_While(self, s):
        self.emit(f"while ({self.expr(s.condition)}) {{")
        self.block(s.body)

    def stmt_IfThenElse(self, s):
        self.emit(f"if ({self.expr(s.condition)}) {{")
        self.block(s.then_case, close=s.else_case is None)
        if s.else_case is not None:
            self.emit("} else {")
            self.block(s.else_case)

    def block(self, body, close: bool = True):
        self.indent += 1
        self.stmt(body)
        self.indent -= 1
        if close:
            self.emit("}")

    def stmt_BufferStore(self, s):
        index = s.indices[0] if len(s.indices) == 1 else None
        if isinstance(index, tirx.Ramp):  # a vector: stored lane by lane
            prefix, _, lanes = self._vector_access(s.buffer, index, dtype_of(s.value))
            value = self.name(tirx.Var("lanes", "int32"))
            self.emit(f"{self.type(dtype_of(s.value))} {value} = {self.expr(s.value)};")
            for lane, at in enumerate(lanes):
                self.emit(f"{prefix}[{at}] = {value}[{lane}];")
            self.stored.add(prefix)
            return
        target = self.access(s.buffer, s.indices, dtype_of(s.value))
        self.stored.add(self.buffers[s.buffer][0]) if s.buffer in self.buffers else None
        self.emit(f"{target} = {self.expr(s.value)};")

    def stmt_Evaluate(self, s):
        value = s.value
        if type(value).__name__ == "Call" and value.op.name == "tirx.tvm_storage_sync":
            scope = str(value.args[0].value)
            if scope not in ("shared", "shared.dyn", "warp"):
                raise CodegenError(f"{self.func_name}: storage sync of {scope!r} memory")
            self.emit("barrier();")
            return
        if isinstance(value, tirx.IntImm):
            return
        self.emit(f"{self.expr(value)};")

    def stmt_AssertStmt(self, s):  # checks were the host's job; a device kernel keeps only the body
        if getattr(s, "body", None) is not None:
            self.stmt(s.body)

    # -- expressions -----------------------------------------------------------------------------
    def access(self, buf, indices, dtype: str) -> str:
        if len(indices) != 1:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} is accessed with {len(indices)} indices (not flattened)")
        if buf not in self.buffers:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} is not declared")
        prefix, elem, offset = self.buffers[buf]
        if elem != dtype:
            raise CodegenError(f"{self.func_name}: buffer {buf.name} of {elem} is accessed as {dtype}")
        index = indices[0] if _is_zero(offset) else offset + indices[0]
        return f"{prefix}[{self.expr(index)}]"

    def expr(self, e) -> str:
        kind = type(e).__name__
        if kind in _BINARY:
            return f"({self.expr(e.a)} {_BINARY[kind]} {self.expr(e.b)})"
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
        scalar, _ = _lanes(dtype)
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
            self.helpers.add(_SDOT4)
            a, b = (", ".join(self.expr(v) for v in args[i:i + 4]) for i in (1, 5))
            return f"ekc_sdot4(pack32(i8vec4({a})), pack32(i8vec4({b})))"
        if op == "tirx.call_pure_extern":  # a C math function name (expf, sqrtf, ...)
            extern = str(args[0].value).lstrip("_")
            base = extern[:-1] if extern.endswith("f") and extern[:-1] in _MATH else extern
            if base not in _MATH:
                raise CodegenError(f"{self.func_name}: extern function {extern} has no GLSL counterpart")
            return f"{_MATH[base]}({', '.join(self.expr(a) for a in args[1:])})"
        if op.split(".", 1)[-1] == "if_then_else":
            return f"({self.expr(args[0])} ? {self.expr(args[1])} : {self.expr(args[2])})"
        if op in _CALL_BINARY:
            return f"({self.expr(args[0])} {_CALL_BINARY[op]} {self.expr(args[1])})"
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
        if short in _MATH:
            return f"{_MATH[short]}({', '.join(self.expr(a) for a in args)})"
        raise CodegenError(f"{self.func_name}: call to {op} is not supported by the GLSL printer")


def _bytes(dtype: str) -> int:
    return {"float32": 4, "int32": 4, "uint32": 4, "float16": 2, "int16": 2, "uint16": 2,
            "int8": 1, "uint8": 1, "bool": 4}[dtype]


def _is_zero(e) -> bool:
    return isinstance(e, int) and e == 0 or isinstance(e, tirx.IntImm) and int(e.value) == 0


# OpSDotKHR (4450) on two int8x4 vectors packed in 32-bit integers (PackedVectorFormat4x8Bit = 0);
# capabilities DotProductKHR (6019) and DotProductInput4x8BitPackedKHR (6018).
_SDOT4 = """spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int ekc_sdot4_op(int a, int b, spirv_literal int packed_format);
int ekc_sdot4(int a, int b) { return ekc_sdot4_op(a, b, 0); }
"""

_HELPERS = """int ekc_floordiv(int a, int b) { int q = a / b; return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q; }
int ekc_floormod(int a, int b) { int r = a - (a / b) * b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
"""


def emit_shader(name: str, func) -> Shader:
    """GLSL for one device kernel of TVM's lowered module (calling convention: device kernel launch)."""
    printer = _Printer(func)
    printer.func_name = name
    buffers, buffer_dtypes, scalars = [], [], []
    for param in func.params:
        ty = param.ty
        if isinstance(ty, tvm.ir.PointerType):
            dtype = str(ty.element_type.dtype)
            pname = printer.name(param)
            printer.buffers[param] = (f"{pname}_buf.data", dtype, 0)
            printer.parameters.add(f"{pname}_buf.data")
            buffers.append(param)
            buffer_dtypes.append(dtype)
        else:
            dtype = str(ty.dtype)
            if dtype not in ("int32", "uint32", "float32"):
                raise CodegenError(f"{name}: scalar parameter {param.name} of type {dtype} (push constants are 4-byte)")
            printer.name(param)
            scalars.append((param, dtype))
            if dtype == "int32":
                printer.analyzer.bind(param, tvm.ir.Range.from_min_extent(0, 2**31 - 1))
    body_start = len(printer.lines)
    limit = func.attrs["target"].attrs.get("max_num_threads") if func.attrs and "target" in func.attrs else None
    for param, dtype in scalars:
        printer.emit(f"{glsl_type(dtype)} {printer.names[param]} = ekc_pc.{printer.names[param]};")
    printer.stmt(func.body)
    body = printer.lines[body_start:]
    size = printer.workgroup[0] * printer.workgroup[1] * printer.workgroup[2]
    if limit is not None and size > int(limit):
        raise CodegenError(f"{name}: workgroup {printer.workgroup} has {size} threads; the target allows {int(limit)}")

    header = ["#version 450"]
    for bits, ext in _STORAGE_EXT.items():
        if any(_bytes(d) * 8 == bits for d in buffer_dtypes):
            header.append(f"#extension {ext} : require")
            printer.features.add(f"storageBuffer{bits}BitAccess")
    header += [f"#extension {ext} : require" for ext in sorted(printer.extensions)]
    header.append("layout(local_size_x = {}, local_size_y = {}, local_size_z = {}) in;".format(*printer.workgroup))
    for binding, (param, dtype) in enumerate(zip(buffers, buffer_dtypes)):
        pname = printer.names[param]
        access = "" if f"{pname}_buf.data" in printer.stored else "readonly "
        header.append(f"layout(std430, set = 0, binding = {binding}) {access}restrict buffer "
                      f"B_{pname} {{ {printer.type(dtype)} data[]; }} {pname}_buf;")
        vector = printer.vector_views.get(f"{pname}_buf.data")
        if vector is not None:  # the same binding read as vectors (both views read-only)
            if access != "readonly ":
                raise CodegenError(f"{name}: {pname} is written and read as vectors")
            header.append(f"layout(std430, set = 0, binding = {binding}) readonly restrict buffer "
                          f"B_{pname}_vec {{ {vector} data[]; }} {pname}_vec;")
    push = [(printer.names[p], d) for p, d in scalars] + ([("ekc_grid_x", "int32")] if printer.fold_x else [])
    if push:
        fields = " ".join(f"{glsl_type(d)} {n};" for n, d in push)
        header.append(f"layout(push_constant) uniform PushConstants {{ {fields} }} ekc_pc;")
    header += printer.shared
    source = "\n".join(header) + "\n" + _HELPERS + "".join(sorted(printer.helpers)) + "void main() {\n" + "\n".join(body) + "\n}\n"
    # The extensions list may have grown while printing the buffer declarations.
    extra = sorted(printer.extensions - {line.split()[1] for line in header if line.startswith("#extension")})
    if extra:
        source = source.replace("#version 450\n", "#version 450\n" + "".join(f"#extension {x} : require\n" for x in extra), 1)
    return Shader(
        name=name,
        source=source,
        buffers=[printer.names[p] for p in buffers],
        buffer_dtypes=buffer_dtypes,
        push_constants=push,
        fold_x=printer.fold_x,
        workgroup=tuple(printer.workgroup),
        shared_bytes=printer.shared_bytes,
        features=printer.features,
    )
