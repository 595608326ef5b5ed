import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

// Grove's own, hand-written subset of containerd's gRPC API. Message and field numbers match
// containerd 1.6 (checked against the descriptors compiled into containerd 1.6.20), so the
// wire format is identical even though the files are not upstream's.

/** Directory holding the .proto files; resolved from this module so it works from any cwd. */
export const PROTO_DIR: string = fileURLToPath(new URL('./proto', import.meta.url));

/** Every file, relative to PROTO_DIR. Imports inside them are relative to PROTO_DIR too. */
export const PROTO_FILES: readonly string[] = [
  'types.proto',
  'task.proto',
  'events.proto',
  'services/version.proto',
  'services/content.proto',
  'services/images.proto',
  'services/leases.proto',
  'services/snapshots.proto',
  'services/diff.proto',
  'services/containers.proto',
  'services/tasks.proto',
  'services/events.proto',
];

/**
 * proto-loader options. keepCase keeps containerd's snake_case field names (so the objects
 * read like the upstream docs); longs as strings because int64 sizes/offsets can exceed 2^53;
 * enums as names so logs stay readable; defaults so absent proto3 scalars come back as '' / 0.
 */
export const LOAD_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let cached: grpc.GrpcObject | undefined;

/**
 * Load every definition and hand back the grpc-js object tree, e.g.
 * `root.containerd.services.tasks.v1.Tasks` is a client constructor. Parsing a dozen files
 * costs milliseconds, but clients are created per connection, so the result is memoised.
 */
export function loadContainerdProtos(): grpc.GrpcObject {
  if (!cached) {
    // google/protobuf/{any,empty,timestamp,field_mask}.proto are bundled with protobufjs,
    // so no copies of the well-known types are needed on disk.
    const definition = protoLoader.loadSync([...PROTO_FILES], LOAD_OPTIONS);
    cached = grpc.loadPackageDefinition(definition);
  }
  return cached;
}

/** A google.protobuf.Timestamp as proto-loader/protobufjs render it with longs: String. */
export interface TimestampObject {
  seconds: string | number;
  nanos: number;
}

/** Go's zero time.Time (0001-01-01T00:00:00Z) in Unix seconds. */
const GO_ZERO_TIME_SECONDS = -62135596800;

/**
 * Converts a decoded Timestamp to a Date (millisecond precision). Returns null when absent and
 * also for Go's zero time: containerd marshals unset non-nullable times that way, e.g.
 * Process.exited_at of a process that has not exited.
 */
export function timestampToDate(ts: TimestampObject | null | undefined): Date | null {
  if (!ts) return null;
  const seconds = Number(ts.seconds);
  if (seconds === GO_ZERO_TIME_SECONDS && ts.nanos === 0) return null;
  return new Date(seconds * 1000 + Math.floor(ts.nanos / 1e6));
}

// Type aliases rather than interfaces so a decoded event is assignable to
// Record<string, unknown> (interfaces carry no implicit index signature).

/** /tasks/exit: a task's init process (id === container_id) or an exec process exited. */
export type TaskExitEvent = {
  type: 'containerd.events.TaskExit';
  container_id: string;
  id: string;
  pid: number;
  exit_status: number;
  exited_at: Date | null;
};

/** /tasks/oom: the container's cgroup hit its memory limit. */
export type TaskOOMEvent = {
  type: 'containerd.events.TaskOOM';
  container_id: string;
};

export type DecodedEvent = TaskExitEvent | TaskOOMEvent;

let eventTypes: { exit: protobuf.Type; oom: protobuf.Type } | undefined;

function loadEventTypes(): { exit: protobuf.Type; oom: protobuf.Type } {
  if (!eventTypes) {
    // A separate protobufjs Root rather than proto-loader: the grpc-js tree only exposes
    // (de)serializers for RPC messages, and the event payloads are never RPC arguments.
    // Imports resolve against PROTO_DIR like proto-loader's includeDirs; the google/protobuf
    // imports never reach resolvePath because protobufjs serves its bundled copies first.
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (isAbsolute(target) ? target : join(PROTO_DIR, target));
    root.loadSync('events.proto', { keepCase: true });
    eventTypes = {
      exit: root.lookupType('containerd.events.TaskExit'),
      oom: root.lookupType('containerd.events.TaskOOM'),
    };
  }
  return eventTypes;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true };

/**
 * Decodes the Any payload of an events Envelope. containerd 1.x writes type URLs as the bare
 * message name ("containerd.events.TaskExit"); a "type.googleapis.com/" style prefix is also
 * accepted. Returns null for any other event type: the bus carries many topics Grove ignores,
 * and those are not errors. Throws only if a known type's bytes are malformed.
 */
export function decodeAny(typeUrl: string, value: Uint8Array): DecodedEvent | null {
  const name = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  const { exit, oom } = loadEventTypes();
  if (name === 'containerd.events.TaskExit') {
    const o = exit.toObject(exit.decode(value), TO_OBJECT) as {
      container_id: string;
      id: string;
      pid: number;
      exit_status: number;
      exited_at?: TimestampObject | null;
    };
    return {
      type: name,
      container_id: o.container_id,
      id: o.id,
      pid: o.pid,
      exit_status: o.exit_status,
      exited_at: timestampToDate(o.exited_at),
    };
  }
  if (name === 'containerd.events.TaskOOM') {
    const o = oom.toObject(oom.decode(value), TO_OBJECT) as { container_id: string };
    return { type: name, container_id: o.container_id };
  }
  return null;
}
