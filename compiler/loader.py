"""The small loader: run built kernels with numpy (or any DLPack) arrays.

Depends only on numpy and the TVM runtime (`tvm_ffi` + `libtvm_runtime.so`), never on the compiler,
so it runs on a board that has only those. The manifest is the contract: every argument is checked
against it before a call, so a mistake is a ValueError naming the argument, never a crash.

A library built for another ISA (an ARM build on an x86 workstation) runs in a worker process: an
aarch64 CPython under qemu-user, which loads the same library with this same file
(`python3 loader.py --serve LIB`) and answers calls over a pipe.

    lib = load("build/arm")
    gemm = lib["qgemm_w8a8_n896_k896"]
    weights = gemm.pack(w=w_int8, w_scale=scales)
    y = gemm(x=x_int8, x_scale=x_scales, **weights)
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import math
import os
import pickle
import platform
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class LoaderError(RuntimeError):
    """The library cannot be loaded or run here (bad manifest, wrong hash, no way to run the ISA)."""


# -- where things live ---------------------------------------------------------------------------

def cache_dir() -> Path:
    """Downloaded and built helpers (emulator sysroots): $EKC_CACHE_DIR, else .cache/ in a checkout."""
    if os.environ.get("EKC_CACHE_DIR"):
        return Path(os.environ["EKC_CACHE_DIR"])
    if (_PROJECT_ROOT / "pyproject.toml").is_file():
        return _PROJECT_ROOT / ".cache"
    return Path.home() / ".cache" / "edge-kernel-compiler"


def sysroot_dir(isa: str) -> Path:
    """Emulated userland for `isa`: root/ (libc, CPython) and site/ (numpy, tvm_ffi, the TVM runtime)."""
    return cache_dir() / "sysroot" / isa


def _tvm_runtime_path() -> Path:
    if os.environ.get("EKC_TVM_RUNTIME"):
        return Path(os.environ["EKC_TVM_RUNTIME"])
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise LoaderError("the TVM runtime library was not found: install apache-tvm or set EKC_TVM_RUNTIME")
    return Path(spec.submodule_search_locations[0]) / "lib" / "libtvm_runtime.so"


_RUNTIME_LOADED = False


def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once (Linux topology; else the CPU count)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def use_all_cores() -> None:
    """Give TVM's thread pool one thread per physical core unless TVM_NUM_THREADS says otherwise.
    TVM's own default halves the logical CPU count on x86 (it assumes SMT), which on a VM whose
    vCPUs are separate cores runs every parallel kernel on half of them. Must run before the
    first kernel call (the pool reads it once)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))


def _load_runtime():
    """tvm_ffi alone runs simple kernels, but kernels that allocate a workspace call
    TVMBackendAllocWorkspace, which only libtvm_runtime provides: load it globally first."""
    global _RUNTIME_LOADED
    import tvm_ffi

    use_all_cores()
    if not _RUNTIME_LOADED:
        path = _tvm_runtime_path()
        if not path.is_file():
            raise LoaderError(f"the TVM runtime library {path} does not exist")
        ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
        _RUNTIME_LOADED = True
    return tvm_ffi


# -- memory ------------------------------------------------------------------------------------------

# TVM kernels assume 64-byte aligned data (they emit aligned vector loads); numpy promises only 16.
ALIGNMENT = 64


def _address(array: np.ndarray) -> int:
    if array.flags.writeable and array.flags.c_contiguous and array.size:  # 0.3 us, a third of the alternatives
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    return array.__array_interface__["data"][0]


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is ALIGNMENT-aligned: kernels take it without a copy."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = (-_address(raw)) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned(array: np.ndarray) -> np.ndarray:
    """`array` itself when its data is aligned, else an aligned copy."""
    if _address(array) % ALIGNMENT == 0:
        return array
    out = empty(array.shape, array.dtype)
    out[...] = array
    return out


# -- packing (numpy steps named in the manifest) --------------------------------------------------

