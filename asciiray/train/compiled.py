"""`--compile`: the check, on the driver, that torch.compile can build kernels here.

Inductor, torch.compile's default backend, writes C++ kernels on a CPU (it needs
a C++ compiler) and Triton kernels on a GPU (it needs Triton). Without them the
first training step would fail deep inside a worker with a long traceback, so
the driver checks first and names the fix.
"""

from __future__ import annotations

from asciiray.errors import UserError


def check_available(gpu: bool) -> None:
    """Raise a one-line UserError when torch.compile's inductor backend cannot build kernels for the device."""
    if gpu:
        from torch.utils._triton import has_triton

        if not has_triton():
            raise UserError("--compile on a GPU needs Triton, which this torch cannot find: install the triton "
                            "package that matches torch, or drop --compile")
        return
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise UserError("--compile on a CPU needs a C++ compiler for torch.compile's inductor backend and none "
                        "was found (g++, or the one CXX names): install g++ or set CXX, or drop --compile") from None
