"""A Python gRPC client (grpcio + stubs generated from proto/) against a running neurograph.

Checks the wire contract of /work/shared/API.md as another language sees it: TokenService
create/get/list with paging, GridService queries against a brute-force scan and user grids,
CDNA updates and scale validation, errors with google.rpc.BadRequest details (grpcio-status),
grpc.health.v1 and server reflection (grpcio-reflection, v1alpha, and v1 through the same
messages). Expects a fresh server: id allocation checks assume no earlier token in their pair.
AuthTest and TlsTest check access control and TLS (API.md §7) against a server started with
--api-key and --read-only-api-key (and, for TlsTest, --tls-cert/--tls-key); the other classes
expect a plaintext server without credentials, which admits their loopback calls as admin.

    python tests/python/client_test.py --addr HOST:PORT --stubs STUBS_DIR [--crate-version V]
        [--api-key ADMIN_KEY --read-only-api-key READER_KEY] [--tls-ca CA_PEM] [CLASS ...]
"""

import math
import random
import struct
import sys
import threading
import time
import unittest

import support

CONFIG = support.configure(__doc__.splitlines()[0])

import grpc  # noqa: E402
from google.protobuf import descriptor_pool  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status  # noqa: E402

from neurograph.v1 import cdna_pb2, cdna_pb2_grpc  # noqa: E402
from neurograph.v1 import common_pb2  # noqa: E402
from neurograph.v1 import grid_pb2, grid_pb2_grpc  # noqa: E402
from neurograph.v1 import system_pb2, system_pb2_grpc  # noqa: E402
from neurograph.v1 import token_pb2, token_pb2_grpc  # noqa: E402

TIMEOUT = support.RPC_TIMEOUT_SECONDS

IMPLEMENTED_SERVICES = {
    "neurograph.v1.TokenService",
    "neurograph.v1.GridService",
    "neurograph.v1.CDNAService",
    "neurograph.v1.System",
}
UNKNOWN_SERVICES = {"neurograph.v1.NoSuchService"}
INFRASTRUCTURE_SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def token_id(domain, entity_type, local_id):
    return domain << 28 | entity_type << 24 | local_id


def f32(value):
    """`value` rounded to the nearest float32, as the server's float fields carry it."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def rpc_error(call, *args, **kwargs):
    """The grpc.RpcError raised by call(*args), failing the test if the call succeeds."""
    try:
        response = call(*args, timeout=TIMEOUT, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"expected an error, got a response: {response}")


def bad_request_fields(error):
    """The field paths of the google.rpc.BadRequest violations in `error`'s status details."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0], (status.code, error.code())
    assert status.message == error.details(), (status.message, error.details())
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            assert detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


class ServerTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = support.connect()
        cls.tokens = token_pb2_grpc.TokenServiceStub(cls.channel)
        cls.grids = grid_pb2_grpc.GridServiceStub(cls.channel)
        cls.cdna = cdna_pb2_grpc.CDNAServiceStub(cls.channel)
        cls.system = system_pb2_grpc.SystemStub(cls.channel)
        cls.health = health_pb2_grpc.HealthStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def create(self, metadata=None, **fields):
        return self.tokens.CreateToken(
            token_pb2.CreateTokenRequest(token=token_pb2.Token(**fields)),
            timeout=TIMEOUT,
            metadata=metadata,
        )

    def count(self, **filter_fields):
        request = token_pb2.CountTokensRequest(filter=token_pb2.TokenFilter(**filter_fields))
        return self.tokens.CountTokens(request, timeout=TIMEOUT).count

    def list_page(self, page_size, page_token="", **filter_fields):
        request = token_pb2.ListTokensRequest(
            page_size=page_size,
            page_token=page_token,
            filter=token_pb2.TokenFilter(**filter_fields),
        )
        return self.tokens.ListTokens(request, timeout=TIMEOUT)

    def walk(self, page_size, **filter_fields):
        """Every page of a ListTokens walk, the first one included."""
        pages = [self.list_page(page_size, **filter_fields)]
        while pages[-1].next_page_token:
            self.assertLess(len(pages), 10_000, "the walk does not end")
            pages.append(self.list_page(page_size, pages[-1].next_page_token, **filter_fields))
        return pages


