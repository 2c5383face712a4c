"""The loader's Vulkan dispatcher: SPIR-V kernels called with numpy arrays, through PyPI `vulkan`.

A build for a Vulkan target has no host library: its manifest holds, per kernel variant, the
launches TVM's host code would have made (compiler/codegen/vulkan.py). This module replays them:
device and compute queue, host-visible storage buffers, one pipeline per shader (cached), push
constants, dispatch with barriers between launches, read-back. It never imports TVM.

Two traps of the cffi binding are handled here: the entry-point name must outlive pipeline
creation (kept in `self._entry`), and VK_WHOLE_SIZE cannot be passed as a range (byte sizes are).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from compiler.loader import LoaderError

# Features a shader can need (glsl.Shader.features) -> the Vulkan feature struct that reports them.
_FEATURE_STRUCTS = {
    "storageBuffer8BitAccess": "VkPhysicalDevice8BitStorageFeatures",
    "storageBuffer16BitAccess": "VkPhysicalDevice16BitStorageFeatures",
    "shaderInt8": "VkPhysicalDeviceShaderFloat16Int8Features",
    "shaderFloat16": "VkPhysicalDeviceShaderFloat16Int8Features",
    "shaderIntegerDotProduct": "VkPhysicalDeviceShaderIntegerDotProductFeatures",
}
_CORE_FEATURES = ("shaderInt16", "shaderInt64", "shaderFloat64")


class VulkanError(LoaderError):
    pass


def evaluate(expr, env: dict[str, int]) -> int:
    """A host expression from the manifest: ints, names, [op, a, b] (floor // and %, "/t" and "%t"
    truncating, "?" select)."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        return env[expr]
    op, *args = expr
    if op == "?":
        return evaluate(args[1], env) if evaluate(args[0], env) else evaluate(args[2], env)
    a, b = (evaluate(x, env) for x in args)
    if op == "/t":
        return int(a / b) if b else 0
    if op == "%t":
        return a - int(a / b) * b
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b,
            "%": lambda: a % b, "min": lambda: min(a, b), "max": lambda: max(a, b),
            "<": lambda: int(a < b), "<=": lambda: int(a <= b), ">": lambda: int(a > b),
            ">=": lambda: int(a >= b), "==": lambda: int(a == b), "!=": lambda: int(a != b),
            ">>": lambda: a >> b, "<<": lambda: a << b, "&": lambda: a & b}[op]()


def _vk():
    try:
        import vulkan as vk
    except (ImportError, OSError) as err:
        raise VulkanError(f"the Vulkan dispatcher needs PyPI `vulkan` and a Vulkan loader "
                          f"(Debian libvulkan1; lavapipe: mesa-vulkan-drivers): {err}") from None
    return vk