def _apply_step(name: str, array: np.ndarray, step: dict[str, Any]) -> np.ndarray:
    op = step["op"]
    if op == "check_range":
        if array.size and (array.min() < step["min"] or array.max() > step["max"]):
            raise ValueError(f"argument {name!r} has values outside [{step['min']}, {step['max']}] "
                             f"(found {array.min()}..{array.max()})")
        return array
    if op == "reshape":
        return array.reshape(step["shape"])
    if op == "transpose":
        return array.transpose(step["axes"])
    if op == "group_sums":  # int64 sums over groups of the last axis, times a constant
        grouped = array.astype(np.int64).reshape(*array.shape[:-1], -1, step["group"])
        return grouped.sum(-1) * step.get("scale", 1)
    if op == "nibbles":  # adjacent pairs of the last axis -> one byte, first element in the low nibble
        low = (array[..., 0::2].astype(np.int16) + step.get("low_offset", 0)).astype(np.uint8) & 0xF
        high = array[..., 1::2].astype(np.uint8) & 0xF
        return (low | (high << 4)).view(np.int8)
    raise LoaderError(f"manifest names an unknown packing step {op!r}")


# -- argument checks ---------------------------------------------------------------------------------

class DeviceArray:
    """An array kept where the library's kernels run, for data that changes a little per call but
    is read whole (a KV cache): on a Vulkan device it lives in device memory, and kernels read views
    of it in place instead of receiving a copy per call; on CPU targets it is an aligned numpy
    array. Write with `arr[key] = values`, pass `arr[key]` (a view) to kernels, read with numpy()."""

    def __init__(self, backend, shape, dtype):
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self._backend = backend
        allocate = getattr(backend, "allocate", None)
        self._storage = allocate(self.shape, self.dtype) if allocate else empty(self.shape, self.dtype)

    def _open(self) -> np.ndarray:
        if getattr(self._backend, "closed", False):
            raise LoaderError("the library this DeviceArray belongs to is closed")
        return self._storage

    def __setitem__(self, key, values) -> None:
        self._open()[key] = values

    def __getitem__(self, key) -> DeviceView:
        return DeviceView(self, key)

    def numpy(self) -> np.ndarray:
        """A copy of the values."""
        return self._open().copy()


class DeviceView:
    """`device_array[key]`: what kernels take; it resolves to the backend's memory at call time."""

    def __init__(self, parent: DeviceArray, key):
        self._parent, self._key = parent, key

    def array(self) -> np.ndarray:
        return self._parent._open()[self._key]


def _as_array(kernel: str, name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, DeviceView):
        return value.array()
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (TypeError, RuntimeError, BufferError) as err:
            raise ValueError(f"{kernel}: argument {name!r} is a DLPack tensor numpy cannot read "
                             f"(is it on the CPU?): {err}") from None
    raise ValueError(f"{kernel}: argument {name!r} must be a numpy array or a DLPack tensor, "
                     f"got {type(value).__name__}")


def _check_names(kernel: str, expected: list[str], given: dict[str, Any]) -> None:
    missing = [n for n in expected if n not in given]
    if missing:
        raise ValueError(f"{kernel}: missing argument(s) {', '.join(map(repr, missing))}")
    extra = [n for n in given if n not in expected]
    if extra:
        raise ValueError(f"{kernel}: unexpected argument(s) {', '.join(map(repr, extra))}; "
                         f"expected {', '.join(expected)}")


def _bind_shape(kernel: str, name: str, array: np.ndarray, shape: list, dtype,
                sizes: dict[str, int]) -> None:
    if array.dtype != dtype:
        raise ValueError(f"{kernel}: argument {name!r} must have dtype {dtype}, got {array.dtype}")
    if array.ndim != len(shape):
        raise ValueError(f"{kernel}: argument {name!r} must have {len(shape)} dims {shape}, "
                         f"got shape {list(array.shape)}")
    for axis, (want, got) in enumerate(zip(shape, array.shape)):
        if isinstance(want, str):
            if got < 1:
                raise ValueError(f"{kernel}: argument {name!r}: {want} must be at least 1, got {got}")
            if sizes.setdefault(want, got) != got:
                raise ValueError(f"{kernel}: argument {name!r} axis {axis} has {want}={got}, "
                                 f"but another argument has {want}={sizes[want]}")
        elif want != got:
            raise ValueError(f"{kernel}: argument {name!r} must have shape {shape}, got {list(array.shape)}")