class TokenCreateTest(ServerTestCase):
    def test_create_with_id_zero_allocates_next_local_id_of_the_pair(self):
        first = self.create(domain=2, entity_type=5, weight=0.25)
        second = self.create(domain=2, entity_type=5, weight=0.25)
        self.assertEqual(first.id, token_id(2, 5, 1))
        self.assertEqual((first.local_id, first.domain, first.entity_type), (1, 2, 5))
        self.assertEqual(second.id, token_id(2, 5, 2))
        self.assertEqual(second.local_id, 2)

    def test_create_with_explicit_id_keeps_it_and_allocation_continues_after_it(self):
        explicit = token_id(3, 1, 100)
        created = self.create(id=explicit, weight=0.75)
        self.assertEqual(created.id, explicit)
        self.assertEqual((created.local_id, created.domain, created.entity_type), (100, 3, 1))
        allocated = self.create(domain=3, entity_type=1)
        self.assertEqual(allocated.id, token_id(3, 1, 101))

    def test_create_with_live_explicit_id_is_already_exists(self):
        explicit = token_id(3, 2, 7)
        self.create(id=explicit)
        error = rpc_error(
            self.tokens.CreateToken, token_pb2.CreateTokenRequest(token=token_pb2.Token(id=explicit))
        )
        self.assertEqual(error.code(), grpc.StatusCode.ALREADY_EXISTS, error.details())

    def test_create_with_explicit_id_of_local_id_zero_is_invalid_argument(self):
        request = token_pb2.CreateTokenRequest(token=token_pb2.Token(id=token_id(3, 3, 0)))
        error = rpc_error(self.tokens.CreateToken, request)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())

    def test_create_with_weight_above_one_is_invalid_argument_with_bad_request_detail(self):
        before = self.count()
        request = token_pb2.CreateTokenRequest(token=token_pb2.Token(weight=2.0))
        error = rpc_error(self.tokens.CreateToken, request)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())
        self.assertIn("token.weight", error.details())
        self.assertEqual(bad_request_fields(error), ["token.weight"])
        self.assertEqual(self.count(), before, "a rejected create wrote a token")

    def test_create_with_coordinate_out_of_range_reports_nested_field_path(self):
        point = common_pb2.Point3(x=4.5, y=0.0, z=0.0)
        request = token_pb2.CreateTokenRequest(token=token_pb2.Token(l2_sensory=point))
        error = rpc_error(self.tokens.CreateToken, request)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())
        self.assertIn("token.l2_sensory.x", error.details())
        self.assertEqual(bad_request_fields(error), ["token.l2_sensory.x"])


class TokenGetTest(ServerTestCase):
    def test_get_returns_the_created_token_with_quantised_values(self):
        before = int(time.time())
        created = self.create(
            domain=4,
            entity_type=2,
            weight=0.5,
            field_radius=2.554,
            field_strength=0.5,
            l1_physical=common_pb2.Point3(x=1, y=2, z=3),
            l2_sensory=common_pb2.Point3(x=0.12346, y=-3.2767, z=0),
        )
        after = int(time.time())
        got = self.tokens.GetToken(token_pb2.GetTokenRequest(id=created.id), timeout=TIMEOUT)
        self.assertEqual(got, created)
        self.assertEqual(got.weight, 0.5)
        self.assertEqual(got.field_radius, f32(2.55))  # round(255.4) = 255 steps of 0.01
        self.assertEqual(got.field_strength, f32(128 / 255))  # 127.5 rounds away from zero
        self.assertEqual((got.l1_physical.x, got.l1_physical.y, got.l1_physical.z), (1, 2, 3))
        self.assertEqual(got.l2_sensory.x, f32(1235 / 10000))
        self.assertEqual(got.l2_sensory.y, f32(-3.2767))
        for space in ("l3_motor", "l4_emotional", "l5_cognitive", "l6_social", "l7_temporal"):
            self.assertFalse(got.HasField(space), f"{space} should be undefined")
        self.assertFalse(got.HasField("l8_abstract"))
        self.assertTrue(got.HasField("flags"))
        self.assertEqual(got.flags, token_pb2.TokenFlags(active=True))
        self.assertEqual(got.timestamp.nanos, 0, "token timestamps are whole seconds")
        self.assertTrue(before - 1 <= got.timestamp.seconds <= after + 1, got.timestamp)

    def test_get_unknown_id_is_not_found(self):
        error = rpc_error(
            self.tokens.GetToken, token_pb2.GetTokenRequest(id=token_id(15, 15, 0xFFFFFF))
        )
        self.assertEqual(error.code(), grpc.StatusCode.NOT_FOUND, error.details())

    def test_get_id_zero_is_invalid_argument(self):
        error = rpc_error(self.tokens.GetToken, token_pb2.GetTokenRequest(id=0))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())


