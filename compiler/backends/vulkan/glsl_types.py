"""What the GLSL printer knows of types and names: TVM dtypes as GLSL scalar and vector types (and
the extensions they need), operators and math functions by TVM name, names GLSL reserves, the
Shader it produces, and the helper functions a shader may include."""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import tirx

# TVM dtype -> GLSL type, and the extension it needs.
SCALARS = {
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
STORAGE_EXT = {8: "GL_EXT_shader_8bit_storage", 16: "GL_EXT_shader_16bit_storage"}
THREADS = {"blockIdx": "gl_WorkGroupID", "threadIdx": "gl_LocalInvocationID"}
BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=",
           "GT": ">", "GE": ">=", "And": "&&", "Or": "||", "BitwiseAnd": "&", "BitwiseOr": "|",
           "BitwiseXor": "^", "LShift": "<<", "RShift": ">>"}
CALL_BINARY = {"tirx.shift_right": ">>", "tirx.shift_left": "<<", "tirx.bitwise_and": "&",
                "tirx.bitwise_or": "|", "tirx.bitwise_xor": "^"}
MATH = {"exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "sqrt": "sqrt", "rsqrt": "inversesqrt",
         "tanh": "tanh", "fabs": "abs", "floor": "floor", "ceil": "ceil", "round": "roundEven",
         "nearbyint": "roundEven", "trunc": "trunc", "pow": "pow", "sin": "sin", "cos": "cos",
         "fma": "fma", "isnan": "isnan", "isinf": "isinf"}


# GLSL keywords and built-in names a TIR variable could be called.
RESERVED = frozenset("""attribute const uniform varying buffer shared coherent volatile restrict readonly writeonly
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
VECTORS = {"float32": "vec", "float16": "f16vec", "int32": "ivec", "uint32": "uvec", "int8": "i8vec",
            "uint8": "u8vec", "int16": "i16vec", "uint16": "u16vec", "bool": "bvec"}


def split_lanes(dtype: str) -> tuple[str, int]:
    """("int8", 4) for "int8x4"; ("int8", 1) for "int8"."""
    scalar, _, lanes = dtype.partition("x")
    return scalar, int(lanes) if lanes else 1


def glsl_type(dtype: str) -> str:
    scalar, lanes = split_lanes(dtype)
    if scalar not in SCALARS or (lanes > 1 and (lanes > 4 or scalar not in VECTORS)):
        raise CodegenError(f"type {dtype} has no GLSL counterpart here")
    return SCALARS[scalar][0] if lanes == 1 else f"{VECTORS[scalar]}{lanes}"


def dtype_bytes(dtype: str) -> int:
    return {"float32": 4, "int32": 4, "uint32": 4, "float16": 2, "int16": 2, "uint16": 2,
            "int8": 1, "uint8": 1, "bool": 4}[dtype]


def is_zero(e) -> bool:
    return isinstance(e, int) and e == 0 or isinstance(e, tirx.IntImm) and int(e.value) == 0


# OpSDotKHR (4450) on two int8x4 vectors packed in 32-bit integers (PackedVectorFormat4x8Bit = 0);
# capabilities DotProductKHR (6019) and DotProductInput4x8BitPackedKHR (6018).
SDOT4 = """spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int ekc_sdot4_op(int a, int b, spirv_literal int packed_format);
int ekc_sdot4(int a, int b) { return ekc_sdot4_op(a, b, 0); }
"""

HELPERS = """int ekc_floordiv(int a, int b) { int q = a / b; return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q; }
int ekc_floormod(int a, int b) { int r = a - (a / b) * b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
"""
