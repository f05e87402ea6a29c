from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_DEGRADED: _ClassVar[HealthStatus]

class ServerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_STATE_UNSPECIFIED: _ClassVar[ServerState]
    SERVER_STATE_STARTING: _ClassVar[ServerState]
    SERVER_STATE_RUNNING: _ClassVar[ServerState]
    SERVER_STATE_DEGRADED: _ClassVar[ServerState]
    SERVER_STATE_SHUTTING_DOWN: _ClassVar[ServerState]
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_DEGRADED: HealthStatus
SERVER_STATE_UNSPECIFIED: ServerState
SERVER_STATE_STARTING: ServerState
SERVER_STATE_RUNNING: ServerState
SERVER_STATE_DEGRADED: ServerState
SERVER_STATE_SHUTTING_DOWN: ServerState

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "uptime_seconds", "version", "tokens_count", "storage_backend")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    status: HealthStatus
    uptime_seconds: int
    version: str
    tokens_count: int
    storage_backend: str
    def __init__(self, status: _Optional[_Union[HealthStatus, str]] = ..., uptime_seconds: _Optional[int] = ..., version: _Optional[str] = ..., tokens_count: _Optional[int] = ..., storage_backend: _Optional[str] = ...) -> None: ...

class ReadyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReadyResponse(_message.Message):
    __slots__ = ("ready", "checks")
    class ChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    READY_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    checks: _containers.ScalarMap[str, str]
    def __init__(self, ready: _Optional[bool] = ..., checks: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateBackupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateBackupResponse(_message.Message):
    __slots__ = ("path", "sequence")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    path: str
    sequence: int
    def __init__(self, path: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenCounts(_message.Message):
    __slots__ = ("total", "active")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    total: int
    active: int
    def __init__(self, total: _Optional[int] = ..., active: _Optional[int] = ...) -> None: ...

class ConnectionCounts(_message.Message):
    __slots__ = ("total", "active")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    total: int
    active: int
    def __init__(self, total: _Optional[int] = ..., active: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("state", "uptime_seconds", "tokens", "connections", "memory_usage_mb", "cpu_usage_percent", "components", "cdna_profile", "storage_backend", "version", "applied_sequence", "log", "state_digest")
    class ComponentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_MB_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CDNA_PROFILE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    state: ServerState
    uptime_seconds: int
    tokens: TokenCounts
    connections: ConnectionCounts
    memory_usage_mb: float
    cpu_usage_percent: float
    components: _containers.ScalarMap[str, str]
    cdna_profile: str
    storage_backend: str
    version: str
    applied_sequence: int
    log: str
    state_digest: str
    def __init__(self, state: _Optional[_Union[ServerState, str]] = ..., uptime_seconds: _Optional[int] = ..., tokens: _Optional[_Union[TokenCounts, _Mapping]] = ..., connections: _Optional[_Union[ConnectionCounts, _Mapping]] = ..., memory_usage_mb: _Optional[float] = ..., cpu_usage_percent: _Optional[float] = ..., components: _Optional[_Mapping[str, str]] = ..., cdna_profile: _Optional[str] = ..., storage_backend: _Optional[str] = ..., version: _Optional[str] = ..., applied_sequence: _Optional[int] = ..., log: _Optional[str] = ..., state_digest: _Optional[str] = ...) -> None: ...
