"""The loader's Vulkan driver: SPIR-V kernels called with numpy arrays.

A build for a Vulkan target has no host library: its manifest holds, per kernel variant, the
launches TVM's host code would have made (compiler/backends/vulkan/spirv.py). This driver replays
them on a vulkan_device.Device: one pipeline per shader (cached), push constants, dispatch with
barriers between launches, read-back; KV caches and weights stay resident in device memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compiler.runtime.drivers.vulkan_device import Buffer, Device, Pipeline, VulkanError
from compiler.runtime.errors import LoaderError
from compiler.runtime.launch import evaluate
from compiler.runtime.manifest import shader_path


class VulkanDriver:
    """The loader's driver for Vulkan builds (the same call/keep/call_kept interface as the others)."""

    def __init__(self, directory: Path, manifest: dict[str, Any], device: Device | None = None):
        """`device`: share an open device (the tuner's runner does); closing then leaves it open."""
        self.directory = directory
        self.plans = {v["symbol"]: v["vulkan"] for k in manifest["kernels"].values() for v in k["variants"]}
        self._shader_files = {launch["shader"]: shader_path(directory, manifest, launch["shader"])
                              for plan in self.plans.values() for launch in plan["launches"]}
        self._owns_device = device is None
        self.device = device or Device()
        self.mode = "emulated" if self.device.is_cpu else "native"
        self.device_name = self.device.name
        self._pipelines: dict[str, Pipeline] = {}
        self._free: list[Buffer] = []
        self._resident: list[Buffer] = []
        self._shared: list[Buffer] = []  # DeviceArray storage, read in place
        self.uploaded_bytes = 0  # inputs copied into device buffers, over all calls
        self._checked: set[str] = set()
        vk = self.device.vk
        self._fence = vk.vkCreateFence(self.device.device, vk.VkFenceCreateInfo(), None)
        self._command = vk.vkAllocateCommandBuffers(self.device.device, vk.VkCommandBufferAllocateInfo(
            commandPool=self.device.pool, level=vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY, commandBufferCount=1))[0]
        self._descriptors = None
        self._descriptor_capacity = 0

    # -- buffers ---------------------------------------------------------------------------------
    def _take(self, nbytes: int) -> Buffer:
        fits = [b for b in self._free if b.capacity >= nbytes]
        if fits:
            best = min(fits, key=lambda b: b.capacity)
            self._free.remove(best)
            best.nbytes = nbytes
            return best
        return Buffer(self.device, 1 << max(4, (max(nbytes, 1) - 1).bit_length()))

    def _give(self, buffers) -> None:
        self._free.extend(buffers)

    def _pipeline(self, launch: dict) -> Pipeline:
        name = launch["shader"]
        if name not in self._pipelines:
            spirv = self._shader_files[name].read_bytes()
            self._pipelines[name] = Pipeline(self.device, spirv, len(launch["buffers"]), 4 * len(launch["push_dtypes"]))
        return self._pipelines[name]

    @property
    def closed(self) -> bool:
        return self.device is None

    def allocate(self, shape, dtype) -> np.ndarray:
        """DeviceArray storage: device memory (host-visible), seen as a numpy array."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buffer = Buffer(self.device, nbytes)
        self._shared.append(buffer)
        return buffer.mapped[:nbytes].view(dtype).reshape(shape)

    def _in_place(self, array: np.ndarray):
        """(buffer, byte offset, byte extent) when `array` views DeviceArray storage at an offset a
        descriptor may start at, else None (the array is then copied)."""
        if not self._shared or array.size == 0 or min(array.strides, default=1) <= 0:
            return None
        address = array.__array_interface__["data"][0]
        extent = sum((n - 1) * s for n, s in zip(array.shape, array.strides)) + array.itemsize
        align = max(4, self.device.limits["minStorageBufferOffsetAlignment"])
        for buffer in self._shared:
            offset = address - buffer.mapped.__array_interface__["data"][0]
            if 0 <= offset < buffer.capacity:
                return (buffer, offset, extent) if offset % align == 0 and offset + extent <= buffer.capacity else None
        return None

    # -- calls -----------------------------------------------------------------------------------
    def keep(self, count: int, resident: dict[int, np.ndarray]):
        kept = {}
        for position, array in resident.items():
            buffer = Buffer(self.device, array.nbytes)
            buffer.write(array)
            self._resident.append(buffer)
            kept[position] = (buffer, array.shape, array.strides, array.dtype)
        return kept

    def call(self, name: str, inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        return self.call_kept(name, {}, list(range(len(inputs))), inputs, out_specs)

    def call_kept(self, name: str, kept, slots: list[int], inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        plan = self.plans[name]
        if name not in self._checked:
            self.device.check(name, plan)
            self._checked.add(name)
        count = len(kept) + len(inputs)
        # per argument: (buffer, shape, element strides, byte offset, byte extent)
        views: list = [None] * (count + len(out_specs))
        taken = []
        for position, (buffer, shape, strides, dtype) in kept.items():
            views[position] = (buffer, shape, [s // dtype.itemsize for s in strides], 0, buffer.nbytes)
        for position, array in zip(slots, inputs):
            placed = self._in_place(array)
            if placed is not None:
                buffer, offset, extent = placed
                views[position] = (buffer, array.shape, [s // array.itemsize for s in array.strides], offset, extent)
                continue
            array = np.ascontiguousarray(array)
            buffer = self._take(array.nbytes)
            buffer.write(array)
            self.uploaded_bytes += array.nbytes
            taken.append(buffer)
            views[position] = (buffer, array.shape, [s // array.itemsize for s in array.strides], 0, buffer.nbytes)
        for index, (shape, dtype) in enumerate(out_specs):
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            buffer = self._take(nbytes)
            taken.append(buffer)
            strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
            views[count + index] = (buffer, shape, strides, 0, buffer.nbytes)
        env = {}
        for var, (kind, index, axis) in plan["sources"].items():
            env[var] = int(views[index][1][axis] if kind == "shape" else views[index][2][axis])
        for var, expr in plan["lets"]:
            env[var] = evaluate(expr, env)
        temps = []
        for temp in plan["temps"]:
            temps.append(self._take(evaluate(temp["elements"], env) * np.dtype(temp["dtype"]).itemsize))
        taken += temps
        try:
            self._run(plan, views, temps, env)
            return [views[count + i][0].read(shape, dtype) for i, (shape, dtype) in enumerate(out_specs)]
        finally:
            self._give(taken)

    def _run(self, plan, views, temps, env) -> None:
        vk = self.device.vk
        dev = self.device.device
        launches = plan["launches"]
        limit = self.device.limits["maxComputeWorkGroupCount"]
        widths = [evaluate(launch["grid"][0], env) for launch in launches]
        grids = [_dispatch_grid(launch, width, env, limit) for launch, width in zip(launches, widths)]
        self._descriptor_pool(len(launches), sum(len(l["buffers"]) for l in launches))
        pipelines = [self._pipeline(launch) for launch in launches]
        sets = vk.vkAllocateDescriptorSets(dev, vk.VkDescriptorSetAllocateInfo(
            descriptorPool=self._descriptors, descriptorSetCount=len(launches),
            pSetLayouts=[p.set_layout for p in pipelines])) if launches else []
        writes, infos = [], []
        for launch, descriptor in zip(launches, sets):
            for binding, (kind, index) in enumerate(launch["buffers"]):
                if kind == "arg":
                    buffer, _, _, offset, size = views[index]
                else:
                    buffer, offset, size = temps[index], 0, temps[index].nbytes
                info = vk.VkDescriptorBufferInfo(buffer=buffer.handle, offset=offset, range=max(4, size + (-size) % 4))
                infos.append(info)
                writes.append(vk.VkWriteDescriptorSet(dstSet=descriptor, dstBinding=binding, descriptorCount=1,
                                                      descriptorType=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, pBufferInfo=[info]))
        if writes:
            vk.vkUpdateDescriptorSets(dev, len(writes), writes, 0, None)
        cmd = self._command
        vk.vkResetCommandBuffer(cmd, 0)
        vk.vkBeginCommandBuffer(cmd, vk.VkCommandBufferBeginInfo(flags=vk.VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT))
        barrier = vk.VkMemoryBarrier(srcAccessMask=vk.VK_ACCESS_SHADER_WRITE_BIT,
                                     dstAccessMask=vk.VK_ACCESS_SHADER_READ_BIT | vk.VK_ACCESS_SHADER_WRITE_BIT)
        for step, (launch, pipeline, descriptor, grid) in enumerate(zip(launches, pipelines, sets, grids)):
            if min(grid) <= 0:
                continue
            if step:
                vk.vkCmdPipelineBarrier(cmd, vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                        0, 1, [barrier], 0, None, 0, None)
            vk.vkCmdBindPipeline(cmd, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.handle)
            vk.vkCmdBindDescriptorSets(cmd, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout, 0, 1, [descriptor], 0, None)
            if launch["push_dtypes"]:
                values = [evaluate(p, env) for p in launch["push"]] + ([widths[step]] if launch["fold_x"] else [])
                blob = vk.ffi.new("char[]", _push_words(values, launch["push_dtypes"]).tobytes())
                vk.vkCmdPushConstants(cmd, pipeline.layout, vk.VK_SHADER_STAGE_COMPUTE_BIT, 0, pipeline.push_bytes, blob)
            vk.vkCmdDispatch(cmd, *grid)
        vk.vkEndCommandBuffer(cmd)
        vk.vkResetFences(dev, 1, [self._fence])
        vk.vkQueueSubmit(self.device.queue, 1, [vk.VkSubmitInfo(commandBufferCount=1, pCommandBuffers=[cmd])], self._fence)
        vk.vkWaitForFences(dev, 1, [self._fence], vk.VK_TRUE, 2**63 - 1)

    def _descriptor_pool(self, sets: int, descriptors: int) -> None:
        vk = self.device.vk
        dev = self.device.device
        if self._descriptors is not None and sets <= self._descriptor_capacity and descriptors <= 8 * self._descriptor_capacity:
            vk.vkResetDescriptorPool(dev, self._descriptors, 0)
            return
        if self._descriptors is not None:
            vk.vkDestroyDescriptorPool(dev, self._descriptors, None)
        capacity = max(sets, (descriptors + 7) // 8, 8)
        size = vk.VkDescriptorPoolSize(type=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount=8 * capacity)
        self._descriptors = vk.vkCreateDescriptorPool(dev, vk.VkDescriptorPoolCreateInfo(
            maxSets=capacity, poolSizeCount=1, pPoolSizes=[size]), None)
        self._descriptor_capacity = capacity

    def close(self) -> None:
        if getattr(self, "device", None) is None:
            return
        vk, dev = self.device.vk, self.device.device
        vk.vkDeviceWaitIdle(dev)
        for buffer in self._free + self._resident + self._shared:
            buffer.release(self.device)
        self._free.clear()
        self._resident.clear()
        self._shared.clear()
        for pipeline in self._pipelines.values():
            vk.vkDestroyPipeline(dev, pipeline.handle, None)
            vk.vkDestroyPipelineLayout(dev, pipeline.layout, None)
            vk.vkDestroyDescriptorSetLayout(dev, pipeline.set_layout, None)
            vk.vkDestroyShaderModule(dev, pipeline.module, None)
        self._pipelines.clear()
        if self._descriptors is not None:
            vk.vkDestroyDescriptorPool(dev, self._descriptors, None)
        vk.vkDestroyFence(dev, self._fence, None)
        vk.vkFreeCommandBuffers(dev, self.device.pool, 1, [self._command])
        if self._owns_device:
            self.device.close()
        self.device = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the binding may be gone already
            pass


def _dispatch_grid(launch: dict, width: int, env: dict, limit: list[int]) -> list[int]:
    """Workgroups to dispatch: the kernel's grid, with a too-wide x folded into rows if the shader allows."""
    grid = [width] + [evaluate(g, env) for g in launch["grid"][1:]]
    if launch["fold_x"] and width > limit[0]:
        grid = [limit[0], -(-width // limit[0]), 1]
    if any(g > m for g, m in zip(grid, limit)):
        raise VulkanError(f"{launch['shader']}: grid {grid} exceeds this device's {limit}")
    return grid


def _push_words(values, dtypes) -> np.ndarray:
    """Push-constant values as 32-bit words (a value out of its dtype's range raises, never wraps)."""
    words = np.zeros(len(values), dtype=np.uint32)
    for i, (value, dtype) in enumerate(zip(values, dtypes)):
        words[i] = np.array(value, dtype=dtype).view(np.uint32)
    return words


def open_driver(directory: Path, manifest: dict[str, Any], emulate: bool | None) -> VulkanDriver:
    """The dispatcher on this machine's Vulkan device; emulate=False refuses a CPU implementation."""
    driver = VulkanDriver(directory, manifest)
    if emulate is False and driver.mode == "emulated":
        driver.close()
        raise LoaderError(f"the only Vulkan device here is a CPU implementation ({driver.device_name}); "
                          "emulate=False refuses it")
    return driver