class TokenListTest(ServerTestCase):
    DOMAIN = 9

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Created out of id order (entity types 3, 1, 2, ...), so order comes from the server.
        cls.created_ids = []
        for i in range(23):
            request = token_pb2.CreateTokenRequest(
                token=token_pb2.Token(domain=cls.DOMAIN, entity_type=(3, 1, 2)[i % 3])
            )
            cls.created_ids.append(cls.tokens.CreateToken(request, timeout=TIMEOUT).id)

    def test_list_walk_returns_every_filtered_token_once_in_id_order(self):
        pages = self.walk(5, domain=self.DOMAIN)
        ids = [t.id for page in pages for t in page.tokens]
        self.assertEqual(ids, sorted(self.created_ids))
        self.assertEqual([len(p.tokens) for p in pages], [5, 5, 5, 5, 3])
        for page in pages:
            self.assertEqual(page.total_size, len(self.created_ids))
        self.assertEqual(pages[-1].next_page_token, "")
        self.assertTrue(all(p.next_page_token for p in pages[:-1]))

    def test_list_walk_without_filter_is_strictly_increasing_and_matches_count(self):
        total = self.count()
        pages = self.walk(7)
        ids = [t.id for page in pages for t in page.tokens]
        self.assertEqual(len(ids), len(set(ids)), "a token was repeated")
        self.assertEqual(ids, sorted(ids), "not ordered by id")
        self.assertEqual(len(ids), total)
        self.assertTrue(set(self.created_ids) <= set(ids))
        self.assertEqual(pages[0].total_size, total)

    def test_list_page_size_zero_means_fifty(self):
        for _ in range(55 - self.count()):
            self.create(domain=10)
        page = self.list_page(0)
        self.assertEqual(len(page.tokens), 50)
        self.assertNotEqual(page.next_page_token, "")

    def test_list_negative_page_size_is_invalid_argument(self):
        error = rpc_error(self.tokens.ListTokens, token_pb2.ListTokensRequest(page_size=-1))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())

    def test_list_malformed_page_token_is_invalid_argument(self):
        request = token_pb2.ListTokensRequest(page_size=5, page_token="not-a-page-token")
        error = rpc_error(self.tokens.ListTokens, request)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())

    def test_list_page_token_of_another_filter_is_invalid_argument(self):
        first = self.list_page(5, domain=self.DOMAIN)
        self.assertNotEqual(first.next_page_token, "")
        request = token_pb2.ListTokensRequest(
            page_size=5,
            page_token=first.next_page_token,
            filter=token_pb2.TokenFilter(domain=self.DOMAIN + 1),
        )
        error = rpc_error(self.tokens.ListTokens, request)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())


class HealthTest(ServerTestCase):
    def check(self, service):
        request = health_pb2.HealthCheckRequest(service=service)
        return self.health.Check(request, timeout=TIMEOUT).status

    def test_health_check_is_serving_for_server_and_implemented_services(self):
        for service in ["", *sorted(IMPLEMENTED_SERVICES)]:
            with self.subTest(service=service):
                self.assertEqual(self.check(service), health_pb2.HealthCheckResponse.SERVING)

    def test_health_check_of_unknown_services_is_not_found(self):
        for service in sorted(UNKNOWN_SERVICES):
            with self.subTest(service=service):
                error = rpc_error(
                    self.health.Check, health_pb2.HealthCheckRequest(service=service)
                )
                self.assertEqual(error.code(), grpc.StatusCode.NOT_FOUND, error.details())

    def test_health_watch_starts_with_serving(self):
        stream = self.health.Watch(
            health_pb2.HealthCheckRequest(service="neurograph.v1.TokenService"), timeout=TIMEOUT
        )
        try:
            first = next(stream)
        finally:
            stream.cancel()
        self.assertEqual(first.status, health_pb2.HealthCheckResponse.SERVING)


