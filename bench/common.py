"""What the benchmark scripts share: timing a call, waiting for the GPU, describing the machine and the command,
and keeping the libraries' notices and progress bars out of the output."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch


def timed(call, *args, **kwargs):
    """``call``'s value and the seconds it took."""
    start = time.perf_counter()
    value = call(*args, **kwargs)
    return value, time.perf_counter() - start


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def machine(device: str, activity: str, libraries: dict[str, str]) -> str:
    """One line for a report: host, CPU, torch threads, where ``activity`` ran, and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    where = f"{device}: {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else "cpu"
    versions = ", ".join(f"{name} {version}" for name, version in libraries.items())
    return (f"{platform.node()}, {platform.platform()}, {cpu}, {os.cpu_count()} CPUs, torch threads "
            f"{torch.get_num_threads()}; {activity} on {where}; python {platform.python_version()}, torch "
            f"{torch.__version__}, {versions}")


def command_line() -> str:
    """The command as run from the repository root (the interpreter as .venv/bin/python when it is the repo's)."""
    python = Path(sys.executable)
    root = Path(__file__).resolve().parents[1]
    shown = str(python.relative_to(root)) if python.is_relative_to(root) else python.name
    return shlex.join([shown, *sys.argv])


def quiet_libraries() -> None:
    """No progress bars and no notices from transformers and diffusers between a bench's own lines."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def onnx_runtime() -> str:
    """onnxruntime's version and execution providers (face analysis and background removal run on it)."""
    import onnxruntime

    return f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())})"
