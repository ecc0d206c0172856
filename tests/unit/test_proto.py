"""The committed gRPC stubs match the .proto file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from acns_operator.proto import fqdndata_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = "acns_operator/proto/fqdndata.proto"


def test_committed_stubs_match_the_proto_file(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'src'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "src" / PROTO),
        ],
        check=True,
    )
    for generated in sorted((tmp_path / "acns_operator" / "proto").iterdir()):
        committed = ROOT / "src" / "acns_operator" / "proto" / generated.name
        assert committed.read_text() == generated.read_text(), (
            f"{committed} is stale: run `make proto`"
        )


def test_a_mapping_round_trips_through_the_wire_format() -> None:
    mapping = fqdndata_pb2.FQDNMapping(
        fqdn="payments.example.test.",
        record_ips=[bytes([192, 0, 2, 10])],
        ttl=30,
        source_ip=bytes([10, 244, 1, 5]),
        idempotency_key="k1",
    )
    decoded = fqdndata_pb2.FQDNMapping.FromString(mapping.SerializeToString())
    assert decoded.fqdn == "payments.example.test."
    assert list(decoded.record_ips) == [b"\xc0\x00\x02\x0a"]
    assert decoded.ttl == 30
