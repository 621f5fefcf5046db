"""Build the compiled parts: the Cython transfer core and the Triton agent shim.

DFREPO_NO_EXTENSIONS=1 builds neither (pure-Python install; the Triton agent needs the
shim, so install-agent then fails with a clear message). DFREPO_DEBUG=1 builds with -O0 -g.
"""

import os
import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    sys.exit("dfrepo needs POSIX pwrite/splice; Windows is not supported.")

ext_modules = []
if os.environ.get("DFREPO_NO_EXTENSIONS", "") not in ("1", "true", "yes"):
    from Cython.Build import cythonize

    debug = os.environ.get("DFREPO_DEBUG", "") in ("1", "true", "yes")
    cflags = ["-O0", "-g"] if debug else ["-O2"]
    ext_modules = cythonize(
        [Extension("dfrepo._fastio", ["src/dfrepo/_fastio.pyx"], extra_compile_args=cflags)],
        compiler_directives={"language_level": "3", "embedsignature": True},
        annotate=debug,
    )
    shim = "src/dfrepo/triton/agent_shim.c"
    if os.path.exists(shim):
        ext_modules.append(
            Extension(
                "dfrepo.triton._agent_shim",
                [shim],
                extra_compile_args=cflags + ["-Wall", "-fvisibility=hidden"],
                extra_link_args=["-Wl,--version-script=src/dfrepo/triton/agent.ldscript"],
            )
        )

setup(ext_modules=ext_modules)
