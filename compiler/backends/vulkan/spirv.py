"""Scheduled PrimFuncs -> SPIR-V compute shaders and, per kernel, the launches that run them.

TVM's own GPU pipeline does the lowering (thread binding, shared memory, barriers, host/device
split). Its host side is not compiled: what the host would do at run time (read lengths from the
arguments' shapes, allocate intermediate buffers, launch each device kernel with its scalars and
grid) is captured right after `SplitHostDevice` and written to the manifest as data, so the
loader's Vulkan dispatcher replays it without TVM. Device kernels go through glsl.py
and glslang; every shader is checked with spirv-val for the target's Vulkan version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tvm
import tvm.sym
from tvm import tirx

from compiler.backends.base import build_workers
from compiler.backends.vulkan.glsl import CodegenError, Shader, emit_shader
from compiler.runtime.launch import CALL_OPS, EXPR_OPS

TOOLS = {"glslangValidator": "glslang-tools", "spirv-val": "spirv-tools"}


def require_tools() -> None:
    missing = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise RuntimeError("building for Vulkan needs " + " and ".join(missing)
                           + "; install with: apt-get install -y glslang-tools spirv-tools")


def _items(stmt):
    """Statements of a host function in execution order (it is straight-line after splitting)."""
    kind = type(stmt).__name__
    if kind == "SeqStmt":
        for item in stmt.seq:
            yield from _items(item)
        return
    yield stmt
    body = getattr(stmt, "body", None)
    if body is not None and kind in ("AttrStmt", "LetStmt", "DeclBuffer", "AllocBuffer"):
        yield from _items(body)


def encode(expr, names: dict) -> int | str | list:
    """A host integer expression as JSON: ints, variable names and [op, a, b] lists (see
    compiler/runtime/launch.py)."""
    kind = type(expr).__name__
    if kind == "IntImm":
        return int(expr.value)
    if kind == "Var":
        if expr not in names:
            raise CodegenError(f"host value {expr.name} is not derived from argument shapes")
        return names[expr]
    if kind in EXPR_OPS:
        return [EXPR_OPS[kind], encode(expr.a, names), encode(expr.b, names)]
    if kind == "Cast":
        return encode(expr.value, names)
    if kind == "Select":
        return ["?", encode(expr.condition, names), encode(expr.true_value, names), encode(expr.false_value, names)]
    if kind == "Call" and expr.op.name in CALL_OPS:
        return [CALL_OPS[expr.op.name], encode(expr.args[0], names), encode(expr.args[1], names)]
    raise CodegenError(f"host expression {expr} ({kind}) cannot be replayed by the loader")


def host_plan(func) -> dict:
    """What the host side of one kernel does, as data: length sources, lets, temporaries, launches."""
    names: dict = {}
    plan: dict = {"sources": {}, "lets": [], "temps": [], "launches": []}
    buffers: list = []  # (buffer var, ["arg", i] | ["temp", j])
    for index, param in enumerate(func.params):
        buffers.append((param, ["arg", index]))
        for axis, dim in enumerate(param.shape):
            if type(dim).__name__ == "Var" and dim not in names:
                names[dim] = dim.name
                plan["sources"][dim.name] = ["shape", index, axis]
        for axis, stride in enumerate(param.strides or ()):
            if type(stride).__name__ == "Var" and stride not in names:
                names[stride] = stride.name
                plan["sources"][stride.name] = ["stride", index, axis]

    def resolve(var):
        for known, where in buffers:
            if known.same_as(var):
                return where
        raise CodegenError(f"kernel buffer {var.name} is neither an argument nor a temporary")

    for stmt in _items(func.body):
        kind = type(stmt).__name__
        if kind == "Bind":
            name = f"_{stmt.var.name}_{len(plan['lets'])}"
            plan["lets"].append([name, encode(stmt.value, names)])
            names[stmt.var] = name
        elif kind == "DeclBuffer":
            data = stmt.data
            if type(data).__name__ != "Call" or data.op.name != "tirx.buffer_data":
                raise CodegenError(f"view {stmt.buffer.name} of {data} is not supported")
            buffers.append((stmt.buffer, resolve(data.args[0])))
        elif kind == "AllocBuffer":
            buf = stmt.buffer
            if buf.scope() != "global":
                raise CodegenError(f"host allocation {buf.name} in scope {buf.scope()}")
            elements = 1
            for dim in buf.shape:
                elements = elements * dim
            plan["temps"].append({"name": buf.name, "dtype": str(buf.dtype),
                                  "elements": encode(tvm.sym.Analyzer().simplify(elements), names)})
            buffers.append((buf, ["temp", len(plan["temps"]) - 1]))
        elif kind == "Evaluate" and type(stmt.value).__name__ == "Call" and stmt.value.op.name == "tirx.call_ffi_kernel":
            call = stmt.value
            params = [str(p) for p in call.attrs.launch_params]
            args = list(call.args[1:])
            values, extents = args[:len(args) - len(params)], args[len(args) - len(params):]
            launch = {"shader": str(call.args[0].value), "buffers": [], "push": [], "grid": [1, 1, 1]}
            for value in values:
                if type(value).__name__ == "Call" and value.op.name == "tirx.buffer_data":
                    launch["buffers"].append(resolve(value.args[0]))
                else:
                    launch["push"].append(encode(value, names))
            for param, extent in zip(params, extents):
                kind_, axis = param.split(".")
                if kind_ == "blockIdx":
                    launch["grid"]["xyz".index(axis)] = encode(extent, names)
            plan["launches"].append(launch)
        elif kind in ("AttrStmt", "AssertStmt"):
            continue
        elif kind == "Evaluate" and type(stmt.value).__name__ == "IntImm":
            continue
        else:
            raise CodegenError(f"host statement {kind} cannot be replayed by the loader:\n{stmt}")
    return plan


def lower(funcs: dict, tvm_target) -> tuple[dict, dict]:
    """TVM's GPU lowering of scheduled PrimFuncs: {symbol: host PrimFunc}, {kernel name: device PrimFunc}."""
    mod = tirx.transform.BindTarget(tvm_target)(tvm.IRModule(funcs))
    pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(tvm_target)
    captured = {}

    @tvm.ir.instrument.pass_instrument
    class _AfterSplit:
        def run_after_pass(self, module, info):
            if info.name.endswith("SplitHostDevice"):
                captured["mod"] = module

    with tvm.transform.PassContext(instruments=[_AfterSplit()]):
        pipeline(mod)
    split = captured["mod"]
    hosts, devices = {}, {}
    for gv, func in split.functions.items():
        if int(func.attrs.get("calling_conv", 0)) == 2:
            devices[gv.name_hint] = func
        else:
            hosts[gv.name_hint] = func
    devices_mod = finalize_device()(tvm.IRModule({tvm.ir.GlobalVar(k): v for k, v in devices.items()}))
    return hosts, {gv.name_hint: f for gv, f in devices_mod.functions.items()}


