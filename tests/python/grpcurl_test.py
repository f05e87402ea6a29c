"""The real grpcurl 1.8.6 (server reflection only) against a running neurograph.

grpcurl 1.8.6 speaks only grpc.reflection.v1alpha and resolves every type through it, so these
checks show that a stock command-line client can list, describe and call the server with JSON.
GrpcurlTest expects a plaintext server without credentials; GrpcurlTlsTest a server started with
--api-key, --read-only-api-key, --tls-cert and --tls-key (API.md §7), whose keys and CA it is
given.

    python tests/python/grpcurl_test.py --addr HOST:PORT --grpcurl PATH GrpcurlTest
    python tests/python/grpcurl_test.py --addr HOST:PORT --grpcurl PATH --tls-ca CA_PEM \
        --api-key ADMIN_KEY --read-only-api-key READER_KEY GrpcurlTlsTest
"""

import json
import subprocess
import sys
import unittest

import support

CONFIG = support.configure(__doc__.splitlines()[0])

# grpcurl exits with 64 + the gRPC status code when the call fails.
GRPCURL_STATUS_EXIT_BASE = 64
INVALID_ARGUMENT = 3
NOT_FOUND = 5
PERMISSION_DENIED = 7
UNAUTHENTICATED = 16
# grpcurl's exit code when it cannot connect (or complete a TLS handshake) at all.
GRPCURL_DIAL_FAILED = 1


