"""Real servers managed for tests and benchmarks: SeaweedFS, moto, Azurite, fake-gcs-server,
nginx and Triton, each on 127.0.0.1 with ports chosen at run time and its own data directory.

``servers.fixtures`` is loaded as a pytest plugin by tests/conftest.py; the other modules are
plain Python and can be used outside pytest (benchmarks): see :mod:`servers.s3`,
:mod:`servers.azure`, :mod:`servers.gcs`, :mod:`servers.nginx`, :mod:`servers.triton`,
:mod:`servers.models`, :mod:`servers.upload`.
"""