class ReflectionTest(ServerTestCase):
    def test_reflection_v1alpha_lists_only_implemented_services(self):
        services = set(ProtoReflectionDescriptorDatabase(self.channel).get_services())
        self.assertEqual(services, IMPLEMENTED_SERVICES | INFRASTRUCTURE_SERVICES)

    def test_reflection_v1_lists_the_same_services(self):
        # v1 and v1alpha messages are identical on the wire; only the method path differs.
        call = self.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = list(call(iter([request]), timeout=TIMEOUT))
        self.assertEqual(len(responses), 1)
        self.assertFalse(responses[0].HasField("error_response"), responses[0].error_response)
        services = {s.name for s in responses[0].list_services_response.service}
        self.assertEqual(services, IMPLEMENTED_SERVICES | INFRASTRUCTURE_SERVICES)

    def test_reflection_serves_the_same_token_service_as_the_local_protos(self):
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))
        remote = pool.FindServiceByName("neurograph.v1.TokenService")
        local = token_pb2.DESCRIPTOR.services_by_name["TokenService"]
        self.assertEqual(
            [(m.name, m.input_type.full_name, m.output_type.full_name) for m in remote.methods],
            [(m.name, m.input_type.full_name, m.output_type.full_name) for m in local.methods],
        )
        for name in ("Token", "UpdateTokenRequest", "ListTokensRequest", "TokenEvent"):
            with self.subTest(message=name):
                remote_message = pool.FindMessageTypeByName(f"neurograph.v1.{name}")
                local_message = token_pb2.DESCRIPTOR.message_types_by_name[name]
                self.assertEqual(field_signature(remote_message), field_signature(local_message))

    def test_reflection_resolves_well_known_imports(self):
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))
        update = pool.FindMessageTypeByName("neurograph.v1.UpdateTokenRequest")
        self.assertEqual(
            update.fields_by_name["update_mask"].message_type.full_name, "google.protobuf.FieldMask"
        )
        token = pool.FindMessageTypeByName("neurograph.v1.Token")
        self.assertEqual(
            token.fields_by_name["timestamp"].message_type.full_name, "google.protobuf.Timestamp"
        )
        self.assertEqual(
            token.fields_by_name["l1_physical"].message_type.full_name, "neurograph.v1.Point3"
        )


def field_signature(message):
    return [
        (f.number, f.name, f.type, f.message_type.full_name if f.message_type else "")
        for f in message.fields
    ]


class SystemTest(ServerTestCase):
    def test_system_health_is_healthy_and_reports_version_and_token_count(self):
        response = self.system.Health(system_pb2.HealthRequest(), timeout=TIMEOUT)
        self.assertEqual(response.status, system_pb2.HEALTH_STATUS_HEALTHY)
        self.assertEqual(response.storage_backend, "memory")
        self.assertEqual(response.tokens_count, self.count())
        if CONFIG.crate_version:
            self.assertEqual(response.version, CONFIG.crate_version)
        else:
            self.assertNotEqual(response.version, "")

    def test_system_ready_reports_every_component_ok(self):
        response = self.system.Ready(system_pb2.ReadyRequest(), timeout=TIMEOUT)
        self.assertTrue(response.ready)
        self.assertIn("token_store", response.checks)
        self.assertIn("storage", response.checks)
        self.assertEqual(set(response.checks.values()), {"ok"}, dict(response.checks))

    def test_system_status_reports_running_with_memory_backend(self):
        response = self.system.Status(system_pb2.StatusRequest(), timeout=TIMEOUT)
        self.assertEqual(response.state, system_pb2.SERVER_STATE_RUNNING)
        self.assertEqual(response.storage_backend, "memory")
        self.assertEqual(response.cdna_profile, "default")
        self.assertEqual(response.tokens.total, self.count())
        self.assertGreaterEqual(response.connections.total, 1)
        self.assertGreaterEqual(response.connections.active, 1)


def stored(value, scale):
    """The value the server computes with: the quantised q of a returned float, over scale."""
    return round(value * scale) / scale


