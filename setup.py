"""Build of repdiag's one optional C extension; everything else is declared in pyproject.toml.

``repdiag.capture._mapstats`` computes the hook's per-map statistics in one pass over the
activation (see its source). It is optional: where no C compiler is present the build prints a
warning, installs without it, and repdiag uses the equivalent eager PyTorch path.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":  # gcc or clang: honour `#pragma omp simd` (no OpenMP runtime)
            for ext in self.extensions:
                ext.extra_compile_args += ["-O3", "-fopenmp-simd"]
        super().build_extensions()


setup(
    ext_modules=[Extension("repdiag.capture._mapstats", ["repdiag/capture/_mapstats.c"], optional=True)],
    cmdclass={"build_ext": BuildExt},
)
