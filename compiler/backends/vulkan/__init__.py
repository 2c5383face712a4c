"""The Vulkan backend: TVM lowers the scheduled kernels for the GPU, our codegen prints each device
kernel as GLSL and glslang makes SPIR-V (spirv.py, glsl.py); the host side becomes launch plans in
the manifest, which the runtime's Vulkan driver replays. Candidates are timed through that driver
on this machine's Vulkan device, or on a phone running `compiler rpc-server` (tuning.py)."""

from __future__ import annotations

from pathlib import Path

from compiler.backends.base import Backend, RemoteMeasurement, device_slug
from compiler.backends.vulkan import tuning
from compiler.toolchain import ToolchainError


class VulkanBackend(Backend, RemoteMeasurement):
    name = "vulkan"
    measure_func = tuning.MEASURE_FUNC
    bench_refusal = ("bench races CPU kernels against CPU contenders; Vulkan kernels are timed by `tune` through "
                     "the Vulkan dispatcher (on lavapipe here, which says nothing about a phone)")
    device_variable = "EKC_VULKAN_DEVICE"

    def toolchain(self, target, *, cc=None, ndk=None, android_api=28):
        if cc or ndk:
            raise ToolchainError(f"{target.name} builds SPIR-V shaders: --cc/--ndk do not apply")
        return None  # glslang makes the SPIR-V

    def build(self, funcs, kernels, target, out_dir, toolchain, progress) -> list[str]:
        """SPIR-V shaders under out_dir/shaders and each variant's launches in its manifest entry."""
        from compiler.backends.vulkan import spirv

        progress(f"generating SPIR-V for {len(funcs)} functions ({target.name}, Vulkan {target.gpu.api_version})")
        plans, shader_files = spirv.build(funcs, target.tvm_target(), target.gpu.api_version, out_dir,
                                          progress=progress)
        for entry in kernels.values():
            for variant in entry["variants"]:
                variant["vulkan"] = plans[variant["symbol"]]
        return shader_files

    def describe_tools(self, target, toolchain) -> str:
        from compiler.backends.vulkan import spirv

        return spirv.describe_tools()

    def candidate_compiler(self, target, work_dir: str):
        return tuning.spirv_candidate(target, work_dir)

    def tuning_runner(self, target, tracker, rpc_timeout, progress):
        if tracker is None:
            progress(tuning.describe_local())
            return tuning.runner()
        progress(tracker.describe(self.measure_func, rpc_timeout))
        return tracker.measuring_runner(timeout_sec=rpc_timeout, functions=self.measure_func)

    def race(self, modules, task, target, rounds):
        return tuning.race(modules, task, target, rounds)

    def host_device(self, target) -> str:
        """The Vulkan device's name ("llvmpipe-llvm-15-0-6-256-bits")."""
        from compiler.runtime.drivers.vulkan_device import Device, VulkanError

        try:
            device = Device()
        except VulkanError:
            return "no-vulkan-device"  # building needs no device; its records simply are not found
        name = device.name
        device.close()
        return device_slug(name)

    def time_candidate(self, folder: Path, args_info: list) -> list[float]:
        from compiler.runtime.drivers.vulkan_device import Device

        device = Device()  # per session: the RPC server forks a process per session
        try:
            return tuning.time_candidate(folder, args_info, device)
        finally:
            device.close()

    def describe_measurement(self) -> str:
        return tuning.describe_local()


BACKEND = VulkanBackend()