class GridTest(ServerTestCase):
    SCALE = 10000.0  # L2 Sensory

    def setUp(self):
        rng = random.Random(42)
        tokens = []
        for _ in range(60):
            # Few distinct coordinates, so that distance ties are common.
            point = common_pb2.Point3(**{a: rng.randint(-3, 3) / 1000 for a in "xyz"})
            tokens.append(token_pb2.Token(weight=0.5, field_radius=1.0, field_strength=1.0,
                                          l2_sensory=point))
        self.tokens.ClearTokens(token_pb2.ClearTokensRequest(), timeout=TIMEOUT)
        reply = self.tokens.BatchCreateTokens(
            token_pb2.BatchCreateTokensRequest(tokens=tokens), timeout=TIMEOUT
        )
        self.created = list(reply.tokens)

    def brute_force(self, centre):
        hits = []
        for token in self.created:
            p = token.l2_sensory
            d = math.sqrt(sum((stored(v, self.SCALE) - c) ** 2
                              for v, c in zip((p.x, p.y, p.z), centre)))
            hits.append((d, token.id))
        return sorted(hits)

    def test_neighbors_and_range_equal_a_brute_force_scan(self):
        space = common_pb2.SPACE_L2_SENSORY
        for origin in self.created[:10]:
            p = origin.l2_sensory
            centre = [stored(v, self.SCALE) for v in (p.x, p.y, p.z)]
            expected = [(d, i) for d, i in self.brute_force(centre) if i != origin.id][:7]
            reply = self.grids.FindNeighbors(
                grid_pb2.FindNeighborsRequest(token_id=origin.id, space=space, k=7),
                timeout=TIMEOUT,
            )
            self.assertEqual([(n.distance, n.token_id) for n in reply.neighbors], expected)
        centre = [f32(0.0011), f32(-0.0004), f32(0.0)]
        radius = 0.002
        expected = [(d, i) for d, i in self.brute_force(centre) if d <= radius]
        reply = self.grids.RangeQuery(
            grid_pb2.RangeQueryRequest(space=space, radius=radius, limit=5,
                                       center=common_pb2.Point3(x=centre[0], y=centre[1],
                                                                z=centre[2])),
            timeout=TIMEOUT,
        )
        self.assertEqual(reply.total_in_range, len(expected))
        self.assertEqual([(n.distance, n.token_id) for n in reply.results], expected[:5])

    def test_bad_queries_name_every_field_in_bad_request_details(self):
        error = rpc_error(
            self.grids.RangeQuery,
            grid_pb2.RangeQueryRequest(space=common_pb2.SPACE_UNSPECIFIED, radius=-1.0,
                                       center=common_pb2.Point3(x=float("nan"))),
        )
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(bad_request_fields(error), ["space", "center.x", "radius"])
        error = rpc_error(
            self.grids.FindNeighbors,
            grid_pb2.FindNeighborsRequest(token_id=self.created[0].id,
                                          space=common_pb2.SPACE_L1_PHYSICAL, k=1),
        )
        self.assertEqual(error.code(), grpc.StatusCode.FAILED_PRECONDITION, error.details())

    def test_user_grid_membership_and_grid_0_rules(self):
        grid = self.grids.CreateGrid(
            grid_pb2.CreateGridRequest(config=grid_pb2.GridConfig(min_field_nodes=1)),
            timeout=TIMEOUT,
        )
        self.assertEqual(grid.config.density_threshold, 0.5)
        self.assertTrue(grid.config.HasField("min_field_nodes"))
        for token in self.created[:3]:
            self.grids.AddToken(grid_pb2.AddTokenRequest(grid_id=grid.grid_id, token_id=token.id),
                                timeout=TIMEOUT)
        got = self.grids.GetGrid(grid_pb2.GetGridRequest(grid_id=grid.grid_id), timeout=TIMEOUT)
        self.assertEqual(got.token_count, 3)
        error = rpc_error(self.grids.DeleteGrid, grid_pb2.DeleteGridRequest(grid_id=0))
        self.assertEqual(error.code(), grpc.StatusCode.FAILED_PRECONDITION)
        error = rpc_error(
            self.grids.AddToken, grid_pb2.AddTokenRequest(grid_id=0, token_id=self.created[0].id)
        )
        self.assertEqual(error.code(), grpc.StatusCode.FAILED_PRECONDITION)
        listed = self.grids.ListGrids(grid_pb2.ListGridsRequest(), timeout=TIMEOUT).grids
        self.assertEqual(listed[0].grid_id, 0)
        self.assertEqual(listed[0].token_count, self.count())


