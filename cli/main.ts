import { Command, InvalidArgumentError, Option } from 'commander';
import { GroveError } from '../scheduler/model/index.js';
import { ApiClient } from './client.js';
import { resolveConfig } from './config.js';
import { CliError } from './errors.js';
import { deleteApp, listApps, listRevisions, rollbackApp, scaleApp, showApp } from './commands/apps.js';
import { deploy } from './commands/deploy.js';
import { events, logs } from './commands/events.js';
import { login } from './commands/login.js';
import { listRoutes, mapRoute, unmapRoute } from './commands/routes.js';
import { createSpace, createToken, deleteSpace, listSpaces, listTokens, revokeToken } from './commands/spaces.js';
import { cell } from './commands/cell.js';
import { listTasks, runTask } from './commands/tasks.js';
import { parseMemory, push } from './commands/push.js';
import { deleteSecret, listSecrets, putSecret } from './commands/secrets.js';
import { up } from './commands/up.js';
import { deadLetters, listTriggers, mapEvent, replay, sendEvent, unmapEvent } from './commands/triggers.js';
import { registryGc, serveRegistry, stageImage } from './commands/registry.js';

function int(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

const port = int(0, 65_535);

/** The container-runtime flags `grove up` and `grove cell` share (both run a cell). */
function containerOptions(command: Command): void {
  command
    .option('--containerd-socket <path>', 'run container apps on this containerd (default: a private one under the data dir)')
    .option('--no-containers', 'run no container apps on this cell')
    .option('--stop-grace <duration>', 'SIGTERM → SIGKILL grace period for container instances (default 10s)', duration);
}

/** `3s`, `500ms`, `2m` or plain milliseconds. */
function duration(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a duration such as 500ms, 3s or 2m');
  const n = Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 1);
  if (n < 100 || n > 3_600_000) throw new InvalidArgumentError('expected a duration from 100ms to 60m');
  return Math.round(n);
}

/** `4G`, `512M` or plain megabytes. */
function megabytes(value: string): number {
  const m = /^(\d+)([MG])?B?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a size such as 512M or 4G');
  const n = Number(m[1]) * (m[2]?.toUpperCase() === 'G' ? 1024 : 1);
  if (n < 64) throw new InvalidArgumentError('a cell needs at least 64M');
  return n;
}
/** `20G`, `512M`, `1T` or plain bytes. */
function bytesSize(value: string): number {
  const m = /^(\d+)([KMGT])?B?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a size such as 512M or 20G');
  const unit = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[(m[2] ?? '').toUpperCase() as 'K'] ?? 1;
  return Number(m[1]) * unit;
}
const collect = (value: string, previous: string[]) => [...previous, value];

async function client(): Promise<ApiClient> {
  const config = await resolveConfig();
  return new ApiClient(config.api, config.token);
}

