from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Space(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPACE_UNSPECIFIED: _ClassVar[Space]
    SPACE_L1_PHYSICAL: _ClassVar[Space]
    SPACE_L2_SENSORY: _ClassVar[Space]
    SPACE_L3_MOTOR: _ClassVar[Space]
    SPACE_L4_EMOTIONAL: _ClassVar[Space]
    SPACE_L5_COGNITIVE: _ClassVar[Space]
    SPACE_L6_SOCIAL: _ClassVar[Space]
    SPACE_L7_TEMPORAL: _ClassVar[Space]
    SPACE_L8_ABSTRACT: _ClassVar[Space]
SPACE_UNSPECIFIED: Space
SPACE_L1_PHYSICAL: Space
SPACE_L2_SENSORY: Space
SPACE_L3_MOTOR: Space
SPACE_L4_EMOTIONAL: Space
SPACE_L5_COGNITIVE: Space
SPACE_L6_SOCIAL: Space
SPACE_L7_TEMPORAL: Space
SPACE_L8_ABSTRACT: Space

class Point3(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...