class WatchResumeTest(ServerTestCase):
    """WatchTokens resumed with from_sequence after its connection was killed (API.md §10)."""

    WRITES = 300

    def write_all(self, expected, errors):
        """Creates, updates and deletes tokens over a channel of its own, recording each
        write's (kind, id, commit sequence) from the x-neurograph-commit-sequence header."""
        channel = support.connect()
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        kinds = token_pb2.TokenEventKind
        live = []
        try:
            rng = random.Random(7)
            for i in range(self.WRITES):
                choice = rng.random()
                if live and choice < 0.2:
                    target = live.pop(rng.randrange(len(live)))
                    request = token_pb2.DeleteTokenRequest(id=target)
                    _, call = tokens.DeleteToken.with_call(request, timeout=TIMEOUT)
                    kind, raw = kinds.TOKEN_EVENT_KIND_DELETED, target
                elif live and choice < 0.5:
                    target = rng.choice(live)
                    token = token_pb2.Token(id=target, weight=rng.random())
                    request = token_pb2.UpdateTokenRequest(token=token)
                    updated, call = tokens.UpdateToken.with_call(request, timeout=TIMEOUT)
                    kind, raw = kinds.TOKEN_EVENT_KIND_UPDATED, updated.id
                else:
                    token = token_pb2.Token(weight=0.5, domain=3)
                    request = token_pb2.CreateTokenRequest(token=token)
                    created, call = tokens.CreateToken.with_call(request, timeout=TIMEOUT)
                    live.append(created.id)
                    kind, raw = kinds.TOKEN_EVENT_KIND_CREATED, created.id
                headers = dict(call.initial_metadata())
                expected.append((kind, raw, int(headers["x-neurograph-commit-sequence"])))
        except Exception as error:  # reported by the test thread
            errors.append(error)
        finally:
            channel.close()

    def events(self, stream, count, into):
        for event in stream:
            into.append((event.kind, event.id, event.sequence))
            if len(into) >= count:
                return

    def test_a_watch_resumed_after_its_connection_was_killed_loses_and_repeats_nothing(self):
        # The first watcher starts from the beginning of this fresh server's feed.
        first_channel = support.connect()
        first = token_pb2_grpc.TokenServiceStub(first_channel).WatchTokens(
            token_pb2.WatchTokensRequest(from_sequence=0), timeout=120
        )
        expected, errors = [], []
        writer = threading.Thread(target=self.write_all, args=(expected, errors))
        writer.start()
        seen = []
        self.events(first, 60, seen)
        # Kill the connection mid-stream while the writer goes on.
        first_channel.close()
        writer.join(timeout=120)
        self.assertFalse(writer.is_alive(), "the writer did not finish")
        self.assertEqual(errors, [])
        self.assertEqual(len(seen), 60)
        # Resume from the last sequence received, on a new connection.
        second_channel = support.connect()
        try:
            resumed = token_pb2_grpc.TokenServiceStub(second_channel).WatchTokens(
                token_pb2.WatchTokensRequest(from_sequence=seen[-1][2]), timeout=120
            )
            self.events(resumed, self.WRITES, seen)
            resumed.cancel()
        finally:
            second_channel.close()
        sequences = [sequence for _, _, sequence in seen]
        self.assertEqual(sequences, sorted(set(sequences)), "out of order or repeated")
        self.assertEqual(seen, sorted(expected, key=lambda e: e[2]))


class CdnaTest(ServerTestCase):
    def test_fresh_config_and_a_stale_revision_is_aborted(self):
        config = self.cdna.GetConfig(cdna_pb2.GetConfigRequest(), timeout=TIMEOUT)
        self.assertEqual(config.version, "2.1.0")
        self.assertEqual(list(config.dimension_scales), [1.0] * 8)
        request = cdna_pb2.UpdateConfigRequest(
            config=cdna_pb2.CDNAConfig(max_token_weight=0.5),
            update_mask={"paths": ["max_token_weight"]},
            expected_revision=config.revision + 5,
        )
        error = rpc_error(self.cdna.UpdateConfig, request)
        self.assertEqual(error.code(), grpc.StatusCode.ABORTED)
        request.expected_revision = config.revision
        updated = self.cdna.UpdateConfig(request, timeout=TIMEOUT)
        self.assertEqual(updated.revision, config.revision + 1)
        self.assertEqual(updated.max_token_weight, 0.5)
        # The new limit applies to token writes, named in the BadRequest details.
        error = rpc_error(
            self.tokens.CreateToken,
            token_pb2.CreateTokenRequest(token=token_pb2.Token(weight=0.75)),
        )
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(bad_request_fields(error), ["token.weight"])

    def test_validate_scales_reports_errors_and_warnings_per_dimension(self):
        reply = self.cdna.ValidateScales(
            cdna_pb2.ValidateScalesRequest(scales=[1, 1, 1, 1, 31, 1, 16, 1]), timeout=TIMEOUT
        )
        self.assertFalse(reply.valid)
        self.assertEqual([e[:4] for e in reply.errors], ["L5: "])
        self.assertEqual([w[:4] for w in reply.warnings], ["L7: "])
        error = rpc_error(self.cdna.ValidateScales, cdna_pb2.ValidateScalesRequest(scales=[1] * 7))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)