export function buildProgram(): Command {
  const program = new Command('grove')
    .description('Grove: Workers-format functions in V8 isolates and OCI containers on one self-hosted fleet.')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    // Before any subcommand is added: subcommands copy these settings when they are created.
    .exitOverride()
    // An option after a subcommand is that subcommand's: `grove events dead NAME --json` is dead's.
    .enablePositionalOptions();

  program
    .command('up')
    .description('run the whole platform in this process (API, router, one cell) on embedded defaults')
    .option('--data <dir>', 'data directory (default: $GROVE_HOME or ./.grove)')
    .option('--api-port <n>', 'control API port (default 7070)', port)
    .option('--router-port <n>', 'HTTP router port (default 7080)', port)
    .option('--registry-port <n>', 'registry port (default 7090)', port)
    .option('--registry-upstream <ALIAS=URL>', 'another upstream registry for pull-through, e.g. ghcr=https://ghcr.io (repeatable; docker.io is built in)', collect, [])
    .option('--registry-cap <size>', 'byte cap of the registry cache, e.g. 20G (default 20G)', bytesSize)
    .option('--host <addr>', 'address to listen on (default 127.0.0.1)')
    .option('--store <url>', 'share the Store with other control planes: a postgres:// URL (default: SQLite in the data dir)')
    .option('--no-cell', 'run no cell in this process: instances go to `grove cell` processes')
    .option('--converge-interval <duration>', 'how often the converger runs besides reacting to changes (default 30s)', duration)
    .option('--presence-ttl <duration>', 'presence TTL of the in-process cell (default 30s)', duration)
    .option('--isolate-hosts <n>', 'isolate-host processes of the in-process cell (default: one per core, at least 2)', int(1, 64))
    .option('--nats <url>', 'a NATS server with JetStream (nats-server -js), for --nats triggers: nats://127.0.0.1:4222')
    .addOption(new Option('--broker <kind>', 'where event deliveries are kept: store (the Store, default) or nats (JetStream; needs --nats)').choices(['store', 'nats']))
    .option('--event-retry-base <duration>', 'first retry delay of a failed event delivery, doubling per attempt up to 5m (default 1s)', duration)
    .addOption(new Option('--nats-ack-wait <duration>', 'how long JetStream waits for an ack before redelivering (default 10s)').argParser(duration).hideHelp())
    .option('--hold-timeout <duration>', 'how long the router holds a request for an app while its first instance starts (default 30s)', duration)
    .option('--autoscale-window <duration>', "the autoscaler's averaging window for scaling down (default 60s)", duration)
    .option('--max-header-size <size>', 'largest request head the router takes, e.g. 32K (default 32K)', (v: string) => {
      const m = /^(\d+)([K])?$/i.exec(v.trim());
      const n = m ? Number(m[1]) * (m[2] ? 1024 : 1) : Number.NaN;
      if (!(n >= 1024 && n <= 1024 * 1024)) throw new InvalidArgumentError('expected a size from 1K to 1024K, e.g. 32K');
      return n;
    })
    .option('--quiet', 'do not print platform events')
    .action(async (o) => up(o));
  containerOptions(program.commands.find((c) => c.name() === 'up')!);

  program
    .command('cell')
    .description('run a cell that joins a running control plane and takes work from its auctions')
    .option('--api <url>', 'the control plane API (default $GROVE_API)')
    .option('--token <token>', 'a cell or admin token (default $GROVE_TOKEN)')
    .option('--registry <url>', 'where to pull bundles and images (default: the registry the control plane names)')
    .requiredOption('--data <dir>', 'data directory (cell id, bundle cache)')
    .option('--port <n>', 'port for the control plane to reach this cell (0: any free port)', port, 0)
    .option('--host <addr>', 'address to listen on (default 127.0.0.1)')
    .option('--zone <zone>', 'availability zone', 'default')
    .option('--tags <a,b>', 'placement tags')
    .option('--memory <size>', 'memory this cell offers in MB, or e.g. 4G', megabytes, 4096)
    .option('--instances <n>', 'instance slots (default 1000)', int(1, 100_000))
    .option('--presence-ttl <duration>', 'how long the cell counts as present without a heartbeat (default 30s)', duration)
    .option('--isolate-hosts <n>', 'isolate-host processes (default: one per core, at least 2)', int(1, 64))
    .action(async (o) => cell(o));
  containerOptions(program.commands.find((c) => c.name() === 'cell')!);

  const registry = program
    .command('registry')
    .description('run a standalone registry (the OCI pull-through cache and bundle store grove up embeds)')
    .option('--port <n>', 'port (default 7090)', port)
    .option('--host <addr>', 'address to listen on (default 127.0.0.1)')
    .option('--data <dir>', 'cache directory (default $GROVE_HOME/registry)')
    .option('--upstream <ALIAS=URL>', 'an upstream for pull-through under ALIAS (repeatable; docker.io is built in)', collect, [])
    .option('--api <url>', 'the control API that checks tokens (default $GROVE_API)')
    .option('--token <token>', 'a cell or admin token to read live revisions\' pins (default $GROVE_TOKEN)')
    .option('--cap <size>', 'byte cap of the cache, e.g. 20G (default 20G)', bytesSize)
    .option('--quiet', 'do not print one line per request')
    .action(async (o) => serveRegistry(o));
  registry
    .command('gc')
    .description('remove cached blobs nothing refers to, then evict down to the cap (admin token)')
    .option('--registry <url>', 'the registry (default: the one the control plane names)')
    .option('--json', 'print JSON')
    .action(async (o) => registryGc(await client(), o));

  program
    .command('stage')
    .description('pin IMAGE (tag → digest) and cache it whole in the registry; credentials are used once, never stored')
    .argument('<image>', 'e.g. docker.io/library/busybox:1.36 or ALIAS/name:tag')
    .option('--username <user>', 'registry user for a private image')
    .option('--password-stdin', 'read the registry password (or token) from stdin')
    .option('--registry <url>', 'the registry (default: the one the control plane names)')
    .option('--json', 'print JSON')
    .action(async (image, o) => stageImage(await client(), image, o));

  program
    .command('login')
    .description('save the API URL and a token for later commands')
    .option('--api <url>', 'API URL (default http://127.0.0.1:7070)')
    .option('--token <token>', 'a token (default: the admin token of the local data dir)')
    .option('--token-file <path>', 'read the token from a file, e.g. .grove/admin-token')
    .action(async (o) => login(o));

  program
    .command('apps')
    .description('list the apps of your space')
    .option('--json', 'print JSON')
    .action(async (o) => listApps(await client(), o));

  program
    .command('app')
    .description('show one app: revision, instances (state, cell, uptime, crashes) and routes')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name, o) => showApp(await client(), name, o));

  program
    .command('deploy')
    .description('bundle a Workers module (JS/TS) and deploy it as a new revision; creates the app if new')
    .argument('<name>', 'app name')
    .argument('<entry>', 'entry module, e.g. ./worker.js')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable; replaces the previous revision\'s env)', collect, [])
    .option('-i, --instances <n>', 'instances when the app is created (default 1)', int(0, 1000))
    .option('-m, --memory <mb>', 'memory limit per isolate in MB (default 128)', int(8, 4096))
    .option('--cpu-ms <ms>', 'CPU time limit per request in ms (default 50)', int(1, 300_000))
    .option('--subrequests <n>', 'outbound fetches one invocation may make (default 50)', int(0, 10_000))
    .option('--allow-fetch <hosts>', 'hosts the app may fetch although private or loopback, comma-separated; "" clears them')
    .option('--placement-tags <a,b>', 'run only on cells carrying all these tags (grove cell --tags); "" clears them')
    .option('--no-wait', 'return without waiting for the instances to run')
    .option('--json', 'print the app as JSON')
    .action(async (name, entry, o) => deploy(await client(), name, entry, o));

  program
    .command('push')
    .description('run an OCI image as a container app: stage it through the registry (tag → digest), deploy a revision pinned to it')
    .argument('<name>', 'app name')
    .requiredOption('--image <ref>', 'e.g. docker.io/library/nginx:1.25, ghcr.io/org/app:1.0 or ALIAS/name:tag')
    .option('--username <user>', 'registry user for a private image (used for this staging only, never stored)')
    .option('--password-stdin', 'read the registry password (or token) from stdin')
    .option('-i, --instances <n>', 'instances when the app is created (default 1)', int(0, 1000))
    .option('-m, --memory <size>', 'memory limit per instance, e.g. 256M or 1G (default 128M)', (v: string) => parseMemory(v))
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable; replaces the previous revision\'s env)', collect, [])
    .option('--health-check-type <type>', 'port (default), http or process', (v: string) => {
      if (v !== 'port' && v !== 'http' && v !== 'process') throw new InvalidArgumentError('expected port, http or process');
      return v;
    })
    .option('--health-check-path <path>', 'path the http health check GETs (default /)')
    .option('--start-timeout <seconds>', 'how long pull, start and health check may take (default 60)', int(1, 600))
    .option('--placement-tags <a,b>', 'run only on cells carrying all these tags; "" clears them')
    .option('--autoscale', 'autoscale the new app on concurrency (default: keep its declared count; see grove scale --auto)')
    .option('--no-wait', 'return without waiting for the instances to run')
    .option('--json', 'print the app as JSON')
    .action(async (name, o) => push(await client(), name, o));

  program
    .command('scale')
    .description('fix the number of instances (-i), or let the autoscaler set it (--auto; functions autoscale by default)')
    .argument('<name>')
    .option('-i, --instances <n>', 'a fixed number of instances (turns autoscaling off)', int(0, 1000))
    .option('--auto', 'autoscale on concurrency, to zero when idle (Knative-style); the options below tune it')
    .option('--min <n>', 'fewest instances when autoscaling (default 0: scale to zero)', int(0, 1000))
    .option('--max <n>', 'most instances when autoscaling (default 10)', int(1, 1000))
    .option('--target <n>', 'concurrent requests per instance the autoscaler aims for (default 100)', (v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0.1 || n > 10_000) throw new InvalidArgumentError('expected a number from 0.1 to 10000');
      return n;
    })
    .option('--idle <duration>', 'idle time before scaling to zero, e.g. 30s or 5m (default 5m)', duration)
    .option('--no-wait', 'return without waiting')
    .option('--json', 'print the app as JSON')
    .action(async (name, o) => scaleApp(await client(), name, o));

  program
    .command('map-route')
    .description('send requests for HOST[/PATH] to the app')
    .argument('<name>')
    .argument('<route>', 'HOST[/PATH], e.g. hello.localhost or shop.example/api')
    .action(async (name, route) => mapRoute(await client(), name, route));

  program
    .command('unmap-route')
    .description('stop sending HOST[/PATH] to the app')
    .argument('<name>')
    .argument('<route>')
    .action(async (name, route) => unmapRoute(await client(), name, route));

  program
    .command('routes')
    .description('list the routes of your space')
    .option('--json', 'print JSON')
    .action(async (o) => listRoutes(await client(), o));

  program
    .command('revisions')
    .description('list an app\'s revisions')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name, o) => listRevisions(await client(), name, o));

  program
    .command('rollback')
    .description('run an earlier revision again (default: the one before the current)')
    .argument('<name>')
    .argument('[revision]', 'revision number, e.g. 3 or r3')
    .option('--no-wait', 'return without waiting')
    .action(async (name, revision: string | undefined, o) => {
      const n = revision === undefined ? undefined : Number(revision.replace(/^r/i, ''));
      if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new CliError(`"${revision}" is not a revision number`, 'BAD_ARGUMENT');
      await rollbackApp(await client(), name, n, o);
    });

  program
    .command('delete')
    .description('delete an app with its revisions, routes and triggers')
    .argument('<name>')
    .action(async (name) => deleteApp(await client(), name));

  const secret = program.command('secret').description('secrets: bound into env like variables, never shown again once set');
  secret
    .command('put')
    .description('set a secret from standard input (the app rolls out a new revision)')
    .argument('<name>')
    .argument('<key>')
    .action(async (name, key) => putSecret(await client(), name, key));
  secret
    .command('list')
    .description('list the names of an app\'s secrets')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name, o) => listSecrets(await client(), name, o));
  secret
    .command('delete')
    .description('remove a secret (the app rolls out a new revision)')
    .argument('<name>')
    .argument('<key>')
    .action(async (name, key) => deleteSecret(await client(), name, key));

  program
    .command('run-task')
    .description('run a one-off task on the app (isolate apps: the module\'s task(command, env, ctx) handler) and print its output')
    .argument('<name>')
    .argument('[command...]', 'after --, the command and its arguments')
    .option('--no-wait', 'print the task id and return')
    .option('--timeout <seconds>', 'how long to wait (default 120)', int(1, 86_400))
    .option('--json', 'print the task as JSON')
    .action(async (name, command: string[], o) => runTask(await client(), name, command, o));

  program
    .command('tasks')
    .description('list the tasks of your space, or of one app')
    .argument('[name]')
    .option('--json', 'print JSON')
    .action(async (name, o) => listTasks(await client(), name, o));

  const eventsCommand = program
    .command('events')
    .description('follow the platform events of your space (Ctrl-C to stop); `events dead|replay NAME` for dead deliveries')
    .option('--recent', 'print recent events and exit')
    .option('--since <seq>', 'start after this event sequence number', int(0, Number.MAX_SAFE_INTEGER))
    .option('--limit <n>', 'with --recent: how many (default 50)', int(1, 1000))
    .option('--json', 'print JSON (NDJSON when following)')
    .action(async (o) => events(await client(), o));
  eventsCommand
    .command('dead')
    .description("list the app's dead deliveries: events that ran out of attempts")
    .argument('<name>')
    .option('--limit <n>', 'how many (default 100)', int(1, 1000))
    .option('--json', 'print JSON')
    .action(async (name, o) => deadLetters(await client(), name, o));
  eventsCommand
    .command('replay')
    .description("deliver the app's dead deliveries again, with fresh attempts")
    .argument('<name>')
    .option('--id <delivery>', 'only this delivery (repeatable; default: all of them)', collect, [])
    .option('--json', 'print JSON')
    .action(async (name, o) => replay(await client(), name, o));

  const sourceOptions = (cmd: Command) =>
    cmd
      .option('--cron <schedule>', 'a cron schedule in UTC, e.g. "*/5 * * * *" (six fields: with seconds) → scheduled()')
      .option('--cloudevents <type>', 'CloudEvents of this type sent to POST /v1/events → fetch() in binary mode')
      .option('--source <source>', 'with --cloudevents: only events from this source')
      .option('--nats <subject>', 'messages on this NATS JetStream subject → queue() in batches')
      .option('--platform <event>', 'events Grove emits: app.crashed, app.started, app.stopped, app.deployed, app.scaled, route.mapped, delivery.dead, …');
  sourceOptions(
    program
      .command('map-event')
      .description('bind an event source to the app (like map-route for requests); deliveries are durable, retried, dead-lettered')
      .argument('<name>'),
  )
    .addOption(new Option('--handler <handler>', 'the handler to call (default: scheduled for cron, queue for nats, fetch otherwise)').choices(['fetch', 'scheduled', 'queue']))
    .option('--max-attempts <n>', 'attempts before a delivery goes to the dead-letter list (default 5)', int(1, 100))
    .option('--json', 'print the trigger as JSON')
    .action(async (name, o) => mapEvent(await client(), name, o));
  sourceOptions(
    program
      .command('unmap-event')
      .description('remove a trigger: by id, or by the same source options it was mapped with')
      .argument('<name>')
      .argument('[trigger-id]'),
  ).action(async (name, id, o) => unmapEvent(await client(), name, id, o));
  program
    .command('triggers')
    .description("list the app's triggers")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name, o) => listTriggers(await client(), name, o));
  program
    .command('send-event')
    .description('publish a CloudEvent into your space (what POST /v1/events takes)')
    .requiredOption('--type <type>', 'the event type, e.g. com.example.order.created')
    .option('--source <source>', 'the event source', '/cli')
    .option('--id <id>', 'the event id (default: a random UUID; repeat one to see deduplication)')
    .option('--subject <subject>', 'the event subject')
    .option('--data <json>', 'the data: JSON, or plain text')
    .option('--json', 'print JSON')
    .action(async (o) => sendEvent(await client(), o));

  program
    .command('logs')
    .description("tail an app's log: console and container output, router access lines, invocations, platform events")
    .argument('<name>')
    .option('--recent', 'print the buffered lines and exit instead of tailing')
    .option('--limit <n>', 'how many buffered lines: --recent prints these (default 100), a tail starts with them (default 0)', int(1, 1000))
    .option('--json', 'print NDJSON')
    .action(async (name, o) => logs(await client(), name, o));

  program
    .command('spaces')
    .description('list spaces')
    .option('--json', 'print JSON')
    .action(async (o) => listSpaces(await client(), o));
  program
    .command('create-space')
    .description('create a space (admin)')
    .argument('<name>')
    .action(async (name) => createSpace(await client(), name));
  program
    .command('delete-space')
    .description('delete an empty space (admin)')
    .argument('<name>')
    .action(async (name) => deleteSpace(await client(), name));
  program
    .command('tokens')
    .description('list tokens (admin)')
    .option('--space <name>')
    .option('--json', 'print JSON')
    .action(async (o) => listTokens(await client(), o));
  program
    .command('create-token')
    .description('create a token and print its secret once (admin)')
    .argument('<name>', 'a label, e.g. ci')
    .option('--space <name>', 'the space it acts in (default: yours)')
    .addOption(new Option('--role <role>', 'developer, admin, or cell (for grove cell)').choices(['developer', 'admin', 'cell']))
    .option('--json', 'print JSON')
    .action(async (name, o) => createToken(await client(), name, o));
  program
    .command('revoke-token')
    .description('revoke a token (admin)')
    .argument('<id>')
    .action(async (id) => revokeToken(await client(), id));

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') return 0;
    // Usage errors: commander has printed the message already; 2 is the conventional exit code.
    if (typeof code === 'string' && code.startsWith('commander.')) return 2;
    if (err instanceof CliError || err instanceof GroveError) {
      process.stderr.write(`error: ${err.message}${err.code && err.code !== 'CLI_ERROR' ? ` (${err.code})` : ''}\n`);
      return err instanceof CliError ? err.exitCode : 1;
    }
    process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}
