"""Build hook for the optional compiled loops of the read path (decloud/_kernels.c).

Everything else is declared in setup.cfg. The extension is optional: without a C
compiler the install still succeeds and decloud reads with its numpy path (same bits,
slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "decloud._kernels",
            ["decloud/_kernels.c"],
            # IEEE float32 step for step as numpy: no fused multiply-add contraction.
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
            optional=True,
        )
    ],
)