class Device:
    """One Vulkan physical device and a compute queue, with every optional feature it has enabled."""

    def __init__(self, index: int | None = None):
        vk = self.vk = _vk()
        app = vk.VkApplicationInfo(pApplicationName="ekc", applicationVersion=1, pEngineName="ekc",
                                   engineVersion=1, apiVersion=vk.VK_MAKE_VERSION(1, 2, 0))
        try:
            self.instance = vk.vkCreateInstance(vk.VkInstanceCreateInfo(pApplicationInfo=app), None)
            physical = vk.vkEnumeratePhysicalDevices(self.instance)
        except vk.VkError as err:
            raise VulkanError(f"no Vulkan driver answered ({type(err).__name__}); install a GPU driver, "
                              "or Mesa's lavapipe (Debian mesa-vulkan-drivers)") from None
        if not physical:
            raise VulkanError("Vulkan found no device (for a CPU driver: apt-get install mesa-vulkan-drivers)")
        if index is None:
            index = int(os.environ.get("EKC_VULKAN_DEVICE", -1))
        if index < 0:  # prefer a GPU over a CPU implementation such as lavapipe
            kinds = [vk.vkGetPhysicalDeviceProperties(p).deviceType for p in physical]
            index = min(range(len(physical)), key=lambda i: kinds[i] == vk.VK_PHYSICAL_DEVICE_TYPE_CPU)
        if index >= len(physical):
            raise VulkanError(f"Vulkan device {index} requested; this machine has {len(physical)}")
        self.physical = physical[index]
        props = vk.vkGetPhysicalDeviceProperties(self.physical)
        self.name = vk.ffi.string(props.deviceName).decode() if not isinstance(props.deviceName, str) else props.deviceName
        self.is_cpu = props.deviceType == vk.VK_PHYSICAL_DEVICE_TYPE_CPU
        limits = props.limits
        self.limits = {
            "maxComputeSharedMemorySize": limits.maxComputeSharedMemorySize,
            "maxComputeWorkGroupInvocations": limits.maxComputeWorkGroupInvocations,
            "maxComputeWorkGroupSize": list(limits.maxComputeWorkGroupSize),
            "maxComputeWorkGroupCount": list(limits.maxComputeWorkGroupCount),
            "maxPushConstantsSize": limits.maxPushConstantsSize,
            "maxStorageBufferRange": limits.maxStorageBufferRange,
            "minStorageBufferOffsetAlignment": limits.minStorageBufferOffsetAlignment,
        }
        self.features = self._query_features()
        family = next((i for i, q in enumerate(vk.vkGetPhysicalDeviceQueueFamilyProperties(self.physical))
                       if q.queueFlags & vk.VK_QUEUE_COMPUTE_BIT), None)
        if family is None:
            raise VulkanError(f"{self.name} has no compute queue")
        chain, self._chain = self._feature_chain(enable=self.features)  # kept alive with the device
        queue_info = vk.VkDeviceQueueCreateInfo(queueFamilyIndex=family, queueCount=1, pQueuePriorities=[1.0])
        self.device = vk.vkCreateDevice(self.physical, vk.VkDeviceCreateInfo(
            pNext=chain, queueCreateInfoCount=1, pQueueCreateInfos=[queue_info]), None)
        self.queue = vk.vkGetDeviceQueue(self.device, family, 0)
        self.pool = vk.vkCreateCommandPool(self.device, vk.VkCommandPoolCreateInfo(
            queueFamilyIndex=family, flags=vk.VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT), None)
        memory = vk.vkGetPhysicalDeviceMemoryProperties(self.physical)
        wanted = vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
        self._memory_types = [i for i in range(memory.memoryTypeCount)
                              if memory.memoryTypes[i].propertyFlags & wanted == wanted]
        if not self._memory_types:
            raise VulkanError(f"{self.name} has no host-visible coherent memory (needed for numpy in/out)")

    def _feature_chain(self, enable: set[str] | None = None):
        """(VkPhysicalDeviceFeatures2, the structs chained to it): all zero to query, or with the
        features in `enable` set to create the device."""
        vk = self.vk
        structs, previous = {}, vk.ffi.NULL
        for struct in dict.fromkeys(_FEATURE_STRUCTS.values()):
            fields = {f: vk.VK_TRUE for f, s in _FEATURE_STRUCTS.items() if s == struct and enable and f in enable}
            structs[struct] = getattr(vk, struct)(pNext=previous, **fields)
            previous = structs[struct]
        core = {f: vk.VK_TRUE for f in _CORE_FEATURES if enable and f in enable}
        top = vk.VkPhysicalDeviceFeatures2(pNext=previous, features=vk.VkPhysicalDeviceFeatures(**core))
        return top, structs

    def _query_features(self) -> set[str]:
        vk = self.vk
        top, structs = self._feature_chain()
        vk.vkGetPhysicalDeviceFeatures2(self.physical, top)
        have = {f for f, s in _FEATURE_STRUCTS.items() if getattr(structs[s], f)}
        have |= {f for f in _CORE_FEATURES if getattr(top.features, f)}
        return have

    def close(self) -> None:
        vk = self.vk
        vk.vkDestroyCommandPool(self.device, self.pool, None)
        vk.vkDestroyDevice(self.device, None)
        vk.vkDestroyInstance(self.instance, None)

    def check(self, kernel: str, plan: dict[str, Any]) -> None:
        """Refuse, naming what is missing, a kernel whose features or limits this device lacks."""
        missing = sorted(set(plan.get("features", ())) - self.features)
        if missing:
            raise VulkanError(f"{kernel} needs Vulkan feature(s) {', '.join(missing)} that {self.name} does not have")
        for launch in plan["launches"]:
            size = launch["workgroup"]
            problems = []
            if launch["shared_bytes"] > self.limits["maxComputeSharedMemorySize"]:
                problems.append(f"{launch['shared_bytes']} bytes of shared memory (limit "
                                f"{self.limits['maxComputeSharedMemorySize']})")
            if size[0] * size[1] * size[2] > self.limits["maxComputeWorkGroupInvocations"]:
                problems.append(f"workgroup {size} (limit {self.limits['maxComputeWorkGroupInvocations']} invocations)")
            if any(s > m for s, m in zip(size, self.limits["maxComputeWorkGroupSize"])):
                problems.append(f"workgroup {size} (limit {self.limits['maxComputeWorkGroupSize']})")
            if 4 * len(launch["push_dtypes"]) > self.limits["maxPushConstantsSize"]:
                problems.append(f"{4 * len(launch['push_dtypes'])} bytes of push constants")
            if problems:
                raise VulkanError(f"{kernel} ({launch['shader']}) needs {'; '.join(problems)} on {self.name}")


