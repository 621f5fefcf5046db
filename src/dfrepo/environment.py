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
    "ALLOW_DIRECT_ENV",
    "DIRECT_PROXY_ENV",
    "MODEL_PARAMETERS_ENV",
    "AGENT_PATHS_ENV",
    "NO_PROXY_ENV",
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
#: The persistent cache switch of the Triton agent and ``dfrepo pull``: ``on`` (default),
#: ``off``, or a directory (read by :func:`dfrepo.settings.cache_switch`; a model's ``cache``
#: parameter and the CLI's ``--cache-dir``/``--no-cache`` beat it).
CACHE_SWITCH_ENV = "DFREPO_CACHE"
#: The Triton agent: ``1`` lets a missing ``dragonfly_config.json`` mean "download directly
#: from the origin" (no P2P). Unset (the default), the LOAD fails, as the C++ agent's does.
ALLOW_DIRECT_ENV = "DFREPO_ALLOW_DIRECT"
#: The Triton agent: which ``config.pbtxt`` agent parameters a model may set (comma list,
#: ``header.*`` patterns, ``*`` = all, ``none``). Beats ``"model_parameters"`` in
#: ``dragonfly_config.json``; neither set: :data:`dfrepo.triton.parameters.DEFAULT_MODEL_PARAMETERS`.
MODEL_PARAMETERS_ENV = "DFREPO_MODEL_PARAMETERS"
#: Set by the agent's worker bootstrap: the operator's extra ``sys_path`` entries
#: (``install_agent(sys_path=...)``), where Python agent classes may come from.
AGENT_PATHS_ENV = "DFREPO_AGENT_PATHS"
#: Proxies for *direct* downloads (no Dragonfly ``proxy``), read as curl (the C++ agent)
#: reads them: per URL scheme, lowercase first; ``http`` reads only ``http_proxy`` (curl
#: ignores ``HTTP_PROXY``, the "httpoxy" rule); then ``all_proxy``/``ALL_PROXY``.
DIRECT_PROXY_ENV = {
    "http": ("http_proxy", "all_proxy", "ALL_PROXY"),
    "https": ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
}
#: Hosts that bypass :data:`DIRECT_PROXY_ENV` (lowercase first, as curl).
NO_PROXY_ENV = ("no_proxy", "NO_PROXY")
