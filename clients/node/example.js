'use strict';
// NeuroGraph from Node: connect, create a token, read it back, count, and decode the
// google.rpc.BadRequest details of a rejected call.
//
//   cd clients/node && npm ci && node example.js --addr 127.0.0.1:50051
const path = require('path');
const { parseArgs } = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtoFiles = require('google-proto-files');

const { values: args } = parseArgs({
  options: {
    addr: { type: 'string', default: '127.0.0.1:50051' },
    // The repository's proto/: the include path against which neurograph/v1/*.proto imports resolve.
    proto: { type: 'string', default: path.join(__dirname, '..', '..', 'proto') },
  },
});

const definition = protoLoader.loadSync('neurograph/v1/token.proto', {
  includeDirs: [args.proto],
  keepCase: true, // field names as in the proto and API.md: entity_type, l1_physical, …
  longs: String, // uint64/int64 (counts, sequences, total_size) as decimal strings
  enums: String, // enum values by name
  defaults: true, // absent scalars as 0 / '' / false, absent messages as null
  oneofs: true,
});
const neurograph = grpc.loadPackageDefinition(definition).neurograph.v1;

// google.rpc.Status and its details come from google-proto-files (not from proto/).
const rpc = new protobuf.Root().loadSync(
  [googleProtoFiles.getProtoPath('rpc', 'status.proto'), googleProtoFiles.getProtoPath('rpc', 'error_details.proto')],
  { keepCase: true },
);
const Status = rpc.lookupType('google.rpc.Status');
const BadRequest = rpc.lookupType('google.rpc.BadRequest');

const tokens = new neurograph.TokenService(args.addr, grpc.credentials.createInsecure());
// Promisified unary call with a 10 s deadline.
const call = (method, request) =>
  new Promise((resolve, reject) =>
    tokens[method](request, { deadline: Date.now() + 10_000 }, (error, response) =>
      error ? reject(error) : resolve(response)));

async function main() {
  const token = { weight: 0.5, domain: 2, entity_type: 5, l1_physical: { x: 1, y: 2, z: 3 } };
  const created = await call('CreateToken', { token });
  console.log(`created id=${created.id} local_id=${created.local_id}`);
  const got = await call('GetToken', { id: created.id });
  const p = got.l1_physical;
  console.log(`got id=${got.id} weight=${got.weight} l1_physical=(${p.x}, ${p.y}, ${p.z})`);
  const { count } = await call('CountTokens', { filter: { domain: 2 } });
  console.log(`count=${JSON.stringify(count)}`); // a string: longs: String
  try {
    await call('CreateToken', { token: { weight: 2 } });
  } catch (error) {
    console.log(`rejected: ${grpc.status[error.code]}: ${error.details}`);
    // The whole google.rpc.Status travels in the grpc-status-details-bin trailer.
    const [bytes] = error.metadata.get('grpc-status-details-bin');
    for (const detail of bytes ? Status.decode(bytes).details : []) {
      if (detail.type_url === 'type.googleapis.com/google.rpc.BadRequest') {
        for (const violation of BadRequest.decode(detail.value).field_violations) {
          console.log(`violation: ${violation.field}: ${violation.description}`);
        }
      }
    }
  }
}

main()
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => tokens.close());
