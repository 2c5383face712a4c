"""The Hexagon runner program: runner.c (the binary protocol the runtime's runner driver speaks)
+ a table of the kernels + their object code, linked statically. No Python runs on the DSP, so
this program is how a host process calls the kernels (under qemu-hexagon here)."""

from __future__ import annotations

from pathlib import Path
_SOURCE = Path(__file__).with_name("runner.c")


def write_object(exe, path: Path) -> Path:
    """TVM's executable `exe` as one object file (LLVM emits its machine code here)."""
    exe.mod.write_to_file(str(path))
    return path


def link_runner(objects: list[Path], symbols: list[str], output: Path, toolchain) -> None:
    """A static program serving `symbols` of the TVM kernels in the object files `objects`."""
    work = output.parent
    entries = "\n".join(f'    {{"{s}", __tvm_ffi_{s}}},' for s in symbols)
    externs = "\n".join(f"extern int __tvm_ffi_{s}(void *, const TVMFFIAny *, int32_t, TVMFFIAny *);" for s in symbols)
    table = work / "kernel_table.c"
    table.write_text(f"""#include <stdint.h>
typedef struct {{ int32_t type_index; uint32_t zero_padding; union {{ int64_t i; double f; void *p; }} v; }} TVMFFIAny;
typedef int (*TVMFFISafeCallType)(void *, const TVMFFIAny *, int32_t, TVMFFIAny *);
typedef struct {{ const char *name; TVMFFISafeCallType fn; }} KernelEntry;
{externs}
const KernelEntry ekc_kernels[] = {{
{entries}
}};
const int ekc_num_kernels = {len(symbols)};
""")
    toolchain.link_static_program(str(output), [str(_SOURCE), str(table), *map(str, objects)])
