import { GroveError } from '../scheduler/model/index.js';

/** The OCI distribution spec's repository-name grammar: lowercase path components. */
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
/** A first part that names a registry host: has a dot or a port, or is `localhost`. */
const HOST = /^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$|^[A-Za-z0-9-]+:[0-9]{1,5}$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
export const DIGEST = /^sha256:[a-f0-9]{64}$/;
/** Longest repository name we accept; distribution's own limit is 255 for the whole name. */
const MAX_NAME = 255;

/** Repositories Grove itself owns (function bundles, pushed artifacts): `grove/<space>/…`. */
export const LOCAL_PREFIX = 'grove';

export type RepoName =
  /** `grove/<space>/<rest>`: stored here, never fetched from anywhere. */
  | { kind: 'local'; name: string; space: string }
  /** `<alias or host>/<remote>`: pulled through from an upstream. */
  | { kind: 'remote'; name: string; upstream: string; remote: string };

export function isDigest(ref: string): boolean {
  return DIGEST.test(ref);
}

export function checkDigest(value: string): string {
  if (!DIGEST.test(value)) {
    if (/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(value) && !value.startsWith('sha256:')) {
      throw new GroveError('UNSUPPORTED', `only sha256 digests are supported, got "${clip(value)}"`);
    }
    throw new GroveError('DIGEST_INVALID', `"${clip(value)}" is not a digest (sha256:<64 hex digits>)`);
  }
  return value;
}

/** A manifest reference: a tag or a digest. */
export function checkReference(value: string): { tag: string } | { digest: string } {
  if (value.includes(':')) return { digest: checkDigest(value) };
  if (!TAG.test(value)) throw new GroveError('MANIFEST_INVALID', `"${clip(value)}" is not a valid tag: letters, digits, "_", "." and "-", at most 128, not starting with "." or "-"`);
  return { tag: value };
}

/**
 * Splits a repository name into where it comes from. The first part is an upstream alias when one is
 * configured under that name, else a registry host when it looks like one (`ghcr.io`,
 * `registry.example.com:5000`), else the name is invalid: there is no implicit default upstream, so a
 * typo never silently pulls from Docker Hub.
 */
export function parseRepo(name: string, aliases: ReadonlySet<string>): RepoName {
  if (name.length === 0 || name.length > MAX_NAME) throw new GroveError('NAME_INVALID', `repository names are 1 to ${MAX_NAME} characters`);
  const parts = name.split('/');
  const [first, ...rest] = parts;
  if (rest.length === 0) {
    throw new GroveError('NAME_INVALID', `"${clip(name)}" has no upstream: name it <upstream>/<repository>, e.g. docker.io/library/busybox`);
  }
  for (const part of rest) {
    if (!COMPONENT.test(part)) throw new GroveError('NAME_INVALID', `"${clip(name)}" is not a valid repository name: path components are lowercase letters, digits and separators`);
  }
  if (first === LOCAL_PREFIX) {
    if (rest.length < 2) throw new GroveError('NAME_INVALID', `local repositories are named ${LOCAL_PREFIX}/<space>/<name>`);
    return { kind: 'local', name, space: rest[0]! };
  }
  if (aliases.has(first!)) return { kind: 'remote', name, upstream: first!, remote: dockerHubName(first!, rest) };
  if (HOST.test(first!)) return { kind: 'remote', name, upstream: first!, remote: dockerHubName(first!, rest) };
  throw new GroveError('NAME_UNKNOWN', `"${clip(first!)}" is neither a configured upstream alias nor a registry host`);
}

/** Docker Hub keeps official images under `library/`: `docker.io/busybox` means `library/busybox`. */
function dockerHubName(upstream: string, rest: string[]): string {
  if ((upstream === 'docker.io' || upstream === 'registry-1.docker.io') && rest.length === 1) return `library/${rest[0]}`;
  return rest.join('/');
}

/**
 * `image[:tag|@digest]` as a user writes it for staging: `docker.io/library/busybox:1.36`,
 * `127.0.0.1:5000/app@sha256:…`. A missing tag means `latest`, as for every registry client.
 */
export function parseImageRef(image: string, aliases: ReadonlySet<string>): { repo: RepoName & { kind: 'remote' }; reference: string } {
  let rest = image.trim();
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at >= 0) {
    reference = checkDigest(rest.slice(at + 1));
    rest = rest.slice(0, at);
  } else {
    const slash = rest.lastIndexOf('/');
    const colon = rest.lastIndexOf(':');
    if (colon > slash) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
      checkReference(reference);
    }
  }
  const repo = parseRepo(rest, aliases);
  if (repo.kind !== 'remote') throw new GroveError('NAME_INVALID', `"${clip(image)}" names a local repository: staging pulls from an upstream`);
  return { repo, reference };
}

function clip(value: string): string {
  return value.length > 80 ? `${value.slice(0, 80)}…` : value;
}
