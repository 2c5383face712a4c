"""The Vulkan device the dispatcher runs on, through PyPI `vulkan`: instance, device and compute
queue (EKC_VULKAN_DEVICE picks one by index), the features shaders need, host-visible storage
buffers and compute pipelines. Never imports TVM.

Two traps of the cffi binding are handled here: the entry-point name must outlive pipeline
creation (kept in `self._entry`), and VK_WHOLE_SIZE cannot be passed as a range (byte sizes are).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from compiler.runtime.errors import LoaderError

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
