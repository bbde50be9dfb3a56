"""CUDA C++ kernels compiled at run time with NVRTC and launched through the driver API.

Why not a torch C++ extension: that needs ``nvcc`` and a host compiler at install time and
about a minute of compiling against torch's headers. NVRTC ships with every CUDA build of
torch (and with the CUDA toolkit); it turns one self-contained source (no ``#include``)
into machine code for the GPU at hand in about a second, and ``cuLaunchKernel`` on torch's
current stream is captured by CUDA graphs like any other launch. Everything goes through
``ctypes``: no new dependency, nothing to build when the project is installed.

``RtcModule(source).function(name)`` compiles once per (source, options, device) in this
process; ``available()`` says whether NVRTC and a GPU can be found (and why not).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

INCLUDE_DIR = os.path.dirname(os.path.abspath(__file__))  # pdl.cuh and other shared headers
NVRTC_ENV = "SPARSEBENCH_NVRTC"  # path of libnvrtc.so, when it is not found on its own
_NVRTC_NAMES = ("libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2")
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


class RtcError(RuntimeError):
    """NVRTC or the driver refused: the message carries the compiler log or the CUresult."""


def _nvrtc_candidates() -> list[str]:
    """Where libnvrtc may live: the override, the loader's path, torch's and the pip CUDA
    packages' lib folders, the toolkit."""
    out = [os.environ[NVRTC_ENV]] if os.environ.get(NVRTC_ENV) else []
    out += list(_NVRTC_NAMES)
    roots = [os.path.dirname(torch.__file__)] + [p for p in sys.path if p.endswith("site-packages")]
    for root in roots:
        out += sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*")))
        out += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*")))
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    out += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    return [p for p in out if "builtins" not in os.path.basename(p) and ".alt." not in os.path.basename(p)]


_libs: dict[str, Any] = {}


def _nvrtc() -> Any:
    if "nvrtc" not in _libs:
        tried = []
        for name in _nvrtc_candidates():
            try:
                lib = ctypes.CDLL(name)
                lib.nvrtcGetErrorString.restype = ctypes.c_char_p
                _libs["nvrtc"] = lib
                break
            except OSError as exc:
                tried.append(f"{name}: {exc}")
        else:
            raise RtcError("libnvrtc not found (set SPARSEBENCH_NVRTC to its path); tried "
                           + "; ".join(tried[:6]))
    return _libs["nvrtc"]


def _cuda() -> Any:
    if "cuda" not in _libs:
        try:
            _libs["cuda"] = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise RtcError(f"the CUDA driver library libcuda.so.1 cannot be loaded: {exc}") from exc
    return _libs["cuda"]


def available() -> tuple[bool, str]:
    """(True, "") when kernels can be compiled and launched here, else (False, why)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        _nvrtc()
        _cuda()
    except RtcError as exc:
        return False, str(exc)
    return True, ""


def _check_nvrtc(rc: int, what: str) -> None:
    if rc:
        msg = _nvrtc().nvrtcGetErrorString(rc)
        raise RtcError(f"{what}: NVRTC error {rc} ({(msg or b'').decode()})")


def _check_cu(rc: int, what: str) -> None:
    if rc:
        name = ctypes.c_char_p()
        _cuda().cuGetErrorName(rc, ctypes.byref(name))
        raise RtcError(f"{what}: CUDA driver error {rc} ({(name.value or b'?').decode()})")


def compile_cubin(source: str, arch: str, options: Sequence[str] = (), name: str = "kernel.cu") -> bytes:
    """Machine code for ``arch`` (e.g. ``sm_90``) from ``source``; raises with the log."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    _check_nvrtc(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
                 "nvrtcCreateProgram")
    try:
        # the sources' shared headers (pdl.cuh) live beside this module
        opts = [f"--gpu-architecture={arch}", "--std=c++17", f"--include-path={INCLUDE_DIR}", *options]
        argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), argv)
        if rc:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise RtcError(f"NVRTC could not compile {name} for {arch}:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _check_nvrtc(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        image = ctypes.create_string_buffer(size.value)
        _check_nvrtc(lib.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
        return image.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def device_arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4
CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6


class _LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute: id, padding, a 64-byte value union
    _fields_ = [("id", ctypes.c_uint), ("pad", ctypes.c_char * 4), ("value", ctypes.c_uint * 16)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("smem", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_LaunchAttribute)), ("n_attrs", ctypes.c_uint)]


def _attributes(pdl: bool, cluster: Sequence[int] | None) -> list[_LaunchAttribute]:
    out = []
    if pdl:  # this kernel may start before the one before it on the stream has finished
        a = _LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
        a.value[0] = 1
        out.append(a)
    if cluster is not None:
        a = _LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)
        for i, v in enumerate(tuple(cluster) + (1,) * (3 - len(cluster))):
            a.value[i] = v
        out.append(a)
    return out