def bearer(key):
    """Call metadata sending `key` as `authorization: Bearer <key>`."""
    return (("authorization", f"Bearer {key}"),)


def x_api_key(key):
    """Call metadata sending `key` as `x-api-key: <key>`."""
    return (("x-api-key", key),)


def refusal(error):
    """What a refused call says: its status code and message."""
    return error.code(), error.details()


MISSING_CREDENTIALS = (grpc.StatusCode.UNAUTHENTICATED, "missing credentials")
UNKNOWN_KEY = (grpc.StatusCode.UNAUTHENTICATED, "invalid credentials: unknown API key")
READER_MAY_NOT_CLEAR = (
    grpc.StatusCode.PERMISSION_DENIED,
    "permission denied: neurograph.v1.TokenService/ClearTokens needs role admin;"
    ' credential "read-only" has role reader',
)


def health_check(channel):
    """grpc.health.v1 Check of the server as a whole on `channel`: its status, or the error."""
    try:
        request = health_pb2.HealthCheckRequest()
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT).status
    except grpc.RpcError as error:
        return error


def skip_unless_keyed():
    if not (CONFIG.api_key and CONFIG.read_only_api_key):
        raise unittest.SkipTest("needs --api-key and --read-only-api-key (a keyed server)")


class AuthTest(ServerTestCase):
    """A server started with --api-key (admin) and --read-only-api-key (reader)."""

    @classmethod
    def setUpClass(cls):
        skip_unless_keyed()
        super().setUpClass()
        cls.admin = bearer(CONFIG.api_key)
        cls.reader = bearer(CONFIG.read_only_api_key)

    def count_as(self, metadata):
        request = token_pb2.CountTokensRequest()
        return self.tokens.CountTokens(request, timeout=TIMEOUT, metadata=metadata).count

    def test_calls_without_metadata_are_unauthenticated_missing_credentials(self):
        for method, call, request in (
            ("CountTokens", self.tokens.CountTokens, token_pb2.CountTokensRequest()),
            ("ClearTokens", self.tokens.ClearTokens, token_pb2.ClearTokensRequest()),
            ("Status", self.system.Status, system_pb2.StatusRequest()),
            ("ListGrids", self.grids.ListGrids, grid_pb2.ListGridsRequest()),
        ):
            with self.subTest(method=method):
                self.assertEqual(refusal(rpc_error(call, request)), MISSING_CREDENTIALS)

    def test_an_unknown_key_is_unauthenticated_as_bearer_and_as_x_api_key(self):
        for metadata in (bearer("no-such-key"), x_api_key("no-such-key")):
            with self.subTest(metadata=metadata[0][0]):
                error = rpc_error(
                    self.tokens.CountTokens, token_pb2.CountTokensRequest(), metadata=metadata
                )
                self.assertEqual(refusal(error), UNKNOWN_KEY)

    def test_the_reader_key_counts_but_may_not_clear_or_create_and_changes_nothing(self):
        self.create(weight=0.5, metadata=self.admin)
        before = self.count_as(self.reader)
        self.assertGreaterEqual(before, 1)
        error = rpc_error(
            self.tokens.ClearTokens, token_pb2.ClearTokensRequest(), metadata=self.reader
        )
        self.assertEqual(refusal(error), READER_MAY_NOT_CLEAR)
        error = rpc_error(
            self.tokens.CreateToken,
            token_pb2.CreateTokenRequest(token=token_pb2.Token(weight=0.5)),
            metadata=self.reader,
        )
        self.assertEqual(error.code(), grpc.StatusCode.PERMISSION_DENIED, error.details())
        self.assertIn("CreateToken needs role writer", error.details())
        self.assertEqual(self.count_as(self.reader), before, "a refused call changed the store")

    def test_the_admin_key_clears_tokens_as_bearer_and_as_x_api_key(self):
        for metadata in (self.admin, x_api_key(CONFIG.api_key)):
            with self.subTest(metadata=metadata[0][0]):
                self.create(weight=0.5, metadata=self.admin)
                self.create(weight=0.5, metadata=self.admin)
                reply = self.tokens.ClearTokens(
                    token_pb2.ClearTokensRequest(), timeout=TIMEOUT, metadata=metadata
                )
                self.assertGreaterEqual(reply.cleared, 2)
                self.assertEqual(self.count_as(self.reader), 0)

    def test_health_and_reflection_need_no_credential(self):
        for service in ("", "neurograph.v1.TokenService"):
            with self.subTest(service=service):
                reply = self.health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
                )
                self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)
        services = set(ProtoReflectionDescriptorDatabase(self.channel).get_services())
        self.assertEqual(services, IMPLEMENTED_SERVICES | INFRASTRUCTURE_SERVICES)


