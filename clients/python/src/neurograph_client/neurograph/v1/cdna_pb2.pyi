import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HistoryAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HISTORY_ACTION_UNSPECIFIED: _ClassVar[HistoryAction]
    HISTORY_ACTION_CONFIG_UPDATE: _ClassVar[HistoryAction]
    HISTORY_ACTION_PROFILE_SWITCH: _ClassVar[HistoryAction]
    HISTORY_ACTION_RESET: _ClassVar[HistoryAction]
    HISTORY_ACTION_QUARANTINE_START: _ClassVar[HistoryAction]
    HISTORY_ACTION_QUARANTINE_STOP_APPLIED: _ClassVar[HistoryAction]
    HISTORY_ACTION_QUARANTINE_STOP_DISCARDED: _ClassVar[HistoryAction]
    HISTORY_ACTION_QUARANTINE_EXPIRED: _ClassVar[HistoryAction]
HISTORY_ACTION_UNSPECIFIED: HistoryAction
HISTORY_ACTION_CONFIG_UPDATE: HistoryAction
HISTORY_ACTION_PROFILE_SWITCH: HistoryAction
HISTORY_ACTION_RESET: HistoryAction
HISTORY_ACTION_QUARANTINE_START: HistoryAction
HISTORY_ACTION_QUARANTINE_STOP_APPLIED: HistoryAction
HISTORY_ACTION_QUARANTINE_STOP_DISCARDED: HistoryAction
HISTORY_ACTION_QUARANTINE_EXPIRED: HistoryAction

class CDNAFlags(_message.Message):
    __slots__ = ("validation", "events", "mutation", "strict")
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    MUTATION_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    validation: bool
    events: bool
    mutation: bool
    strict: bool
    def __init__(self, validation: _Optional[bool] = ..., events: _Optional[bool] = ..., mutation: _Optional[bool] = ..., strict: _Optional[bool] = ...) -> None: ...

class CDNAConfig(_message.Message):
    __slots__ = ("version", "profile", "dimension_scales", "flags", "min_token_weight", "max_token_weight", "revision", "updated_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_SCALES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKEN_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKEN_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    profile: str
    dimension_scales: _containers.RepeatedScalarFieldContainer[float]
    flags: CDNAFlags
    min_token_weight: float
    max_token_weight: float
    revision: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., profile: _Optional[str] = ..., dimension_scales: _Optional[_Iterable[float]] = ..., flags: _Optional[_Union[CDNAFlags, _Mapping]] = ..., min_token_weight: _Optional[float] = ..., max_token_weight: _Optional[float] = ..., revision: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("id", "name", "description", "scales", "plasticity", "evolution_rate", "restricted", "max_change")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    PLASTICITY_FIELD_NUMBER: _ClassVar[int]
    EVOLUTION_RATE_FIELD_NUMBER: _ClassVar[int]
    RESTRICTED_FIELD_NUMBER: _ClassVar[int]
    MAX_CHANGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    scales: _containers.RepeatedScalarFieldContainer[float]
    plasticity: float
    evolution_rate: float
    restricted: bool
    max_change: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., scales: _Optional[_Iterable[float]] = ..., plasticity: _Optional[float] = ..., evolution_rate: _Optional[float] = ..., restricted: _Optional[bool] = ..., max_change: _Optional[float] = ...) -> None: ...

class QuarantineStatus(_message.Message):
    __slots__ = ("active", "time_left_seconds", "started_at", "duration_seconds", "token_churn", "config_changes")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TIME_LEFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_CHURN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_CHANGES_FIELD_NUMBER: _ClassVar[int]
    active: bool
    time_left_seconds: int
    started_at: _timestamp_pb2.Timestamp
    duration_seconds: int
    token_churn: int
    config_changes: int
    def __init__(self, active: _Optional[bool] = ..., time_left_seconds: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[int] = ..., token_churn: _Optional[int] = ..., config_changes: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("sequence", "action", "timestamp", "revision", "details")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    action: HistoryAction
    timestamp: _timestamp_pb2.Timestamp
    revision: int
    details: str
    def __init__(self, sequence: _Optional[int] = ..., action: _Optional[_Union[HistoryAction, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., details: _Optional[str] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateConfigRequest(_message.Message):
    __slots__ = ("config", "update_mask", "expected_revision", "validate")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_FIELD_NUMBER: _ClassVar[int]
    config: CDNAConfig
    update_mask: _field_mask_pb2.FieldMask
    expected_revision: int
    validate: bool
    def __init__(self, config: _Optional[_Union[CDNAConfig, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., expected_revision: _Optional[int] = ..., validate: _Optional[bool] = ...) -> None: ...

class ListProfilesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProfilesResponse(_message.Message):
    __slots__ = ("profiles",)
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[Profile]
    def __init__(self, profiles: _Optional[_Iterable[_Union[Profile, _Mapping]]] = ...) -> None: ...

class GetProfileRequest(_message.Message):
    __slots__ = ("profile_id",)
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    def __init__(self, profile_id: _Optional[str] = ...) -> None: ...

class SwitchProfileRequest(_message.Message):
    __slots__ = ("profile_id", "expected_revision")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    expected_revision: int
    def __init__(self, profile_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class SwitchProfileResponse(_message.Message):
    __slots__ = ("old_profile", "new_profile", "config", "warnings")
    OLD_PROFILE_FIELD_NUMBER: _ClassVar[int]
    NEW_PROFILE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    old_profile: str
    new_profile: str
    config: CDNAConfig
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, old_profile: _Optional[str] = ..., new_profile: _Optional[str] = ..., config: _Optional[_Union[CDNAConfig, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidateScalesRequest(_message.Message):
    __slots__ = ("scales",)
    SCALES_FIELD_NUMBER: _ClassVar[int]
    scales: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, scales: _Optional[_Iterable[float]] = ...) -> None: ...

class ValidateScalesResponse(_message.Message):
    __slots__ = ("valid", "errors", "warnings")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    errors: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, valid: _Optional[bool] = ..., errors: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class StartQuarantineRequest(_message.Message):
    __slots__ = ("duration_seconds",)
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    duration_seconds: int
    def __init__(self, duration_seconds: _Optional[int] = ...) -> None: ...

class StopQuarantineRequest(_message.Message):
    __slots__ = ("apply",)
    APPLY_FIELD_NUMBER: _ClassVar[int]
    apply: bool
    def __init__(self, apply: _Optional[bool] = ...) -> None: ...

class GetQuarantineStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("entries", "next_page_token", "total_size")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    next_page_token: str
    total_size: int
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class ResetConfigRequest(_message.Message):
    __slots__ = ("clear_history", "expected_revision")
    CLEAR_HISTORY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    clear_history: bool
    expected_revision: int
    def __init__(self, clear_history: _Optional[bool] = ..., expected_revision: _Optional[int] = ...) -> None: ...
