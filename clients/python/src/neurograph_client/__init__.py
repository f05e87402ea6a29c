"""Python client stubs for the NeuroGraph gRPC API (package neurograph.v1).

The generated modules mirror the proto package:

    from neurograph_client.neurograph.v1 import token_pb2, token_pb2_grpc

    stub = token_pb2_grpc.TokenServiceStub(grpc.insecure_channel("127.0.0.1:50051"))
    token = stub.CreateToken(token_pb2.CreateTokenRequest(token=token_pb2.Token(weight=0.5)))

Modules: common_pb2 (Point3, Space), token_pb2 / token_pb2_grpc (TokenService), grid_pb2 /
grid_pb2_grpc (GridService), cdna_pb2 / cdna_pb2_grpc (CDNAService), system_pb2 /
system_pb2_grpc (System); each with a .pyi type stub. Error details (google.rpc.BadRequest,
google.rpc.RetryInfo) come from googleapis-common-protos (`google.rpc.error_details_pb2`) and
grpcio-status (`grpc_status.rpc_status.from_call`); see example.py.
"""

__version__ = "0.1.0"
