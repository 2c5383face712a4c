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

import tvm
import tvm.sym
import tvm_ffi
from tvm import tirx

from compiler.backends.vulkan.glsl_exprs import ExprPrinter
from compiler.backends.vulkan.glsl_types import (HELPERS, RESERVED, SCALARS, STORAGE_EXT, THREADS, CodegenError, Shader,
                                                 dtype_bytes, dtype_of, glsl_type, is_zero, split_lanes)


class _Printer(ExprPrinter):
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
        if base[0].isdigit() or base.startswith(("gl_", "ekc_")) or base in RESERVED or "__" in base:
            base = "v_" + base.replace("__", "_")
        unique, n = base, 1
        while unique in self.used_names:
            unique, n = f"{base}_{n}", n + 1
        self.used_names.add(unique)
        self.names[var] = unique
        return unique

    def type(self, dtype: str) -> str:
        gtype = glsl_type(dtype)
        scalar, _ = split_lanes(dtype)
        ext = SCALARS[scalar][1]
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
        self.buffers[s.buffer] = (prefix, dtype, extra if is_zero(offset) else offset + extra)

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
            self.shared_bytes += size * dtype_bytes(dtype)
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
            if kind not in THREADS:
                raise CodegenError(f"{self.func_name}: thread tag {tag} is not supported")
            name = self.name(iv.var)
            if tag == "blockIdx.x" and self.fold_x:
                # More workgroups than a grid row may hold fold into rows: the dispatcher launches
                # (min(n, limit), ceil(n / limit)) groups and passes n; the surplus ones leave at once.
                self.emit(f"int {name} = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y);")
                self.emit(f"if ({name} >= ekc_pc.ekc_grid_x) {{ return; }}")
            else:
                self.emit(f"int {name} = int({THREADS[kind]}.{axis});")
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
        end = self.expr(ext) if is_zero(s.min) else self.expr(s.min + ext)
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
    for bits, ext in STORAGE_EXT.items():
        if any(dtype_bytes(d) * 8 == bits for d in buffer_dtypes):
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
    source = "\n".join(header) + "\n" + HELPERS + "".join(sorted(printer.helpers)) + "void main() {\n" + "\n".join(body) + "\n}\n"
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
