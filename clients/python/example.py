"""Connect, create a token, read it back, and decode the BadRequest details of a rejected call.

    pip install ./clients/python && python clients/python/example.py --addr 127.0.0.1:50051
"""
import argparse

import grpc
from google.rpc import error_details_pb2  # googleapis-common-protos
from grpc_status import rpc_status  # grpcio-status
from neurograph_client.neurograph.v1 import common_pb2, token_pb2, token_pb2_grpc

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--addr", default="127.0.0.1:50051", help="host:port of the server")
with grpc.insecure_channel(parser.parse_args().addr) as channel:
    tokens = token_pb2_grpc.TokenServiceStub(channel)
    point = common_pb2.Point3(x=1, y=2, z=3)
    new = token_pb2.Token(weight=0.5, domain=2, entity_type=5, l1_physical=point)
    created = tokens.CreateToken(token_pb2.CreateTokenRequest(token=new), timeout=10)
    print(f"created id={created.id} local_id={created.local_id}")
    got = tokens.GetToken(token_pb2.GetTokenRequest(id=created.id), timeout=10)
    print(f"got id={got.id} weight={got.weight} l1_physical=({got.l1_physical.x}, {got.l1_physical.y}, {got.l1_physical.z})")
    try:
        tokens.CreateToken(token_pb2.CreateTokenRequest(token=token_pb2.Token(weight=2)), timeout=10)
    except grpc.RpcError as error:
        print(f"rejected: {error.code().name}: {error.details()}")
        status = rpc_status.from_call(error)  # google.rpc.Status, None without details
        for detail in status.details if status else []:  # each a google.protobuf.Any
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                for violation in bad_request.field_violations:
                    print(f"violation: {violation.field}: {violation.description}")
