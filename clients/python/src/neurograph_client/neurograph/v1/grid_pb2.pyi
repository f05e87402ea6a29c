from neurograph_client.neurograph.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Neighbor(_message.Message):
    __slots__ = ("token_id", "distance")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    distance: float
    def __init__(self, token_id: _Optional[int] = ..., distance: _Optional[float] = ...) -> None: ...

class GridConfig(_message.Message):
    __slots__ = ("density_threshold", "min_field_nodes")
    DENSITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NODES_FIELD_NUMBER: _ClassVar[int]
    density_threshold: float
    min_field_nodes: int
    def __init__(self, density_threshold: _Optional[float] = ..., min_field_nodes: _Optional[int] = ...) -> None: ...

class Grid(_message.Message):
    __slots__ = ("grid_id", "config", "token_count")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    config: GridConfig
    token_count: int
    def __init__(self, grid_id: _Optional[int] = ..., config: _Optional[_Union[GridConfig, _Mapping]] = ..., token_count: _Optional[int] = ...) -> None: ...

class FindNeighborsRequest(_message.Message):
    __slots__ = ("grid_id", "token_id", "space", "k", "max_distance")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    token_id: int
    space: _common_pb2.Space
    k: int
    max_distance: float
    def __init__(self, grid_id: _Optional[int] = ..., token_id: _Optional[int] = ..., space: _Optional[_Union[_common_pb2.Space, str]] = ..., k: _Optional[int] = ..., max_distance: _Optional[float] = ...) -> None: ...

class FindNeighborsResponse(_message.Message):
    __slots__ = ("neighbors",)
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    def __init__(self, neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ...) -> None: ...

class RangeQueryRequest(_message.Message):
    __slots__ = ("grid_id", "space", "center", "radius", "limit")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    space: _common_pb2.Space
    center: _common_pb2.Point3
    radius: float
    limit: int
    def __init__(self, grid_id: _Optional[int] = ..., space: _Optional[_Union[_common_pb2.Space, str]] = ..., center: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., radius: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class RangeQueryResponse(_message.Message):
    __slots__ = ("results", "total_in_range")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_IN_RANGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Neighbor]
    total_in_range: int
    def __init__(self, results: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., total_in_range: _Optional[int] = ...) -> None: ...

class CalculateDensityRequest(_message.Message):
    __slots__ = ("grid_id", "space", "center", "radius")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    space: _common_pb2.Space
    center: _common_pb2.Point3
    radius: float
    def __init__(self, grid_id: _Optional[int] = ..., space: _Optional[_Union[_common_pb2.Space, str]] = ..., center: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., radius: _Optional[float] = ...) -> None: ...

class CalculateDensityResponse(_message.Message):
    __slots__ = ("density", "tokens_in_range", "dense")
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_RANGE_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    density: float
    tokens_in_range: int
    dense: bool
    def __init__(self, density: _Optional[float] = ..., tokens_in_range: _Optional[int] = ..., dense: _Optional[bool] = ...) -> None: ...

class FieldInfluenceRequest(_message.Message):
    __slots__ = ("grid_id", "space", "center", "radius")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    space: _common_pb2.Space
    center: _common_pb2.Point3
    radius: float
    def __init__(self, grid_id: _Optional[int] = ..., space: _Optional[_Union[_common_pb2.Space, str]] = ..., center: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., radius: _Optional[float] = ...) -> None: ...

class FieldInfluenceResponse(_message.Message):
    __slots__ = ("influence", "contributors")
    INFLUENCE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    influence: float
    contributors: int
    def __init__(self, influence: _Optional[float] = ..., contributors: _Optional[int] = ...) -> None: ...

class CreateGridRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: GridConfig
    def __init__(self, config: _Optional[_Union[GridConfig, _Mapping]] = ...) -> None: ...

class GetGridRequest(_message.Message):
    __slots__ = ("grid_id",)
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    def __init__(self, grid_id: _Optional[int] = ...) -> None: ...

class ListGridsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGridsResponse(_message.Message):
    __slots__ = ("grids",)
    GRIDS_FIELD_NUMBER: _ClassVar[int]
    grids: _containers.RepeatedCompositeFieldContainer[Grid]
    def __init__(self, grids: _Optional[_Iterable[_Union[Grid, _Mapping]]] = ...) -> None: ...

class DeleteGridRequest(_message.Message):
    __slots__ = ("grid_id",)
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    def __init__(self, grid_id: _Optional[int] = ...) -> None: ...

class DeleteGridResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddTokenRequest(_message.Message):
    __slots__ = ("grid_id", "token_id")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    token_id: int
    def __init__(self, grid_id: _Optional[int] = ..., token_id: _Optional[int] = ...) -> None: ...

class AddTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveTokenRequest(_message.Message):
    __slots__ = ("grid_id", "token_id")
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: int
    token_id: int
    def __init__(self, grid_id: _Optional[int] = ..., token_id: _Optional[int] = ...) -> None: ...

class RemoveTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