class Grpcurl:
    """Runs grpcurl against CONFIG.addr and keeps what it printed.

    `transport` are the connection flags (plaintext by default, e.g. ["-cacert", PEM] for TLS);
    `headers` become -H flags, which grpcurl sends with both the reflection requests and the call.
    """

    def __init__(self, *args, data=None, transport=("-plaintext",), headers=()):
        command = [CONFIG.grpcurl, *transport, "-max-time", "10"]
        for header in headers:
            command += ["-H", header]
        if data is not None:
            command += ["-d", json.dumps(data) if not isinstance(data, str) else data]
        command += [CONFIG.addr, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        self.command = " ".join(command)
        self.returncode = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr

    def __str__(self):
        return (
            f"$ {self.command}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )

    def ok(self, test):
        test.assertEqual(self.returncode, 0, str(self))
        return self

    def json(self, test):
        self.ok(test)
        try:
            return json.loads(self.stdout)
        except ValueError as error:
            test.fail(f"not JSON ({error}):\n{self}")


def require_grpcurl_1_8_6():
    if not CONFIG.grpcurl:
        raise unittest.SkipTest("no --grpcurl given")
    version = subprocess.run(
        [CONFIG.grpcurl, "-version"], capture_output=True, text=True, timeout=30
    )
    assert "v1.8.6" in version.stdout + version.stderr, version


class GrpcurlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_grpcurl_1_8_6()

    def test_list_shows_every_service(self):
        listed = Grpcurl("list").ok(self).stdout.split()
        for service in (
            "neurograph.v1.TokenService",
            "neurograph.v1.GridService",
            "neurograph.v1.System",
            "neurograph.v1.CDNAService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ):
            self.assertIn(service, listed)

    def test_list_token_service_shows_its_methods(self):
        methods = Grpcurl("list", "neurograph.v1.TokenService").ok(self).stdout.split()
        for method in ("CreateToken", "GetToken", "ListTokens", "WatchTokens"):
            self.assertIn(f"neurograph.v1.TokenService.{method}", methods)

    def test_describe_token_resolves_fields_and_well_known_types(self):
        out = Grpcurl("describe", "neurograph.v1.Token").ok(self).stdout
        self.assertIn("neurograph.v1.Token is a message:", out)
        for line in (
            "uint32 id = 1;",
            "float weight = 5;",
            ".neurograph.v1.TokenFlags flags = 8;",
            ".google.protobuf.Timestamp timestamp = 9;",
            ".neurograph.v1.Point3 l1_physical = 10;",
            ".neurograph.v1.Point3 l8_abstract = 17;",
        ):
            self.assertIn(line, out)

    def test_describe_update_request_resolves_field_mask(self):
        out = Grpcurl("describe", "neurograph.v1.UpdateTokenRequest").ok(self).stdout
        self.assertIn(".google.protobuf.FieldMask update_mask = 2;", out)

    def test_describe_each_neurograph_and_health_service(self):
        for service, method in (
            ("neurograph.v1.TokenService", "rpc CreateToken ( .neurograph.v1.CreateTokenRequest )"),
            ("neurograph.v1.System", "rpc Status ( .neurograph.v1.StatusRequest )"),
            (
                "neurograph.v1.CDNAService",
                "rpc UpdateConfig ( .neurograph.v1.UpdateConfigRequest )",
            ),
            ("grpc.health.v1.Health", "rpc Watch ( .grpc.health.v1.HealthCheckRequest )"),
        ):
            with self.subTest(service=service):
                out = Grpcurl("describe", service).ok(self).stdout
                self.assertIn(f"{service} is a service:", out)
                self.assertIn(method, out)

    # grpcurl 1.8.6 speaks only v1alpha, yet the list names grpc.reflection.v1 too: the
    # v1alpha service must also hold the v1 descriptor for this to work.
    def test_describe_every_listed_service_succeeds(self):
        out = Grpcurl("describe").ok(self).stdout
        self.assertIn("rpc CreateToken ( .neurograph.v1.CreateTokenRequest )", out)
        self.assertIn("grpc.reflection.v1.ServerReflection is a service:", out)

    def test_create_then_get_token_with_json(self):
        created = Grpcurl(
            "neurograph.v1.TokenService/CreateToken",
            data='{"token":{"weight":0.5,"l1Physical":{"x":1,"y":2,"z":3}}}',
        ).json(self)
        self.assertIsInstance(created.get("id"), int, created)
        self.assertGreater(created["id"], 0)
        self.assertEqual(created["localId"], created["id"] & 0xFFFFFF)
        self.assertEqual(created["weight"], 0.5)
        self.assertEqual(created["l1Physical"], {"x": 1, "y": 2, "z": 3})
        self.assertEqual(created["flags"], {"active": True})
        self.assertRegex(created["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertNotIn("l2Sensory", created)

        got = Grpcurl("neurograph.v1.TokenService/GetToken", data={"id": created["id"]}).json(self)
        self.assertEqual(got, created)

    def test_create_with_invalid_weight_fails_with_invalid_argument(self):
        call = Grpcurl("neurograph.v1.TokenService/CreateToken", data={"token": {"weight": 2.0}})
        self.assertEqual(call.returncode, GRPCURL_STATUS_EXIT_BASE + INVALID_ARGUMENT, str(call))
        self.assertIn("Code: InvalidArgument", call.stderr)
        self.assertIn("token.weight", call.stderr)
        # grpcurl decodes the details through reflection (the server serves google.rpc).
        details = [
            json.loads(line.split(")", 1)[1])
            for line in call.stderr.splitlines()
            if "type.googleapis.com/google.rpc.BadRequest" in line
        ]
        self.assertEqual(len(details), 1, str(call))
        self.assertEqual(
            [v["field"] for v in details[0].get("fieldViolations", [])], ["token.weight"], str(call)
        )

    def test_get_unknown_token_fails_with_not_found(self):
        call = Grpcurl("neurograph.v1.TokenService/GetToken", data={"id": 0xFFFFFFFF})
        self.assertEqual(call.returncode, GRPCURL_STATUS_EXIT_BASE + NOT_FOUND, str(call))
        self.assertIn("Code: NotFound", call.stderr)

    def test_health_check_is_serving(self):
        for service in ("", "neurograph.v1.TokenService", "neurograph.v1.CDNAService"):
            with self.subTest(service=service):
                reply = Grpcurl("grpc.health.v1.Health/Check", data={"service": service})
                self.assertEqual(reply.json(self), {"status": "SERVING"})

    def test_system_status_reports_enum_names_in_json(self):
        status = Grpcurl("neurograph.v1.System/Status", data={}).json(self)
        self.assertEqual(status["state"], "SERVER_STATE_RUNNING")
        self.assertEqual(status["storageBackend"], "memory")

    def test_grid_queries_name_spaces_by_enum_and_answer_as_the_readme_shows(self):
        def call(method, data):
            return Grpcurl(f"neurograph.v1.GridService/{method}", data=data).json(self)

        # Far from what other tests create: L6 Social around (3, 3, 3).
        points = [(3.0, 3.0, 3.0), (3.1, 3.0, 3.0), (3.0, 3.2, 3.0)]
        created = Grpcurl(
            "neurograph.v1.TokenService/BatchCreateTokens",
            data={"tokens": [
                {"weight": 0.5, "l6Social": {"x": x, "y": y, "z": z}} for x, y, z in points
            ]},
        ).json(self)["tokens"]
        ids = [t["id"] for t in created]
        found = call("FindNeighbors", {"tokenId": ids[0], "space": "SPACE_L6_SOCIAL", "k": 2})
        self.assertEqual([n["tokenId"] for n in found["neighbors"]], ids[1:])
        self.assertAlmostEqual(found["neighbors"][0]["distance"], 0.1, places=12)
        ranged = call("RangeQuery", {"space": "SPACE_L6_SOCIAL",
                                     "center": {"x": 3, "y": 3, "z": 3}, "radius": 0.15})
        self.assertEqual(ranged["totalInRange"], "2")
        grid = call("CreateGrid", {"config": {"minFieldNodes": 1}})
        self.assertEqual(grid["config"], {"densityThreshold": 0.5, "minFieldNodes": 1})
        bad = Grpcurl("neurograph.v1.GridService/RangeQuery",
                      data={"space": "SPACE_UNSPECIFIED", "radius": 1})
        self.assertEqual(bad.returncode, GRPCURL_STATUS_EXIT_BASE + INVALID_ARGUMENT, str(bad))
        self.assertIn("space: must be one of", bad.stderr)

    def test_cdna_switch_profile_and_discarded_quarantine_as_the_readme_shows(self):
        def call(method, data):
            return Grpcurl(f"neurograph.v1.CDNAService/{method}", data=data).json(self)

        before = call("GetConfig", {})
        started = call("StartQuarantine", {"durationSeconds": 120})
        self.assertTrue(started["active"], started)
        self.assertEqual(started["durationSeconds"], 120)
        switched = call("SwitchProfile", {"profileId": "creative"})
        self.assertEqual(switched["newProfile"], "creative")
        self.assertTrue(any(w.startswith("L7: ") for w in switched["warnings"]), switched)
        # grpcurl 1.8.x reads a FieldMask as an object with "paths".
        updated = call(
            "UpdateConfig",
            {"config": {"flags": {"strict": True}}, "updateMask": {"paths": ["flags.strict"]}},
        )
        self.assertTrue(updated["flags"]["strict"], updated)
        status = call("GetQuarantineStatus", {})
        self.assertEqual(status["configChanges"], "2", status)
        stopped = call("StopQuarantine", {"apply": False})
        self.assertNotIn("active", stopped)
        after = call("GetConfig", {})
        self.assertEqual(after["profile"], before["profile"])
        self.assertEqual(after.get("flags"), before.get("flags"))
        self.assertEqual(int(after["revision"]), int(before["revision"]) + 3)
        history = call("GetHistory", {"pageSize": 1})
        self.assertEqual(history["entries"][0]["action"], "HISTORY_ACTION_QUARANTINE_STOP_DISCARDED")
        self.assertTrue(history["nextPageToken"])


class GrpcurlTlsTest(unittest.TestCase):
    """A keyed TLS server: grpcurl trusts the test CA (-cacert) and sends keys with -H."""

    @classmethod
    def setUpClass(cls):
        require_grpcurl_1_8_6()
        if not (CONFIG.tls_ca and CONFIG.api_key and CONFIG.read_only_api_key):
            raise unittest.SkipTest("needs --tls-ca, --api-key and --read-only-api-key")
        cls.tls = ("-cacert", CONFIG.tls_ca)
        cls.reader = f"authorization: Bearer {CONFIG.read_only_api_key}"
        cls.admin = f"authorization: Bearer {CONFIG.api_key}"

    def grpcurl(self, *args, headers=(), data=None):
        return Grpcurl(*args, transport=self.tls, headers=headers, data=data)

    def assert_refused(self, call, code, name, message):
        self.assertEqual(call.returncode, GRPCURL_STATUS_EXIT_BASE + code, str(call))
        self.assertIn(f"Code: {name}\n", call.stderr, str(call))
        self.assertIn(f"Message: {message}\n", call.stderr, str(call))

    def test_count_tokens_with_the_reader_key_as_bearer(self):
        self.grpcurl(
            "neurograph.v1.TokenService/CreateToken",
            headers=[self.admin],
            data={"token": {"weight": 0.5}},
        ).json(self)
        reply = self.grpcurl("neurograph.v1.TokenService/CountTokens", headers=[self.reader])
        self.assertGreaterEqual(int(reply.json(self)["count"]), 1, str(reply))

    def test_list_and_describe_need_no_credential(self):
        listed = self.grpcurl("list").ok(self).stdout.split()
        for service in ("neurograph.v1.TokenService", "grpc.health.v1.Health"):
            self.assertIn(service, listed)
        out = self.grpcurl("describe", "neurograph.v1.TokenService").ok(self).stdout
        self.assertIn("rpc ClearTokens ( .neurograph.v1.ClearTokensRequest )", out)

    def test_a_call_without_a_header_is_unauthenticated_missing_credentials(self):
        call = self.grpcurl("neurograph.v1.TokenService/CountTokens")
        self.assert_refused(call, UNAUTHENTICATED, "Unauthenticated", "missing credentials")

    def test_an_unknown_key_is_unauthenticated(self):
        call = self.grpcurl(
            "neurograph.v1.TokenService/CountTokens", headers=["x-api-key: no-such-key"]
        )
        self.assert_refused(
            call, UNAUTHENTICATED, "Unauthenticated", "invalid credentials: unknown API key"
        )

    def test_clear_tokens_with_the_reader_key_is_permission_denied_naming_the_role(self):
        call = self.grpcurl("neurograph.v1.TokenService/ClearTokens", headers=[self.reader])
        self.assert_refused(
            call,
            PERMISSION_DENIED,
            "PermissionDenied",
            "permission denied: neurograph.v1.TokenService/ClearTokens needs role admin;"
            ' credential "read-only" has role reader',
        )

    def test_clear_tokens_with_the_admin_key_as_bearer_and_as_x_api_key(self):
        for header in (self.admin, f"x-api-key: {CONFIG.api_key}"):
            with self.subTest(header=header.split(":")[0]):
                self.grpcurl(
                    "neurograph.v1.TokenService/CreateToken",
                    headers=[self.admin],
                    data={"token": {"weight": 0.5}},
                ).json(self)
                cleared = self.grpcurl("neurograph.v1.TokenService/ClearTokens", headers=[header])
                self.assertGreaterEqual(int(cleared.json(self)["cleared"]), 1, str(cleared))
                # A zero count is the empty JSON object: proto3 JSON omits default values.
                counted = self.grpcurl(
                    "neurograph.v1.TokenService/CountTokens", headers=[self.reader]
                )
                self.assertEqual(counted.json(self), {})

    def test_health_check_is_serving_without_a_credential(self):
        for service in ("", "neurograph.v1.TokenService"):
            with self.subTest(service=service):
                reply = self.grpcurl("grpc.health.v1.Health/Check", data={"service": service})
                self.assertEqual(reply.json(self), {"status": "SERVING"})

    def test_the_tls_port_needs_tls_and_a_certificate_for_the_name_dialled(self):
        health = "grpc.health.v1.Health/Check"
        for transport, errors in (
            # The server drops a connection whose first bytes are no TLS handshake. grpcurl
            # mostly retries the dial until its -connect-timeout (10 s by default) and then
            # reports the deadline; when its HTTP/2 preface write loses the race against the
            # close, it fails at once with that write's error instead.
            (
                ("-plaintext", "-connect-timeout", "1"),
                ("context deadline exceeded", "use of closed network connection"),
            ),
            ((), ("x509: certificate signed by unknown authority",)),  # the system roots
            ((*self.tls, "-servername", "wrong.example"), ("not wrong.example",)),
        ):
            with self.subTest(transport=transport):
                call = Grpcurl(health, transport=transport)
                self.assertEqual(call.returncode, GRPCURL_DIAL_FAILED, str(call))
                self.assertIn("Failed to dial target host", call.stderr, str(call))
                self.assertTrue(any(e in call.stderr for e in errors), str(call))


if __name__ == "__main__":
    support.main(sys.modules[__name__])
