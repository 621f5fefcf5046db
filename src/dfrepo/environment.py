"""The environment variables and default paths a pull's settings are read from.

One home for the names, so the CLI, the Triton agent and the Python API agree on them.
Nothing here reads the environment: :mod:`dfrepo.settings` does, once per pull.

The two files are the existing Triton Dragonfly repository agent's
(``dragonflyoss/dragonfly-repository-agent``): same variables, same defaults.
"""

from __future__ import annotations

__all__ = [
    "CACHE_SWITCH_ENV",
    "CREDENTIAL_PATH_ENV",
    "DEFAULT_CREDENTIAL_PATH",
    "DEFAULT_DRAGONFLY_CONFIG_PATH",
    "DRAGONFLY_CONFIG_PATH_ENV",
    "PROXY_ENV_VARS",
]

#: Where ``dragonfly_config.json`` is (the proxy, headers, filters; :mod:`dfrepo.dragonfly`).
DRAGONFLY_CONFIG_PATH_ENV = "TRITON_DRAGONFLY_CONFIG_PATH"
DEFAULT_DRAGONFLY_CONFIG_PATH = "/home/triton/dragonfly_config.json"
#: Where ``cloud_credential.json`` is (Triton's credential schema; :mod:`dfrepo.credentials`).
CREDENTIAL_PATH_ENV = "TRITON_CLOUD_CREDENTIAL_PATH"
DEFAULT_CREDENTIAL_PATH = "/home/triton/cloud_credential.json"
#: The Dragonfly proxy, first non-empty wins (beats the file, loses to an override).
PROXY_ENV_VARS = ("DFREPO_PROXY", "DRAGONFLY_PROXY")
#: The Triton agent's persistent cache switch: ``on`` (default), ``off``, or a directory.
CACHE_SWITCH_ENV = "DFREPO_CACHE"
