import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from neurograph_client.neurograph.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_EVENT_KIND_UNSPECIFIED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_CREATED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_UPDATED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_DELETED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_CLEARED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_EXPIRED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_ENTERED: _ClassVar[TokenEventKind]
    TOKEN_EVENT_KIND_EXITED: _ClassVar[TokenEventKind]
TOKEN_EVENT_KIND_UNSPECIFIED: TokenEventKind
TOKEN_EVENT_KIND_CREATED: TokenEventKind
TOKEN_EVENT_KIND_UPDATED: TokenEventKind
TOKEN_EVENT_KIND_DELETED: TokenEventKind
TOKEN_EVENT_KIND_CLEARED: TokenEventKind
TOKEN_EVENT_KIND_EXPIRED: TokenEventKind
TOKEN_EVENT_KIND_ENTERED: TokenEventKind
TOKEN_EVENT_KIND_EXITED: TokenEventKind

class TokenFlags(_message.Message):
    __slots__ = ("active", "persistent", "mutable", "locked", "user_1", "user_2", "user_3", "user_4")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    MUTABLE_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    USER_1_FIELD_NUMBER: _ClassVar[int]
    USER_2_FIELD_NUMBER: _ClassVar[int]
    USER_3_FIELD_NUMBER: _ClassVar[int]
    USER_4_FIELD_NUMBER: _ClassVar[int]
    active: bool
    persistent: bool
    mutable: bool
    locked: bool
    user_1: bool
    user_2: bool
    user_3: bool
    user_4: bool
    def __init__(self, active: _Optional[bool] = ..., persistent: _Optional[bool] = ..., mutable: _Optional[bool] = ..., locked: _Optional[bool] = ..., user_1: _Optional[bool] = ..., user_2: _Optional[bool] = ..., user_3: _Optional[bool] = ..., user_4: _Optional[bool] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("id", "local_id", "entity_type", "domain", "weight", "field_radius", "field_strength", "flags", "timestamp", "l1_physical", "l2_sensory", "l3_motor", "l4_emotional", "l5_cognitive", "l6_social", "l7_temporal", "l8_abstract", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FIELD_RADIUS_FIELD_NUMBER: _ClassVar[int]
    FIELD_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    L1_PHYSICAL_FIELD_NUMBER: _ClassVar[int]
    L2_SENSORY_FIELD_NUMBER: _ClassVar[int]
    L3_MOTOR_FIELD_NUMBER: _ClassVar[int]
    L4_EMOTIONAL_FIELD_NUMBER: _ClassVar[int]
    L5_COGNITIVE_FIELD_NUMBER: _ClassVar[int]
    L6_SOCIAL_FIELD_NUMBER: _ClassVar[int]
    L7_TEMPORAL_FIELD_NUMBER: _ClassVar[int]
    L8_ABSTRACT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    local_id: int
    entity_type: int
    domain: int
    weight: float
    field_radius: float
    field_strength: float
    flags: TokenFlags
    timestamp: _timestamp_pb2.Timestamp
    l1_physical: _common_pb2.Point3
    l2_sensory: _common_pb2.Point3
    l3_motor: _common_pb2.Point3
    l4_emotional: _common_pb2.Point3
    l5_cognitive: _common_pb2.Point3
    l6_social: _common_pb2.Point3
    l7_temporal: _common_pb2.Point3
    l8_abstract: _common_pb2.Point3
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., local_id: _Optional[int] = ..., entity_type: _Optional[int] = ..., domain: _Optional[int] = ..., weight: _Optional[float] = ..., field_radius: _Optional[float] = ..., field_strength: _Optional[float] = ..., flags: _Optional[_Union[TokenFlags, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., l1_physical: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l2_sensory: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l3_motor: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l4_emotional: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l5_cognitive: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l6_social: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l7_temporal: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., l8_abstract: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TokenFilter(_message.Message):
    __slots__ = ("domain", "entity_type")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    domain: int
    entity_type: int
    def __init__(self, domain: _Optional[int] = ..., entity_type: _Optional[int] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("token", "ttl_seconds")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    token: Token
    ttl_seconds: int
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GetTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class UpdateTokenRequest(_message.Message):
    __slots__ = ("token", "update_mask")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    token: Token
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class DeleteTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: TokenFilter
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[_Union[TokenFilter, _Mapping]] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens", "next_page_token", "total_size")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    next_page_token: str
    total_size: int
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class CountTokensRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: TokenFilter
    def __init__(self, filter: _Optional[_Union[TokenFilter, _Mapping]] = ...) -> None: ...

class CountTokensResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ClearTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClearTokensResponse(_message.Message):
    __slots__ = ("cleared",)
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared: int
    def __init__(self, cleared: _Optional[int] = ...) -> None: ...

class BatchCreateTokensRequest(_message.Message):
    __slots__ = ("tokens", "ttl_seconds")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    ttl_seconds: int
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class BatchCreateTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class ImportTokensRequest(_message.Message):
    __slots__ = ("tokens", "ttl_seconds")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    ttl_seconds: int
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ImportError(_message.Message):
    __slots__ = ("index", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ImportTokensResponse(_message.Message):
    __slots__ = ("created", "failed", "errors")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    created: int
    failed: int
    errors: _containers.RepeatedCompositeFieldContainer[ImportError]
    def __init__(self, created: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ImportError, _Mapping]]] = ...) -> None: ...

class StreamTokensRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: TokenFilter
    def __init__(self, filter: _Optional[_Union[TokenFilter, _Mapping]] = ...) -> None: ...

class WatchTokensRequest(_message.Message):
    __slots__ = ("from_sequence", "filter", "region")
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    from_sequence: int
    filter: TokenFilter
    region: WatchRegion
    def __init__(self, from_sequence: _Optional[int] = ..., filter: _Optional[_Union[TokenFilter, _Mapping]] = ..., region: _Optional[_Union[WatchRegion, _Mapping]] = ...) -> None: ...

class WatchRegion(_message.Message):
    __slots__ = ("space", "center", "radius")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    space: _common_pb2.Space
    center: _common_pb2.Point3
    radius: float
    def __init__(self, space: _Optional[_Union[_common_pb2.Space, str]] = ..., center: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., radius: _Optional[float] = ...) -> None: ...

class TokenEvent(_message.Message):
    __slots__ = ("kind", "id", "token", "sequence")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    kind: TokenEventKind
    id: int
    token: Token
    sequence: int
    def __init__(self, kind: _Optional[_Union[TokenEventKind, str]] = ..., id: _Optional[int] = ..., token: _Optional[_Union[Token, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...