def compile_glsl(shader: Shader, vulkan_version: str, work: Path) -> bytes:
    """glslang -> SPIR-V, then spirv-val for the target's Vulkan version."""
    env = f"vulkan{vulkan_version}"
    source = work / f"{shader.name}.comp"
    binary = work / f"{shader.name}.spv"
    source.write_text(shader.source)
    result = subprocess.run(["glslangValidator", "-V", "--target-env", env, "-S", "comp", "-o", str(binary), str(source)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CodegenError(f"glslang rejected the shader {shader.name}:\n{result.stdout}{result.stderr}\n"
                           f"--- source ---\n{_numbered(shader.source)}")
    validate(binary, vulkan_version)
    return binary.read_bytes()


def validate(binary: Path, vulkan_version: str) -> None:
    result = subprocess.run(["spirv-val", "--target-env", f"vulkan{vulkan_version}", str(binary)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CodegenError(f"spirv-val rejected {binary.name}: {result.stdout}{result.stderr}")


def _numbered(source: str) -> str:
    return "\n".join(f"{i + 1:4d}  {line}" for i, line in enumerate(source.splitlines()))


def describe_tools() -> str:
    versions = []
    for tool in TOOLS:
        result = subprocess.run([tool, "--version"], capture_output=True, text=True)
        versions.append((result.stdout or result.stderr).splitlines()[0].strip())
    return "TVM lowering + compiler/backends/vulkan/glsl.py; " + "; ".join(versions)


def build(funcs: dict, tvm_target, vulkan_version: str, out_dir: Path,
          progress=print) -> tuple[dict[str, dict], list[str]]:
    """Write out_dir/shaders/<kernel>.spv (and the GLSL it came from) for every device kernel;
    return ({symbol: launch plan}, the .spv paths relative to out_dir). The shaders are staged and
    reach out_dir/shaders only once every one compiled and every launch plan was made, so a failed
    build leaves nothing there."""
    require_tools()
    hosts, devices = lower(funcs, tvm_target)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=out_dir, prefix=".shaders-") as staged:
        shaders = {name: emit_shader(name, func) for name, func in sorted(devices.items())}
        # glslang and spirv-val run as processes, so threads keep every core busy with them
        with ThreadPoolExecutor(build_workers()) as pool:
            binaries = pool.map(lambda shader: compile_glsl(shader, vulkan_version, Path(tmp)), shaders.values())
            for (name, shader), binary in zip(shaders.items(), binaries):
                (Path(staged) / f"{name}.spv").write_bytes(binary)
                (Path(staged) / f"{name}.comp").write_text(shader.source)
        progress(f"      {len(shaders)} shaders passed spirv-val (vulkan{vulkan_version})")
        plans = {}
        for symbol, func in hosts.items():
            plan = host_plan(func)
            features: set[str] = set()
            for launch in plan["launches"]:
                shader = shaders[launch["shader"]]
                launch["workgroup"] = list(shader.workgroup)
                launch["shared_bytes"] = shader.shared_bytes
                launch["push_dtypes"] = [d for _, d in shader.push_constants]
                launch["fold_x"] = shader.fold_x
                launch["buffer_dtypes"] = shader.buffer_dtypes
                features |= shader.features
            plan["features"] = sorted(features)
            plans[symbol] = plan
        _install_shaders(Path(staged), out_dir)
    return plans, [f"shaders/{name}.spv" for name in sorted(shaders)]


def _install_shaders(staged: Path, out_dir: Path) -> None:
    """Move the staged shaders into out_dir/shaders. Of the previous build's files there, only its
    shaders' GLSL sources that this build does not rewrite are deleted (build.build deletes its
    stale .spv artifacts once the new manifest is written): other files in the folder are not ours."""
    from compiler import manifest

    shaders_dir = out_dir / "shaders"
    shaders_dir.mkdir(exist_ok=True)
    try:
        previous = manifest.previous_artifacts(out_dir) or set()
    except ValueError:  # not a build folder of ours (a tuning candidate's): nothing here is the last build's
        previous = set()
    for name in sorted(previous):
        source = out_dir / Path(name).with_suffix(".comp")
        rewritten = (staged / source.name).exists()
        if Path(name).parent == Path("shaders") and name.endswith(".spv") and not rewritten and source.is_file():
            source.unlink()
    for staged_file in sorted(staged.iterdir()):
        os.replace(staged_file, shaders_dir / staged_file.name)
