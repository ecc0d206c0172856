from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResponseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESPONSE_CODE_UNSPECIFIED: _ClassVar[ResponseCode]
    RESPONSE_CODE_NO_ERROR: _ClassVar[ResponseCode]
    RESPONSE_CODE_FORMAT_ERROR: _ClassVar[ResponseCode]
    RESPONSE_CODE_SERVER_FAILURE: _ClassVar[ResponseCode]
    RESPONSE_CODE_NOT_IMPLEMENTED: _ClassVar[ResponseCode]
    RESPONSE_CODE_ERROR_ENDPOINT_NOT_FOUND: _ClassVar[ResponseCode]
    RESPONSE_CODE_ERROR_INVALID_ARGUMENT: _ClassVar[ResponseCode]
    RESPONSE_CODE_REFUSED: _ClassVar[ResponseCode]
RESPONSE_CODE_UNSPECIFIED: ResponseCode
RESPONSE_CODE_NO_ERROR: ResponseCode
RESPONSE_CODE_FORMAT_ERROR: ResponseCode
RESPONSE_CODE_SERVER_FAILURE: ResponseCode
RESPONSE_CODE_NOT_IMPLEMENTED: ResponseCode
RESPONSE_CODE_ERROR_ENDPOINT_NOT_FOUND: ResponseCode
RESPONSE_CODE_ERROR_INVALID_ARGUMENT: ResponseCode
RESPONSE_CODE_REFUSED: ResponseCode

class Prefix(_message.Message):
    __slots__ = ("address", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    length: int
    def __init__(self, address: _Optional[bytes] = ..., length: _Optional[int] = ...) -> None: ...

class DNSServer(_message.Message):
    __slots__ = ("prefixes", "port", "protocol")
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    prefixes: _containers.RepeatedCompositeFieldContainer[Prefix]
    port: int
    protocol: int
    def __init__(self, prefixes: _Optional[_Iterable[_Union[Prefix, _Mapping]]] = ..., port: _Optional[int] = ..., protocol: _Optional[int] = ...) -> None: ...

class RuleSource(_message.Message):
    __slots__ = ("kind", "namespace", "name", "path")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    path: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DNSRule(_message.Message):
    __slots__ = ("match_names", "match_patterns", "allow_all", "servers", "source")
    MATCH_NAMES_FIELD_NUMBER: _ClassVar[int]
    MATCH_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ALL_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    match_names: _containers.RepeatedScalarFieldContainer[str]
    match_patterns: _containers.RepeatedScalarFieldContainer[str]
    allow_all: bool
    servers: _containers.RepeatedCompositeFieldContainer[DNSServer]
    source: RuleSource
    def __init__(self, match_names: _Optional[_Iterable[str]] = ..., match_patterns: _Optional[_Iterable[str]] = ..., allow_all: _Optional[bool] = ..., servers: _Optional[_Iterable[_Union[DNSServer, _Mapping]]] = ..., source: _Optional[_Union[RuleSource, _Mapping]] = ...) -> None: ...

class EndpointPolicy(_message.Message):
    __slots__ = ("endpoint_id", "ips", "namespace", "pod_name", "rules", "search_suffixes")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: int
    ips: _containers.RepeatedScalarFieldContainer[bytes]
    namespace: str
    pod_name: str
    rules: _containers.RepeatedCompositeFieldContainer[DNSRule]
    search_suffixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoint_id: _Optional[int] = ..., ips: _Optional[_Iterable[bytes]] = ..., namespace: _Optional[str] = ..., pod_name: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[DNSRule, _Mapping]]] = ..., search_suffixes: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicyState(_message.Message):
    __slots__ = ("request_id", "revision", "node_name", "endpoints")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    revision: int
    node_name: str
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointPolicy]
    def __init__(self, request_id: _Optional[str] = ..., revision: _Optional[int] = ..., node_name: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[EndpointPolicy, _Mapping]]] = ...) -> None: ...

class PolicyStateResponse(_message.Message):
    __slots__ = ("response", "request_id", "message")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    response: ResponseCode
    request_id: str
    message: str
    def __init__(self, response: _Optional[_Union[ResponseCode, str]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FQDNMapping(_message.Message):
    __slots__ = ("fqdn", "record_ips", "ttl", "source_ip", "response_code", "cnames", "qtype", "lookup_time_unix_ms", "idempotency_key", "replayed")
    FQDN_FIELD_NUMBER: _ClassVar[int]
    RECORD_IPS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    CNAMES_FIELD_NUMBER: _ClassVar[int]
    QTYPE_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    fqdn: str
    record_ips: _containers.RepeatedScalarFieldContainer[bytes]
    ttl: int
    source_ip: bytes
    response_code: int
    cnames: _containers.RepeatedScalarFieldContainer[str]
    qtype: int
    lookup_time_unix_ms: int
    idempotency_key: str
    replayed: bool
    def __init__(self, fqdn: _Optional[str] = ..., record_ips: _Optional[_Iterable[bytes]] = ..., ttl: _Optional[int] = ..., source_ip: _Optional[bytes] = ..., response_code: _Optional[int] = ..., cnames: _Optional[_Iterable[str]] = ..., qtype: _Optional[int] = ..., lookup_time_unix_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class UpdateMappingResponse(_message.Message):
    __slots__ = ("response", "message")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    response: ResponseCode
    message: str
    def __init__(self, response: _Optional[_Union[ResponseCode, str]] = ..., message: _Optional[str] = ...) -> None: ...
