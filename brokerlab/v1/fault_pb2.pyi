from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkFault(_message.Message):
    __slots__ = ("peer", "drop_all", "delay_ms", "jitter_ms", "drop_probability")
    PEER_FIELD_NUMBER: _ClassVar[int]
    DROP_ALL_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    DROP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    peer: str
    drop_all: bool
    delay_ms: int
    jitter_ms: int
    drop_probability: float
    def __init__(self, peer: _Optional[str] = ..., drop_all: _Optional[bool] = ..., delay_ms: _Optional[int] = ..., jitter_ms: _Optional[int] = ..., drop_probability: _Optional[float] = ...) -> None: ...

class SetLinkFaultsRequest(_message.Message):
    __slots__ = ("faults", "replace")
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[LinkFault]
    replace: bool
    def __init__(self, faults: _Optional[_Iterable[_Union[LinkFault, _Mapping]]] = ..., replace: _Optional[bool] = ...) -> None: ...

class SetLinkFaultsResponse(_message.Message):
    __slots__ = ("error_code", "error_message", "faults")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    error_code: int
    error_message: str
    faults: _containers.RepeatedCompositeFieldContainer[LinkFault]
    def __init__(self, error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., faults: _Optional[_Iterable[_Union[LinkFault, _Mapping]]] = ...) -> None: ...

class ClearFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClearFaultsResponse(_message.Message):
    __slots__ = ("error_code",)
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    error_code: int
    def __init__(self, error_code: _Optional[int] = ...) -> None: ...

class SetClockSkewRequest(_message.Message):
    __slots__ = ("skew_ms",)
    SKEW_MS_FIELD_NUMBER: _ClassVar[int]
    skew_ms: int
    def __init__(self, skew_ms: _Optional[int] = ...) -> None: ...

class SetClockSkewResponse(_message.Message):
    __slots__ = ("error_code", "skew_ms")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    SKEW_MS_FIELD_NUMBER: _ClassVar[int]
    error_code: int
    skew_ms: int
    def __init__(self, error_code: _Optional[int] = ..., skew_ms: _Optional[int] = ...) -> None: ...

class DescribeFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeFaultsResponse(_message.Message):
    __slots__ = ("node", "faults", "clock_skew_ms", "dropped_calls", "delayed_calls")
    NODE_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEW_MS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CALLS_FIELD_NUMBER: _ClassVar[int]
    DELAYED_CALLS_FIELD_NUMBER: _ClassVar[int]
    node: str
    faults: _containers.RepeatedCompositeFieldContainer[LinkFault]
    clock_skew_ms: int
    dropped_calls: int
    delayed_calls: int
    def __init__(self, node: _Optional[str] = ..., faults: _Optional[_Iterable[_Union[LinkFault, _Mapping]]] = ..., clock_skew_ms: _Optional[int] = ..., dropped_calls: _Optional[int] = ..., delayed_calls: _Optional[int] = ...) -> None: ...
