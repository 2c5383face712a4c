"""Kernel, BoundKernel and Library: the manifest's kernels as callables over a driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compiler.runtime.checks import (as_array, bind_shape, bucket_matches, check_dims_at_least, check_layout,
                                     check_names)
from compiler.runtime.errors import LoaderError
from compiler.runtime.memory import ALIGNMENT, DeviceArray, aligned, empty
from compiler.runtime.packing import apply_step


class OpenDriver:
    """A library's driver as its kernels, bound kernels and device arrays reach it: each call into
    it checks first that the library is still open. The drivers fail in their own ways once closed
    (the native one not at all, Vulkan with AttributeError, the runner writing to a closed pipe);
    checked here, every backend raises the same LoaderError. Other attributes (mode, the Vulkan
    driver's counters) read through to the driver."""

    def __init__(self, driver, directory: Path):
        self.driver = driver
        self.closed = False
        self._directory = directory

    def __getattr__(self, name: str):
        if name == "driver":  # not set yet (a half-made object): no recursion
            raise AttributeError(name)
        return getattr(self.driver, name)

    def _open(self):
        if self.closed:
            raise LoaderError(f"the library {self._directory} is closed")
        return self.driver

    def call(self, name: str, inputs, out_specs):
        return self._open().call(name, inputs, out_specs)

    def keep(self, count: int, resident):
        return self._open().keep(count, resident)

    def call_kept(self, name: str, kept, slots, inputs, out_specs):
        return self._open().call_kept(name, kept, slots, inputs, out_specs)

    def prepare_kept(self, name: str, kept, slots, inputs, outputs):
        """A function that makes this call again on these arrays, writing `outputs`: the driver's
        own where it has one (native: the converted argument list, kept), else a call and a copy."""
        prepare = getattr(self._open(), "prepare_kept", None)
        if prepare is not None:
            run = prepare(name, kept, slots, inputs, outputs)
        else:
            out_specs = [(o.shape, o.dtype) for o in outputs]

            def run():
                results = self.call_kept(name, kept, slots, inputs, out_specs)
                for out, result in zip(outputs, results if isinstance(results, (list, tuple)) else [results]):
                    np.copyto(out, result)
        return run

    def allocate(self, shape, dtype) -> np.ndarray:
        """DeviceArray storage: the driver's (Vulkan: device memory) or an aligned host array."""
        allocate = getattr(self._open(), "allocate", None)
        return allocate(shape, dtype) if allocate else empty(shape, dtype)

    def close(self) -> None:
        """Close the driver once; later calls (and a second close) do nothing."""
        if not self.closed:
            self.closed = True
            self.driver.close()


class Kernel:
    """One kernel: `.spec` is its manifest entry; call it with keyword arrays."""

    def __init__(self, name: str, entry: dict[str, Any], driver):
        self.name = name
        self.spec = entry
        self._driver = driver
        self._inputs = [a for a in entry["args"] if a["role"] != "output"]
        self._outputs = [a for a in entry["args"] if a["role"] == "output"]
        # Per-call checks read these: the manifest's strings turned into numpy dtypes once.
        self._input_names = {a["name"] for a in self._inputs}
        self._input_checks = [(a["name"], np.dtype(a["dtype"]), a["shape"], a.get("strided", False))
                              for a in self._inputs]
        self._at_least = entry.get("dims_at_least", {})

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
        check_names(self.name, self.logical_weights, logical)
        packed = {}
        for arg in weights:
            name = arg.get("source") or arg["name"]
            array = as_array(self.name, name, logical[name])
            bind_shape(self.name, name, array, arg.get("logical_shape", arg["shape"]),
                        arg.get("logical_dtype", arg["dtype"]), {})
            for step in arg.get("pack", ()):
                array = apply_step(name, array, step, logical)
            packed[arg["name"]] = aligned(np.ascontiguousarray(array, dtype=arg["dtype"]))
        return packed

    def bind(self, **weights: np.ndarray) -> "BoundKernel":
        """This kernel with its weights (as `pack` returns them) checked and handed to the driver
        once (an emulated worker keeps them): the result takes only the runtime inputs per call."""
        return BoundKernel(self, weights)

    def __call__(self, **inputs: Any):
        if inputs.keys() != self._input_names:
            check_names(self.name, [a["name"] for a in self._inputs], inputs)
        sizes: dict[str, int] = {}
        arrays = []
        for name, dtype, shape, strided in self._input_checks:
            array = as_array(self.name, name, inputs[name])
            bind_shape(self.name, name, array, shape, dtype, sizes)
            if not array.flags.c_contiguous:
                check_layout(self.name, name, array, strided)
            arrays.append(array)  # the driver copies it only if its data is misaligned
        check_dims_at_least(self.name, sizes, self._at_least)
        out_specs = [(tuple(sizes[d] if isinstance(d, str) else d for d in a["shape"]), a["dtype"])
                     for a in self._outputs]
        outputs = self._driver.call(self.variant_for(sizes)["symbol"], arrays, out_specs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class BoundKernel:
    """A kernel with resident weights: call it with the activations (role "input") only."""

    def __init__(self, kernel: Kernel, weights: dict[str, np.ndarray]):
        args = kernel._inputs
        expected = [a["name"] for a in args if a["role"] == "weight"]
        check_names(kernel.name, expected, weights)
        resident = {}
        for position, arg in enumerate(args):
            if arg["role"] == "weight":
                array = as_array(kernel.name, arg["name"], weights[arg["name"]])
                bind_shape(kernel.name, arg["name"], array, arg["shape"], np.dtype(arg["dtype"]), {})
                resident[position] = aligned(np.ascontiguousarray(array))
        self.kernel = kernel
        self.weights = {args[p]["name"]: a for p, a in resident.items()}
        self._checks = [(p, *check) for p, check in enumerate(kernel._input_checks) if p not in resident]
        self._names = {check[1] for check in self._checks}
        self._slots = [check[0] for check in self._checks]
        self._plans: dict[tuple, tuple] = {}
        self._driver = kernel._driver
        self._kept = self._driver.keep(len(args), resident)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.weights.values())

    def __call__(self, **inputs: Any):
        kernel = self.kernel
        if inputs.keys() != self._names:
            check_names(kernel.name, sorted(self._names), inputs)
        arrays = [as_array(kernel.name, check[1], inputs[check[1]]) for check in self._checks]
        # Calls repeat a few shapes (decode: always M=1): checked once per distinct set of shapes.
        key = tuple(a.shape for a in arrays)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 256:  # many prompt lengths: keep the cache small
                self._plans.clear()
            plan = self._plans[key] = self._plan(arrays)
        symbol, out_specs = plan
        self._check_arrays(arrays)
        outputs = self._driver.call_kept(symbol, self._kept, self._slots, arrays, out_specs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def prepare(self, outputs=None, **inputs: Any) -> "PreparedCall":
        """This call on these very arrays, checked once: the result runs it again, reading the
        inputs' current contents and writing into `outputs` (one array, or one per output; None:
        new ones, in `.outputs`), with none of the per-call checks, conversions and allocations
        (~10 us a call natively, where a decode step makes ~150 calls of tens of microseconds).
        The arrays must stay alive and unchanged in shape and memory; all of them 64-byte aligned
        (`runtime.empty` gives such arrays), outputs C-contiguous and writeable."""
        kernel = self.kernel
        if inputs.keys() != self._names:
            check_names(kernel.name, sorted(self._names), inputs)
        arrays = [as_array(kernel.name, check[1], inputs[check[1]]) for check in self._checks]
        symbol, out_specs = self._plan(arrays)
        self._check_arrays(arrays)
        for check, array in zip(self._checks, arrays):
            _check_aligned(kernel.name, check[1], array)
        if outputs is None:
            outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        names = [a["name"] for a in kernel._outputs]
        if len(outputs) != len(names):
            raise ValueError(f"{kernel.name}: prepare takes {len(names)} output arrays ({', '.join(names)}), "
                             f"got {len(outputs)}")
        for name, out, (shape, dtype) in zip(names, outputs, out_specs):
            if not isinstance(out, np.ndarray):
                raise ValueError(f"{kernel.name}: output {name!r} must be a numpy array, got {type(out).__name__}")
            if out.shape != tuple(shape) or out.dtype != np.dtype(dtype):
                raise ValueError(f"{kernel.name}: output {name!r} must be {np.dtype(dtype)} {tuple(shape)} for these "
                                 f"inputs, got {out.dtype} {out.shape}")
            if not (out.flags.c_contiguous and out.flags.writeable):
                raise ValueError(f"{kernel.name}: output {name!r} must be C-contiguous and writeable")
            _check_aligned(kernel.name, name, out)
            if any(np.may_share_memory(out, array) for array in arrays):  # kernels assume no aliasing
                raise ValueError(f"{kernel.name}: output {name!r} overlaps an input; give it its own array")
        return PreparedCall(kernel.name, self._driver.prepare_kept(symbol, self._kept, self._slots, arrays, outputs),
                            self._driver, outputs)

    def _check_arrays(self, arrays: list[np.ndarray]) -> None:
        """Each input's dtype and layout (a cached plan has checked only its shapes)."""
        for (_, name, dtype, _, strided), array in zip(self._checks, arrays):
            if array.dtype != dtype:
                raise ValueError(f"{self.kernel.name}: argument {name!r} must have dtype {dtype}, got {array.dtype}")
            if not array.flags.c_contiguous:
                check_layout(self.kernel.name, name, array, strided)

    def _plan(self, arrays: list[np.ndarray]):
        """(variant symbol, output shapes and dtypes) for these input shapes, after checking them."""
        kernel = self.kernel
        sizes: dict[str, int] = {}
        for (_, name, dtype, shape, _), array in zip(self._checks, arrays):
            bind_shape(kernel.name, name, array, shape, dtype, sizes)
        check_dims_at_least(kernel.name, sizes, kernel._at_least)
        out_specs = [(tuple(sizes[d] if isinstance(d, str) else d for d in a["shape"]), a["dtype"])
                     for a in kernel._outputs]
        return kernel.variant_for(sizes)["symbol"], out_specs


def _check_aligned(kernel: str, name: str, array: np.ndarray) -> None:
    """A prepared call hands the array's memory to the kernel as is: a misaligned one would need
    the copy a plain call makes, and the call would then read or write the copy."""
    if array.size and array.__array_interface__["data"][0] % ALIGNMENT:
        raise ValueError(f"{kernel}: argument {name!r} is not {ALIGNMENT}-byte aligned, as a prepared call "
                         f"needs (allocate it with compiler.runtime.empty)")


class PreparedCall:
    """BoundKernel.prepare's result: call it (no arguments) to run the kernel on its arrays again;
    `.outputs` are the arrays it writes."""

    def __init__(self, name: str, run, driver: OpenDriver, outputs: list[np.ndarray]):
        self.name, self._run, self._driver, self.outputs = name, run, driver, outputs

    def __call__(self) -> None:
        if self._driver.closed:
            raise LoaderError(f"{self.name}: the library is closed")
        self._run()


class Library:
    """A built library: `lib.kernels` lists names; `lib[name]` or `lib.<name>` gives a Kernel."""

    def __init__(self, directory: Path, manifest: dict[str, Any], driver):
        self.directory = directory
        self.manifest = manifest
        self.target = manifest["target"]
        self.mode = driver.mode
        self._driver = driver = OpenDriver(driver, directory)
        self._kernels = {name: Kernel(name, entry, driver) for name, entry in manifest["kernels"].items()}

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
        """An array these kernels read in place (see DeviceArray), e.g. a KV cache. Shape: integers
        >= 0; dtype: an integer or float dtype (else ValueError)."""
        return DeviceArray(self._driver, shape, dtype)

    def close(self) -> None:
        """Release the driver. Afterwards `pack` still works (plain numpy), but calling a kernel or
        a bound kernel, `bind`, `device_array` and any use of a device array raise LoaderError.
        Closing twice is harmless."""
        self._driver.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