def _check_layout(kernel: str, name: str, array: np.ndarray, strided: bool) -> None:
    """A non-C-contiguous argument passes only where the manifest allows a strided outer axis and
    the rest of the array is contiguous (a view of the first rows of a longer buffer)."""
    inner = array.strides[1:] == np.empty(array.shape[1:], array.dtype).strides and array.strides[0] > 0
    if not (strided and inner and array.strides[0] % array.itemsize == 0):
        allowed = " (only its outer axis may be strided)" if strided else ""
        raise ValueError(f"{kernel}: argument {name!r} is not C-contiguous{allowed}; "
                         "np.ascontiguousarray makes a contiguous copy")


def bucket_matches(bucket: dict[str, Any], sizes: dict[str, int]) -> bool:
    """Whether runtime lengths fall in a length bucket: {"M": 1} is exact, {"L": [1, 512]} an
    inclusive range, {} matches everything."""
    for dim, value in bucket.items():
        size = sizes.get(dim)
        if size is None or not (value[0] <= size <= value[1] if isinstance(value, list) else size == value):
            return False
    return True


class Kernel:
    """One kernel: `.spec` is its manifest entry; call it with keyword arrays."""

    def __init__(self, name: str, entry: dict[str, Any], backend):
        self.name = name
        self.spec = entry
        self._backend = backend
        self._inputs = [a for a in entry["args"] if a["role"] != "output"]
        self._outputs = [a for a in entry["args"] if a["role"] == "output"]
        # Per-call checks read these: the manifest's strings turned into numpy dtypes once.
        self._input_names = {a["name"] for a in self._inputs}
        self._input_checks = [(a["name"], np.dtype(a["dtype"]), a["shape"], a.get("strided", False))
                              for a in self._inputs]

    def __repr__(self) -> str:
        sig = ", ".join(f"{a['name']}: {a['dtype']}{a['shape']}" for a in self._inputs)
        return f"<Kernel {self.name}({sig})>"

    def variant_for(self, sizes: dict[str, int]) -> dict[str, Any]:
        """The build variant serving these runtime lengths: the first whose bucket they match
        (e.g. the M=1 decode GEMV), else the any-length one."""
        for variant in self.spec["variants"]:
            if bucket_matches(variant["bucket"], sizes):
                return variant
        raise LoaderError(f"{self.name}: no variant serves {sizes}")

    @property
    def logical_weights(self) -> list[str]:
        """The names `pack` takes: weights in their logical layouts (derived ones excluded)."""
        weights = [a for a in self._inputs if a["role"] == "weight"]
        return list(dict.fromkeys(a.get("source") or a["name"] for a in weights))

    def pack(self, **logical: Any) -> dict[str, np.ndarray]:
        """Weights in their logical layouts (e.g. int8 w [N, K]) -> the arrays this kernel takes."""
        weights = [a for a in self._inputs if a["role"] == "weight"]
        _check_names(self.name, self.logical_weights, logical)
        packed = {}
        for arg in weights:
            name = arg.get("source") or arg["name"]
            array = _as_array(self.name, name, logical[name])
            _bind_shape(self.name, name, array, arg.get("logical_shape", arg["shape"]),
                        arg.get("logical_dtype", arg["dtype"]), {})
            for step in arg.get("pack", ()):
                array = _apply_step(name, array, step)
            packed[arg["name"]] = aligned(np.ascontiguousarray(array, dtype=arg["dtype"]))
        return packed

    def bind(self, **weights: np.ndarray) -> "BoundKernel":
        """This kernel with its weights (as `pack` returns them) checked and handed to the backend
        once (an emulated worker keeps them): the result takes only the runtime inputs per call."""
        return BoundKernel(self, weights)

    def __call__(self, **inputs: Any):
        if inputs.keys() != self._input_names:
            _check_names(self.name, [a["name"] for a in self._inputs], inputs)
        sizes: dict[str, int] = {}
        arrays = []
        for name, dtype, shape, strided in self._input_checks:
            array = _as_array(self.name, name, inputs[name])
            _bind_shape(self.name, name, array, shape, dtype, sizes)
            if not array.flags.c_contiguous:
                _check_layout(self.name, name, array, strided)
            arrays.append(array)  # the backend copies it only if its data is misaligned
        out_specs = [(tuple(sizes[d] if isinstance(d, str) else d for d in a["shape"]), a["dtype"])
                     for a in self._outputs]
        outputs = self._backend.call(self.variant_for(sizes)["symbol"], arrays, out_specs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class BoundKernel:
    """A kernel with resident weights: call it with the activations (role "input") only."""

    def __init__(self, kernel: Kernel, weights: dict[str, np.ndarray]):
        args = kernel._inputs
        expected = [a["name"] for a in args if a["role"] == "weight"]
        _check_names(kernel.name, expected, weights)
        resident = {}
        for position, arg in enumerate(args):
            if arg["role"] == "weight":
                array = _as_array(kernel.name, arg["name"], weights[arg["name"]])
                _bind_shape(kernel.name, arg["name"], array, arg["shape"], np.dtype(arg["dtype"]), {})
                resident[position] = aligned(np.ascontiguousarray(array))
        self.kernel = kernel
        self.weights = {args[p]["name"]: a for p, a in resident.items()}
        self._checks = [(p, *check) for p, check in enumerate(kernel._input_checks) if p not in resident]
        self._names = {check[1] for check in self._checks}
        self._slots = [check[0] for check in self._checks]
        self._plans: dict[tuple, tuple] = {}
        self._backend = kernel._backend
        self._kept = self._backend.keep(len(args), resident)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.weights.values())

    def __call__(self, **inputs: Any):
        kernel = self.kernel
        if inputs.keys() != self._names:
            _check_names(kernel.name, sorted(self._names), inputs)
        arrays = [_as_array(kernel.name, check[1], inputs[check[1]]) for check in self._checks]
        # Calls repeat a few shapes (decode: always M=1): checked once per distinct set of shapes.
        key = tuple(a.shape for a in arrays)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 256:  # many prompt lengths: keep the cache small
                self._plans.clear()
            plan = self._plans[key] = self._plan(arrays)
        symbol, out_specs = plan
        for (_, name, dtype, _, strided), array in zip(self._checks, arrays):
            if array.dtype != dtype:
                raise ValueError(f"{kernel.name}: argument {name!r} must have dtype {dtype}, got {array.dtype}")
            if not array.flags.c_contiguous:
                _check_layout(kernel.name, name, array, strided)
        outputs = self._backend.call_kept(symbol, self._kept, self._slots, arrays, out_specs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _plan(self, arrays: list[np.ndarray]):
        """(variant symbol, output shapes and dtypes) for these input shapes, after checking them."""
        kernel = self.kernel
        sizes: dict[str, int] = {}
        for (_, name, dtype, shape, _), array in zip(self._checks, arrays):
            _bind_shape(kernel.name, name, array, shape, dtype, sizes)
        out_specs = [(tuple(sizes[d] if isinstance(d, str) else d for d in a["shape"]), a["dtype"])
                     for a in kernel._outputs]
        return kernel.variant_for(sizes)["symbol"], out_specs


class Library:
    """A built library: `lib.kernels` lists names; `lib[name]` or `lib.<name>` gives a Kernel."""

    def __init__(self, directory: Path, manifest: dict[str, Any], backend):
        self.directory = directory
        self.manifest = manifest
        self.target = manifest["target"]
        self.mode = backend.mode
        self._backend = backend
        self._kernels = {name: Kernel(name, entry, backend) for name, entry in manifest["kernels"].items()}

    @property
    def kernels(self) -> list[str]:
        return list(self._kernels)

    def __getitem__(self, name: str) -> Kernel:
        if name not in self._kernels:
            raise KeyError(f"no kernel {name!r} in {self.directory}; kernels: {', '.join(self._kernels)}")
        return self._kernels[name]

    def __getattr__(self, name: str) -> Kernel:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(str(err)) from None

    def __dir__(self):
        return [*super().__dir__(), *self._kernels]

    def device_array(self, shape, dtype) -> DeviceArray:
        """An array these kernels read in place (see DeviceArray), e.g. a KV cache."""
        return DeviceArray(self._backend, shape, dtype)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- backends ----------------------------------------------------------------------------------------

class NativeBackend:
    mode = "native"

    def __init__(self, library: Path):
        self._ffi = _load_runtime()
        self._module = self._ffi.load_module(str(library))
        self._functions: dict[str, Any] = {}

    def call(self, name: str, inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        function = self._functions.get(name)
        if function is None:
            function = self._functions[name] = self._module[name]
        from_dlpack = self._ffi.from_dlpack
        tensors = []
        for array in inputs:
            tensor = from_dlpack(array)
            if tensor.data_ptr() % ALIGNMENT:  # the kernels' vector loads assume alignment: copy
                tensor = from_dlpack(aligned(array))
            tensors.append(tensor)
        outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        function(*tensors, *[from_dlpack(a) for a in outputs])
        return outputs

    def keep(self, count: int, resident: dict[int, np.ndarray]):
        """Argument list template with the (aligned) resident arrays converted once; None at the
        positions of per-call inputs. The arrays stay referenced by the template's owner."""
        template = [None] * count
        for position, array in resident.items():
            template[position] = self._ffi.from_dlpack(aligned(array))
        return template, list(resident.values())

    def call_kept(self, name: str, kept, slots: list[int], inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        function = self._functions.get(name)
        if function is None:
            function = self._functions[name] = self._module[name]
        from_dlpack = self._ffi.from_dlpack
        args = list(kept[0])
        for position, array in zip(slots, inputs):
            tensor = from_dlpack(array)
            args[position] = tensor if not tensor.data_ptr() % ALIGNMENT else from_dlpack(aligned(array))
        outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        function(*args, *[from_dlpack(a) for a in outputs])
        return outputs

    def close(self) -> None:
        self._functions.clear()


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


class _ChildProcess:
    """A backend whose kernels run in a child process (`_proc`, stderr kept in `_stderr`)."""

    def _worker_log(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"

    def _say_goodbye(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._say_goodbye()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
        self._stderr.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class EmulatedBackend(_ChildProcess):
    """The same library, run by this file in a worker process under qemu-user."""

    mode = "emulated"

    def __init__(self, library: Path, isa: str, emulator: str):
        import shutil

        qemu = shutil.which(emulator)
        if qemu is None:
            raise LoaderError(f"{library} is built for {isa}, which this machine runs only under "
                              f"{emulator}; it is not installed (Debian: apt-get install qemu-user)")
        root = sysroot_dir(isa)
        python = root / "root" / "usr" / "bin" / "python3.11"
        if not python.is_file():
            raise LoaderError(f"no {isa} userland for {emulator} at {root}; "
                              f"create it with: python -m compiler setup-emulator --isa {isa}")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(root / "site"),
            "EKC_TVM_RUNTIME": str(root / "site" / "tvm_runtime" / "libtvm_runtime.so"),
            "QEMU_LD_PREFIX": str(root / "root"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self._stderr = tempfile.TemporaryFile()  # the worker's messages, quoted if it fails
        self._proc = subprocess.Popen(
            [qemu, str(python), str(Path(__file__).resolve()), "--serve", str(library)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self._request(("ping",))

    def _request(self, message):
        if self._proc.poll() is not None:
            raise LoaderError(f"the emulated worker has exited: {self._worker_log()}")
        try:
            _send(self._proc.stdin, message)
            reply = _receive(self._proc.stdout)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            self._proc.wait(timeout=10)
            raise LoaderError(f"the emulated worker died (exit {self._proc.returncode}): {self._worker_log()}")
        status, payload = reply
        if status == "error":
            raise LoaderError(f"kernel failed under emulation: {payload}")
        return payload

    def call(self, name, inputs, out_specs):
        return self._request(("call", name, inputs, out_specs))

    def keep(self, count: int, resident: dict[int, np.ndarray]) -> int:
        """The worker keeps the arrays: later calls send only the per-call inputs."""
        return self._request(("keep", count, resident))

    def call_kept(self, name, kept: int, slots, inputs, out_specs):
        return self._request(("call_kept", name, kept, slots, inputs, out_specs))

    def _say_goodbye(self) -> None:
        _send(self._proc.stdin, ("exit",))


class RunnerBackend(_ChildProcess):
    """Kernels served by the build's static runner (targets without Python: Hexagon), under the
    target's emulator here or directly on the device; the binary protocol is in hexagon_runner.c."""

    mode = "emulated"
    _CODES = {"i": 0, "u": 1, "f": 2}

    def __init__(self, runner: Path, emulator: str | None):
        import shutil

        command = [str(runner)]
        if emulator:
            qemu = shutil.which(emulator)
            if qemu is None:
                raise LoaderError(f"{runner.parent} needs {emulator} to run here; it is not installed "
                                  "(Debian: apt-get install qemu-user)")
            command = [qemu, str(runner)]
        else:
            self.mode = "native"
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)

    def _fail(self, what: str):
        self._proc.kill()
        self._proc.wait(timeout=10)
        return LoaderError(f"the kernel runner died {what} (exit {self._proc.returncode}): {self._worker_log()}")

    def _exchange(self, message: bytes, reply_bytes: int) -> bytes:
        try:
            self._proc.stdin.write(message)
            self._proc.stdin.flush()
            reply = self._proc.stdout.read(reply_bytes)
        except (BrokenPipeError, OSError):
            reply = b""
        if len(reply) != reply_bytes:
            raise self._fail("during a call")
        return reply

    @classmethod
    def _header(cls, role: int, dtype, shape) -> bytes:
        dtype = np.dtype(dtype)
        return struct.pack(f"<BBBHI{len(shape)}q", role, cls._CODES[dtype.kind], dtype.itemsize * 8, 1, len(shape),
                           *shape)

    def _call(self, name: str, parts: list[bytes], out_specs) -> list[np.ndarray]:
        encoded = name.encode()
        count = len(parts) + len(out_specs)
        message = [b"C", struct.pack("<I", len(encoded)), encoded, struct.pack("<I", count), *parts]
        message += [self._header(2, dtype, shape) for shape, dtype in out_specs]
        self._check_status(b"".join(message))
        outputs = []
        for shape, dtype in out_specs:
            out = empty(shape, dtype)
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(self._exchange(b"", out.nbytes), np.uint8)
            outputs.append(out)
        return outputs

    def time_kept(self, name: str, kept, repeats: int) -> list[float]:
        """Seconds of each of `repeats` back-to-back calls, timed inside the runner (the autotuner's
        measurement: no pipe in it). `kept` holds every argument, outputs included."""
        encoded = name.encode()
        message = [b"T", struct.pack("<I", len(encoded)), encoded, struct.pack("<I", len(kept)), *kept,
                   struct.pack("<I", repeats)]
        self._check_status(b"".join(message))
        return list(struct.unpack(f"<{repeats}d", self._exchange(b"", 8 * repeats)))

    def _check_status(self, request: bytes) -> None:
        """Send a call request; raise the runner's message if the kernel failed."""
        (status,) = struct.unpack("<i", self._exchange(request, 4))
        if status != 0:
            (length,) = struct.unpack("<I", self._exchange(b"", 4))
            raise LoaderError(f"kernel failed in the runner: {self._exchange(b'', length).decode(errors='replace')}")

    def _input(self, array: np.ndarray) -> bytes:
        array = np.ascontiguousarray(array)
        return self._header(0, array.dtype, array.shape) + struct.pack("<Q", array.nbytes) + array.tobytes()

    def call(self, name, inputs, out_specs):
        return self._call(name, [self._input(a) for a in inputs], out_specs)

    def keep(self, count: int, resident: dict[int, np.ndarray]):
        """The runner keeps each weight; the template holds (id, dtype, shape) at its position."""
        template = [None] * count
        for position, array in resident.items():
            array = np.ascontiguousarray(array)
            (index,) = struct.unpack("<I", self._exchange(b"K" + struct.pack("<Q", array.nbytes) + array.tobytes(), 4))
            template[position] = self._header(1, array.dtype, array.shape) + struct.pack("<I", index)
        return template

    def call_kept(self, name, kept, slots, inputs, out_specs):
        parts = list(kept)
        for position, array in zip(slots, inputs):
            parts[position] = self._input(array)
        return self._call(name, parts, out_specs)

    def _say_goodbye(self) -> None:
        self._proc.stdin.write(b"Q")
        self._proc.stdin.close()


def _serve(library: str) -> None:
    """Worker loop: the protocol owns stdout; anything else printed goes to stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    backend = NativeBackend(Path(library))
    kept = []  # weight templates the caller bound (BoundKernel), by index
    while True:
        message = _receive(requests)
        if message is None or message[0] == "exit":
            return
        if message[0] == "ping":
            _send(channel, ("ok", platform.machine()))
            continue
        try:
            if message[0] == "keep":
                kept.append(backend.keep(*message[1:]))
                result = len(kept) - 1
            elif message[0] == "call_kept":
                _, name, index, slots, inputs, out_specs = message
                result = backend.call_kept(name, kept[index], slots, inputs, out_specs)
            else:
                result = backend.call(*message[1:])
            _send(channel, ("ok", result))
        except Exception as err:  # noqa: BLE001 - reported to the caller, worker stays up
            _send(channel, ("error", f"{type(err).__name__}: {err}"))


# -- entry point -----------------------------------------------------------------------------------

def _cpuinfo(keys: tuple[str, ...]) -> list[str]:
    """Values of the /proc/cpuinfo lines with these keys (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    values = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            values.append(value.strip())
    return values


def cpu_features() -> set[str]:
    return {flag for value in _cpuinfo(("flags", "Features")) for flag in value.split()}


def cpu_model() -> str:
    """The CPU's model name as the OS reports it ("" when it does not)."""
    return next(iter(_cpuinfo(("model name",))), "")


def native_ok(target: dict[str, Any]) -> tuple[bool, str]:
    """Can this machine run the target's code directly? (ok, reason when not)"""
    if platform.machine() != target["isa"]:
        return False, f"this machine is {platform.machine()}, the library is {target['isa']}"
    missing = sorted(set(target.get("cpu_features", ())) - cpu_features())
    if missing:
        return False, f"this CPU lacks {', '.join(missing)}"
    return True, ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise LoaderError(f"no manifest.json in {directory} (build it with: python -m compiler build)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise LoaderError(f"{path} is not valid JSON: {err}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise LoaderError(f"{path} has schema version {manifest.get('schema_version')!r}; "
                          f"this loader reads version {SCHEMA_VERSION}")
    for name, digest in manifest["artifacts"].items():
        artifact = directory / name
        if not artifact.is_file():
            raise LoaderError(f"artifact {artifact} named in the manifest is missing")
        if sha256_of(artifact) != digest:
            raise LoaderError(f"artifact {artifact} does not match the sha256 in the manifest; refusing to load it")
    return manifest


def load(directory: str | os.PathLike, *, emulate: bool | None = None) -> Library:
    """Load a build directory. emulate=None runs natively when this machine can, else under the
    target's emulator; True forces the emulator; False refuses to emulate."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    target = manifest["target"]
    if target.get("gpu"):  # SPIR-V kernels: the Vulkan dispatcher replays each kernel's launches
        from compiler.vulkan_runtime import VulkanBackend

        backend = VulkanBackend(directory, manifest)
        if emulate is False and backend.mode == "emulated":
            backend.close()
            raise LoaderError(f"the only Vulkan device here is a CPU implementation ({backend.device_name}); "
                              "emulate=False refuses it")
        return Library(directory, manifest, backend)
    library = (directory / manifest["library"]).resolve()
    if target.get("runner"):  # no Python on the device: the build's runner serves the kernels
        runner = (directory / manifest.get("runner", "runner")).resolve()
        on_device = platform.machine() == target["isa"] and not emulate
        if not on_device and not target.get("emulator"):
            why = target.get("compile_only") or f"no emulator runs {target['llvm'].get('mcpu', target['isa'])} code"
            raise LoaderError(f"{target['name']} builds are compile-only here: {why}")
        return Library(directory, manifest, RunnerBackend(runner, None if on_device else target["emulator"]))
    ok, reason = native_ok(target)
    if emulate is None:
        emulate = not ok
    if not emulate:
        if not ok:
            raise LoaderError(f"cannot run {target['name']} natively: {reason}")
        return Library(directory, manifest, NativeBackend(library))
    if not target.get("emulator"):
        raise LoaderError(f"target {target['name']} has no emulator here"
                          + (f" and cannot run natively: {reason}" if reason else ""))
    return Library(directory, manifest, EmulatedBackend(library, target["isa"], target["emulator"]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(sys.argv[2])
    else:
        sys.exit("usage: python -m compiler.loader --serve LIBRARY")