class Buffer:
    def __init__(self, device: Device, nbytes: int):
        vk = device.vk
        self.capacity = max(16, (nbytes + 3) // 4 * 4)  # descriptor ranges are rounded up to 4 bytes
        self.handle = vk.vkCreateBuffer(device.device, vk.VkBufferCreateInfo(
            size=self.capacity, usage=vk.VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
            sharingMode=vk.VK_SHARING_MODE_EXCLUSIVE), None)
        needs = vk.vkGetBufferMemoryRequirements(device.device, self.handle)
        kind = next((i for i in device._memory_types if needs.memoryTypeBits & (1 << i)), None)
        if kind is None:
            raise VulkanError(f"{device.name}: no host-visible memory type for a storage buffer")
        self.memory = vk.vkAllocateMemory(device.device, vk.VkMemoryAllocateInfo(
            allocationSize=needs.size, memoryTypeIndex=kind), None)
        vk.vkBindBufferMemory(device.device, self.handle, self.memory, 0)
        self.mapped = np.frombuffer(vk.vkMapMemory(device.device, self.memory, 0, self.capacity, 0),
                                    dtype=np.uint8, count=self.capacity)
        self.nbytes = nbytes

    def write(self, array: np.ndarray) -> None:
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self.mapped[:flat.size] = flat
        self.nbytes = flat.size

    def read(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return self.mapped[:count * dtype.itemsize].view(dtype).reshape(shape).copy()

    def release(self, device: Device) -> None:
        vk = device.vk
        vk.vkUnmapMemory(device.device, self.memory)
        vk.vkDestroyBuffer(device.device, self.handle, None)
        vk.vkFreeMemory(device.device, self.memory, None)


class Pipeline:
    def __init__(self, device: Device, spirv: bytes, buffers: int, push_bytes: int):
        vk = device.vk
        dev = device.device
        self.module = vk.vkCreateShaderModule(dev, vk.VkShaderModuleCreateInfo(codeSize=len(spirv), pCode=spirv), None)
        bindings = [vk.VkDescriptorSetLayoutBinding(binding=i, descriptorType=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                    descriptorCount=1, stageFlags=vk.VK_SHADER_STAGE_COMPUTE_BIT)
                    for i in range(buffers)]
        self.set_layout = vk.vkCreateDescriptorSetLayout(dev, vk.VkDescriptorSetLayoutCreateInfo(
            bindingCount=len(bindings), pBindings=bindings), None)
        ranges = [vk.VkPushConstantRange(stageFlags=vk.VK_SHADER_STAGE_COMPUTE_BIT, offset=0, size=push_bytes)] if push_bytes else []
        self.layout = vk.vkCreatePipelineLayout(dev, vk.VkPipelineLayoutCreateInfo(
            setLayoutCount=1, pSetLayouts=[self.set_layout], pushConstantRangeCount=len(ranges),
            pPushConstantRanges=ranges or None), None)
        self._entry = vk.ffi.new("char[]", b"main")  # must outlive pipeline creation (binding trap)
        stage = vk.VkPipelineShaderStageCreateInfo(stage=vk.VK_SHADER_STAGE_COMPUTE_BIT, module=self.module, pName=self._entry)
        self.handle = vk.vkCreateComputePipelines(dev, vk.VK_NULL_HANDLE, 1, [vk.VkComputePipelineCreateInfo(
            stage=stage, layout=self.layout)], None)[0]
        self.push_bytes = push_bytes
        self.buffers = buffers


class VulkanBackend:
    """The loader backend for Vulkan builds (same call/keep/call_kept interface as the others)."""

    def __init__(self, directory: Path, manifest: dict[str, Any], device: Device | None = None):
        """`device`: share an open device (the tuner's runner does); closing then leaves it open."""
        self.directory = directory
        self._owns_device = device is None
        self.device = device or Device()
        self.mode = "emulated" if self.device.is_cpu else "native"
        self.device_name = self.device.name
        self.plans = {v["symbol"]: v["vulkan"] for k in manifest["kernels"].values() for v in k["variants"]}
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
            spirv = (self.directory / "shaders" / f"{name}.spv").read_bytes()
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