@dataclass
class RtcFunction:
    """One compiled kernel; ``launch`` puts it on a stream (torch's current one by default)."""

    handle: ctypes.c_void_p
    name: str
    _smem_limit: int = 48 << 10

    def launch(self, grid: Sequence[int], block: Sequence[int], args: Sequence[Any], smem: int = 0,
               stream: int | None = None, pdl: bool = False, cluster: Sequence[int] | None = None) -> None:
        """``args``: tensors (passed as device pointers), Python ints (as 32-bit ints) or
        ctypes values, in the kernel's parameter order. ``pdl``: programmatic dependent launch
        (sm_90: the kernel may start while the previous one drains; it must wait with
        ``griddepcontrol.wait`` before reading that one's output). ``cluster``: thread-block
        cluster dimensions (sm_90)."""
        if smem > self._smem_limit:
            _check_cu(_cuda().cuFuncSetAttribute(self.handle, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                 ctypes.c_int(smem)), f"{self.name}: shared memory {smem}")
            self._smem_limit = smem
        held = []
        for a in args:
            if isinstance(a, torch.Tensor):
                held.append(ctypes.c_void_p(a.data_ptr()))
            elif isinstance(a, bool) or not isinstance(a, int):
                held.append(a)
            else:
                if not -(1 << 31) <= a < (1 << 31):
                    raise ValueError(f"{self.name}: int argument {a} does not fit 32 bits")
                held.append(ctypes.c_int(a))
        params = (ctypes.c_void_p * len(held))(*[ctypes.addressof(h) for h in held])
        g = tuple(grid) + (1,) * (3 - len(grid))
        b = tuple(block) + (1,) * (3 - len(block))
        if stream is None:
            stream = torch.cuda.current_stream().cuda_stream  # (the caller's device is current)
        what = f"launch {self.name} grid {g} block {b} smem {smem}"
        attrs = _attributes(pdl, cluster)
        if not attrs:
            _check_cu(_cuda().cuLaunchKernel(self.handle, *[ctypes.c_uint(v) for v in g],
                                             *[ctypes.c_uint(v) for v in b], ctypes.c_uint(smem),
                                             ctypes.c_void_p(stream), params, None), what)
            return
        arr = (_LaunchAttribute * len(attrs))(*attrs)
        config = _LaunchConfig((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), smem, ctypes.c_void_p(stream),
                               ctypes.cast(arr, ctypes.POINTER(_LaunchAttribute)), len(attrs))
        _check_cu(_cuda().cuLaunchKernelEx(ctypes.byref(config), self.handle, params, None),
                  f"{what}{' pdl' if pdl else ''}{f' cluster {tuple(cluster)}' if cluster else ''}")


class RtcModule:
    """A source compiled for each device it is used on (once per process)."""

    def __init__(self, source: str, options: Sequence[str] = (), name: str = "kernel.cu"):
        self.source, self.options, self.name = source, tuple(options), name
        self._modules: dict[int, ctypes.c_void_p] = {}
        self._functions: dict[tuple[int, str], RtcFunction] = {}

    def _module(self, device: torch.device) -> ctypes.c_void_p:
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in self._modules:
            torch.cuda.init()
            with torch.cuda.device(idx):  # makes the device's primary context (torch's) current
                image = compile_cubin(self.source, device_arch(torch.device("cuda", idx)), self.options, self.name)
                mod = ctypes.c_void_p()
                _check_cu(_cuda().cuModuleLoadData(ctypes.byref(mod), image), f"cuModuleLoadData({self.name})")
            self._modules[idx] = mod
        return self._modules[idx]

    def function(self, name: str, device: torch.device) -> RtcFunction:
        idx = device.index if device.index is not None else torch.cuda.current_device()
        key = (idx, name)
        if key not in self._functions:
            fn = ctypes.c_void_p()
            _check_cu(_cuda().cuModuleGetFunction(ctypes.byref(fn), self._module(device), name.encode()),
                      f"cuModuleGetFunction({name}) in {self.name}")
            self._functions[key] = RtcFunction(fn, name)
        return self._functions[key]


_VARIANTS: dict[tuple, RtcModule] = {}


def variant(path: os.PathLike | str, defines: dict[str, int]) -> RtcModule:
    """The module of one source file compiled with ``-D`` ``defines`` (one per set of defines
    in this process): how a kernel's configurations become separate small modules."""
    key = (os.fspath(path), tuple(sorted(defines.items())))
    if key not in _VARIANTS:
        with open(key[0]) as f:
            source = f.read()
        _VARIANTS[key] = RtcModule(source, [f"-D{k}={v}" for k, v in defines.items()], name=os.path.basename(key[0]))
    return _VARIANTS[key]