class TlsTest(ServerTestCase):
    """A keyed server on TLS (--tls-cert, --tls-key), the CA that signed it given as --tls-ca.

    The class's channel (support.connect) trusts only that CA and dials 127.0.0.1:PORT, so
    grpcio checks the certificate's IP address SAN.
    """

    @classmethod
    def setUpClass(cls):
        skip_unless_keyed()
        if not CONFIG.tls_ca:
            raise unittest.SkipTest("needs --tls-ca (a TLS server)")
        super().setUpClass()

    def test_health_check_over_tls_needs_no_credential(self):
        self.assertEqual(health_check(self.channel), health_pb2.HealthCheckResponse.SERVING)

    def test_calls_over_tls_need_a_key_and_its_role(self):
        error = rpc_error(self.tokens.CountTokens, token_pb2.CountTokensRequest())
        self.assertEqual(refusal(error), MISSING_CREDENTIALS)
        reader = bearer(CONFIG.read_only_api_key)
        self.create(weight=0.5, metadata=bearer(CONFIG.api_key))
        counted = self.tokens.CountTokens(
            token_pb2.CountTokensRequest(), timeout=TIMEOUT, metadata=reader
        )
        self.assertGreaterEqual(counted.count, 1)
        error = rpc_error(self.tokens.ClearTokens, token_pb2.ClearTokensRequest(), metadata=reader)
        self.assertEqual(refusal(error), READER_MAY_NOT_CLEAR)

    def test_access_token_call_credentials_send_the_key_as_a_bearer(self):
        # grpcio's own way to send a bearer token: call credentials composed into the channel's
        # TLS credentials (grpcio attaches call credentials to secure channels only; plaintext
        # clients send the metadata themselves, as AuthTest does).
        reader = support.connect(grpc.access_token_call_credentials(CONFIG.read_only_api_key))
        admin = support.connect(grpc.access_token_call_credentials(CONFIG.api_key))
        try:
            as_reader = token_pb2_grpc.TokenServiceStub(reader)
            as_admin = token_pb2_grpc.TokenServiceStub(admin)

            def count():
                return as_reader.CountTokens(token_pb2.CountTokensRequest(), timeout=TIMEOUT).count

            as_admin.CreateToken(
                token_pb2.CreateTokenRequest(token=token_pb2.Token(weight=0.5)), timeout=TIMEOUT
            )
            self.assertGreaterEqual(count(), 1)
            error = rpc_error(as_reader.ClearTokens, token_pb2.ClearTokensRequest())
            self.assertEqual(refusal(error), READER_MAY_NOT_CLEAR)
            as_admin.ClearTokens(token_pb2.ClearTokensRequest(), timeout=TIMEOUT)
            self.assertEqual(count(), 0)
        finally:
            reader.close()
            admin.close()

    def test_the_certificate_is_checked_against_the_name_grpcio_expects(self):
        def check_as(name):
            options = [("grpc.ssl_target_name_override", name)]
            channel = grpc.secure_channel(CONFIG.addr, support.tls_credentials(), options=options)
            try:
                return health_check(channel)
            finally:
                channel.close()

        # The certificate's DNS SAN.
        self.assertEqual(check_as("localhost"), health_pb2.HealthCheckResponse.SERVING)
        error = check_as("not-the-server.example")
        self.assertIsInstance(error, grpc.RpcError)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        self.assertIn("Hostname Verification Check failed", error.details())

    def test_a_plaintext_client_gets_no_answer_from_the_tls_port(self):
        channel = grpc.insecure_channel(CONFIG.addr)
        try:
            error = health_check(channel)
        finally:
            channel.close()
        self.assertIsInstance(error, grpc.RpcError)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())

    def test_a_client_trusting_only_other_roots_fails_the_handshake(self):
        # grpcio's default roots (here GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, else its bundled set)
        # do not hold the test CA.
        channel = grpc.secure_channel(CONFIG.addr, grpc.ssl_channel_credentials())
        try:
            error = health_check(channel)
        finally:
            channel.close()
        self.assertIsInstance(error, grpc.RpcError)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        self.assertIn("CERTIFICATE_VERIFY_FAILED", error.details())


if __name__ == "__main__":
    support.main(sys.modules[__name__])
