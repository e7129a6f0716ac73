"""One typed run configuration in sections, shared by the CLI, the ServerApp, the clients and Flower's run config.

``RunConfig`` holds the sections (``task``, ``federation``, ``secure``, ``attack``, ``defense``, ``admission``,
``runtime``); every setting has one flat key for ``--set``, TOML files and ``flwr run -c``. See ``run.py`` for how
settings reach a run and ``checks.py`` for the checks that span settings.
"""

from .checks import MIN_CLEAN_SET, cross_check
from .enums import (
    DATASETS,
    IMAGE_MODELS,
    TASK_PROFILES,
    TEXT_MODELS,
    Attack,
    AttackMode,
    TriggerPosition,
    TriggerType,
    Auth,
    BTUCut,
    BTURanking,
    ClientDefense,
    HEProfile,
    Partition,
    Repair,
    SecureAggregation,
    TaskKind,
    TaskProfile,
    ThreatModel,
    task_kind,
)
from .paths import in_process_ha_paths, simulated_credential_dir
from .run import (
    FIELD_HELP,
    KEYS,
    ConfigError,
    RunConfig,
    apply_overrides,
    client_values,
    from_client_values,
    from_run_config,
    from_saved,
    load_config,
    parse_set,
)
from .sections import (
    SECTIONS,
    AdmissionConfig,
    AttackConfig,
    DefenseConfig,
    FederationConfig,
    RuntimeConfig,
    SecureAggregationConfig,
    TaskConfig,
)

__all__ = [
    "DATASETS", "IMAGE_MODELS", "TEXT_MODELS", "TASK_PROFILES", "TaskProfile", "TaskKind", "task_kind",
    "Attack", "AttackMode", "TriggerPosition", "TriggerType", "Auth", "BTUCut", "BTURanking", "ClientDefense", "HEProfile", "Partition", "Repair", "SecureAggregation",
    "ThreatModel", "RunConfig", "ConfigError", "KEYS", "FIELD_HELP", "SECTIONS", "MIN_CLEAN_SET",
    "TaskConfig", "FederationConfig", "SecureAggregationConfig", "AttackConfig", "DefenseConfig", "AdmissionConfig",
    "RuntimeConfig",
    "apply_overrides", "load_config", "parse_set", "from_run_config", "from_saved", "client_values",
    "from_client_values", "cross_check", "in_process_ha_paths", "simulated_credential_dir",
]
