"""Client side of the Dragonfly peer (dfdaemon) HTTP proxy protocol.

* :mod:`.config`: :class:`DragonflyConfig` (frozen, validated on construction).
* :mod:`.fields`: the parser of each setting's value (the one proxy rule: plain http).
* :mod:`.loading`: ``dragonfly_config.json``, the environment and overrides.
* :mod:`.headers`: request headers (filter in both dialects, Use-P2P, Tag with version).
* :mod:`.taskid`: task IDs exactly as dfdaemon computes them.
* :mod:`.urlcanon`: the URL string they hash (canonicalizations A and B).

Stdlib only; nothing here opens a connection.
"""

from __future__ import annotations

from .config import DEFAULT_PROXY, DragonflyConfig
from .headers import (
    AZURE_SAS_QUERY_PARAMS,
    filtered_query_params,
    is_azure_sas_url,
    request_headers,
    version_tag,
)
from .loading import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATH,
    OVERRIDE_KEYS,
    PROXY_ENV_VARS,
    default_config_path,
    is_override_key,
    load_dragonfly_config,
    with_overrides,
)
from .taskid import (
    TASK_ID_HEADER,
    check_task_id,
    parse_byte_size,
    task_id,
    task_id_for_request,
)
from .urlcanon import DEFAULT_FILTERED_QUERY_PARAMS, canonical_url

__all__ = [
    "AZURE_SAS_QUERY_PARAMS",
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_FILTERED_QUERY_PARAMS",
    "DEFAULT_PROXY",
    "OVERRIDE_KEYS",
    "PROXY_ENV_VARS",
    "TASK_ID_HEADER",
    "DragonflyConfig",
    "canonical_url",
    "check_task_id",
    "default_config_path",
    "filtered_query_params",
    "is_azure_sas_url",
    "is_override_key",
    "load_dragonfly_config",
    "parse_byte_size",
    "request_headers",
    "task_id",
    "task_id_for_request",
    "version_tag",
    "with_overrides",
]
