import type { ServiceClientConstructor } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOAD_OPTIONS, PROTO_DIR, PROTO_FILES, decodeAny, loadContainerdProtos, timestampToDate } from './proto.js';

// Offline checks only: the definitions parse, every RPC the container driver calls is
// present under containerd's exact method path, and event payloads round-trip. Wire
// compatibility with a live containerd was checked separately (see the report), not here.

const EXPECTED_METHODS: Record<string, string[]> = {
  'containerd.services.version.v1.Version': ['Version'],
  'containerd.services.content.v1.Content': ['Info', 'Delete', 'ListStatuses', 'Write', 'Abort'],
  'containerd.services.images.v1.Images': ['Get', 'List', 'Create', 'Update', 'Delete'],
  'containerd.services.leases.v1.Leases': ['Create', 'Delete', 'List'],
  'containerd.services.snapshots.v1.Snapshots': ['Prepare', 'View', 'Mounts', 'Commit', 'Remove', 'Stat', 'List'],
  'containerd.services.diff.v1.Diff': ['Apply'],
  'containerd.services.containers.v1.Containers': ['Get', 'List', 'Create', 'Update', 'Delete'],
  'containerd.services.tasks.v1.Tasks': [
    'Create', 'Start', 'Delete', 'DeleteProcess', 'Get', 'List', 'Kill', 'Exec', 'ListPids', 'Update', 'Metrics', 'Wait',
  ],
  'containerd.services.events.v1.Events': ['Subscribe'],
};

function pick(tree: unknown, dotted: string): unknown {
  return dotted.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], tree);
}

function loadDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([...PROTO_FILES], { ...LOAD_OPTIONS, includeDirs: [PROTO_DIR] });
}

describe('containerd proto definitions', () => {
  it('load with proto-loader, including the bundled google well-known types', () => {
    const def = loadDefinition();
    for (const wkt of ['Any', 'Timestamp', 'Empty', 'FieldMask']) expect(def[`google.protobuf.${wkt}`], wkt).toBeDefined();
  });

  it('expose every service method under containerd’s gRPC path', () => {
    const def = loadDefinition();
    for (const [service, methods] of Object.entries(EXPECTED_METHODS)) {
      const svc = def[service] as protoLoader.ServiceDefinition | undefined;
      expect(svc, service).toBeDefined();
      for (const m of methods) expect(svc?.[m]?.path, `${service}/${m}`).toBe(`/${service}/${m}`);
    }
  });

  it('mark the streaming RPCs as streaming', () => {
    const def = loadDefinition();
    const write = (def['containerd.services.content.v1.Content'] as protoLoader.ServiceDefinition)['Write'];
    expect([write?.requestStream, write?.responseStream]).toEqual([true, true]);
    const list = (def['containerd.services.snapshots.v1.Snapshots'] as protoLoader.ServiceDefinition)['List'];
    expect([list?.requestStream, list?.responseStream]).toEqual([false, true]);
    const sub = (def['containerd.services.events.v1.Events'] as protoLoader.ServiceDefinition)['Subscribe'];
    expect([sub?.requestStream, sub?.responseStream]).toEqual([false, true]);
  });

  it('give grpc-js client constructors from loadContainerdProtos()', () => {
    const Tasks = pick(loadContainerdProtos(), 'containerd.services.tasks.v1.Tasks') as ServiceClientConstructor;
    expect(typeof Tasks).toBe('function');
    expect(Tasks.service['Create']?.path).toBe('/containerd.services.tasks.v1.Tasks/Create');
    expect(Tasks.service['Wait']?.path).toBe('/containerd.services.tasks.v1.Tasks/Wait');
    expect(pick(loadContainerdProtos(), 'containerd.services.events.v1.Envelope')).toBeDefined();
  });

  it('serialise request fields at containerd’s field numbers', () => {
    const def = loadDefinition();
    const create = (def['containerd.services.tasks.v1.Tasks'] as protoLoader.ServiceDefinition)['Create'];
    // container_id=1 ("c"), rootfs=3 (Mount{type=1 "overlay"}), terminal=7 (true).
    const bytes = create?.requestSerialize({ container_id: 'c', rootfs: [{ type: 'overlay' }], terminal: true });
    expect(bytes?.toString('hex')).toBe(
      Buffer.from([0x0a, 1, 0x63, 0x1a, 9, 0x0a, 7, ...Buffer.from('overlay'), 0x38, 1]).toString('hex'),
    );
  });

  it('decode TaskExit and TaskOOM Any payloads and ignore other event types', () => {
    // An independent encoder: events.proto imports only bundled google types, so protobufjs'
    // default resolver suffices. keepCase so the snake_case keys below match the fields.
    const root = new protobuf.Root().loadSync(join(PROTO_DIR, 'events.proto'), { keepCase: true });
    const exitType = root.lookupType('containerd.events.TaskExit');
    const exitBytes = exitType
      .encode(
        exitType.fromObject({
          container_id: 'web-1',
          id: 'web-1',
          pid: 4242,
          exit_status: 137,
          exited_at: { seconds: 1_700_000_000, nanos: 250_000_000 },
        }),
      )
      .finish();
    expect(decodeAny('containerd.events.TaskExit', Buffer.from(exitBytes))).toEqual({
      type: 'containerd.events.TaskExit',
      container_id: 'web-1',
      id: 'web-1',
      pid: 4242,
      exit_status: 137,
      exited_at: new Date(1_700_000_000_250),
    });
    const oomType = root.lookupType('containerd.events.TaskOOM');
    const oomBytes = oomType.encode(oomType.fromObject({ container_id: 'web-2' })).finish();
    expect(decodeAny('type.googleapis.com/containerd.events.TaskOOM', Buffer.from(oomBytes))).toEqual({
      type: 'containerd.events.TaskOOM',
      container_id: 'web-2',
    });
    expect(decodeAny('containerd.events.ImageCreate', Buffer.alloc(0))).toBeNull();
  });

  it('map Go’s zero time (how containerd sends “not exited yet”) and absent timestamps to null', () => {
    expect(timestampToDate({ seconds: '-62135596800', nanos: 0 })).toBeNull();
    expect(timestampToDate(null)).toBeNull();
    expect(timestampToDate({ seconds: '1700000000', nanos: 1_500_000 })).toEqual(new Date(1_700_000_000_001));
  });
});
