/**
 * A strict reader of Prometheus' text exposition format (0.0.4), for tests: whatever a scraper would
 * refuse, this throws on, naming the line. Values are read as Prometheus' own parser reads them: Go's
 * ParseFloat without hex floats or underscores, so NaN and (signed) Inf or Infinity in any case —
 * prom-client writes NaN as `Nan`.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** The sample's own name: `x_bucket`, `x_sum` and `x_count` belong to the histogram `x`. */
  name: string;
  labels: Record<string, string>;
  value: number;
  timestamp?: number;
}

export interface MetricFamily {
  type: MetricType;
  /** Null when the family has no HELP line. */
  help: string | null;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const TIMESTAMP = /^[+-]?\d+$/;
const SPECIAL = /^(?:[+-]?inf(?:inity)?|nan)$/i;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
/** The samples a family of each type may hold besides its bare name. */
const SUFFIXES: Partial<Record<MetricType, string[]>> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] };

export class PrometheusFormatError extends Error {
  constructor(lineNumber: number, line: string, problem: string) {
    super(`line ${lineNumber}: ${problem}: ${JSON.stringify(line.length > 200 ? `${line.slice(0, 200)}…` : line)}`);
    this.name = 'PrometheusFormatError';
  }
}

/** Families by name, in the order they appear. Throws a PrometheusFormatError on the first bad line. */
export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  /** Families whose group has ended: the format wants each family's lines together. */
  const closed = new Set<string>();
  /** Families that have samples already: HELP and TYPE must come before them. */
  const sampled = new Set<string>();
  /** Families that had their TYPE line: `untyped` is also a type one may declare. */
  const typed = new Set<string>();
  const identities = new Set<string>();
  let current: string | null = null;

  if (text.length > 0 && !text.endsWith('\n')) throw new PrometheusFormatError(text.split('\n').length, text.slice(text.lastIndexOf('\n') + 1), 'the last line must end with a line feed');
  const lines = text.split('\n').slice(0, -1);

  const enter = (family: string, n: number, line: string) => {
    if (family === current) return;
    if (closed.has(family)) throw new PrometheusFormatError(n, line, `the lines of ${family} are not together`);
    if (current !== null) closed.add(current);
    current = family;
  };
  const familyOf = (name: string): string => {
    for (const [type, suffixes] of Object.entries(SUFFIXES)) {
      for (const suffix of suffixes) {
        const base = name.slice(0, -suffix.length);
        if (name.endsWith(suffix) && families.get(base)?.type === type) return base;
      }
    }
    return name;
  };

  lines.forEach((line, i) => {
    const n = i + 1;
    if (line.includes('\r')) throw new PrometheusFormatError(n, line, 'carriage return in a line');
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      // Any other comment is allowed and means nothing.
      if (!m) {
        if (/^#[ \t]*(HELP|TYPE)\b/.test(line)) throw new PrometheusFormatError(n, line, 'a HELP or TYPE line needs a metric name');
        return;
      }
      const [, keyword, name, rest = ''] = m as unknown as [string, 'HELP' | 'TYPE', string, string | undefined];
      if (!fullMatch(METRIC_NAME, name)) throw new PrometheusFormatError(n, line, `"${name}" is not a metric name`);
      enter(name, n, line);
      if (sampled.has(name)) throw new PrometheusFormatError(n, line, `${keyword} comes after samples of ${name}`);
      const family = families.get(name) ?? { type: 'untyped', help: null, samples: [] };
      families.set(name, family);
      if (keyword === 'HELP') {
        if (family.help !== null) throw new PrometheusFormatError(n, line, `a second HELP for ${name}`);
        family.help = unescapeHelp(rest, n, line);
      } else {
        const type = rest.trim();
        if (!TYPES.has(type as MetricType)) throw new PrometheusFormatError(n, line, `unknown type "${type}"`);
        if (typed.has(name)) throw new PrometheusFormatError(n, line, `a second TYPE for ${name}`);
        typed.add(name);
        family.type = type as MetricType;
      }
      return;
    }

    const sample = parseSample(line, n);
    const name = familyOf(sample.name);
    enter(name, n, line);
    sampled.add(name);
    const family = families.get(name) ?? { type: 'untyped', help: null, samples: [] };
    families.set(name, family);
    if (family.type === 'histogram' && sample.name === name) throw new PrometheusFormatError(n, line, `histogram ${name} has a sample without _bucket, _sum or _count`);
    if (family.type === 'histogram' && sample.name.endsWith('_bucket')) {
      const le = sample.labels.le;
      if (le === undefined || parseValue(le) === null) throw new PrometheusFormatError(n, line, 'a histogram bucket needs a numeric "le" label');
    }
    if (family.type === 'summary' && sample.name === name && (sample.labels.quantile === undefined || parseValue(sample.labels.quantile) === null)) {
      throw new PrometheusFormatError(n, line, 'a summary quantile needs a numeric "quantile" label');
    }
    const identity = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort(([a], [b]) => a.localeCompare(b)))}`;
    if (identities.has(identity)) throw new PrometheusFormatError(n, line, 'the same series twice');
    identities.add(identity);
    family.samples.push(sample);
  });
  return families;
}

function fullMatch(re: RegExp, s: string): boolean {
  const m = re.exec(s);
  return m !== null && m[0].length === s.length;
}

/** `name{a="1",b="x"} 3 [timestamp]`, with blanks allowed around the label set's tokens. */
function parseSample(line: string, n: number): Sample {
  const fail = (problem: string): never => {
    throw new PrometheusFormatError(n, line, problem);
  };
  const nameMatch = METRIC_NAME.exec(line);
  if (!nameMatch) return fail('a sample must start with a metric name');
  const name = nameMatch[0];
  let pos = name.length;
  const blanks = () => {
    while (line[pos] === ' ' || line[pos] === '\t') pos++;
  };
  const labels: Record<string, string> = {};
  const afterName = pos;
  blanks();
  if (line[pos] !== '{') pos = afterName;
  else {
    pos++;
    for (;;) {
      blanks();
      if (line[pos] === '}') {
        pos++;
        break;
      }
      const labelMatch = LABEL_NAME.exec(line.slice(pos));
      if (!labelMatch) return fail(`expected a label name at column ${pos + 1}`);
      const label = labelMatch[0];
      pos += label.length;
      blanks();
      if (line[pos] !== '=') return fail(`expected "=" after label ${label}`);
      pos++;
      blanks();
      if (line[pos] !== '"') return fail(`the value of label ${label} must be quoted`);
      pos++;
      let value = '';
      for (;;) {
        const ch = line[pos];
        if (ch === undefined) return fail(`the value of label ${label} is not closed`);
        pos++;
        if (ch === '"') break;
        if (ch !== '\\') {
          value += ch;
          continue;
        }
        const escaped = line[pos++];
        if (escaped === '\\') value += '\\';
        else if (escaped === '"') value += '"';
        else if (escaped === 'n') value += '\n';
        else return fail(`invalid escape "\\${escaped ?? ''}" in label ${label}`);
      }
      if (Object.hasOwn(labels, label)) return fail(`label ${label} twice`);
      labels[label] = value;
      blanks();
      if (line[pos] === ',') {
        pos++;
        continue;
      }
      if (line[pos] === '}') {
        pos++;
        break;
      }
      return fail(`expected "," or "}" at column ${pos + 1}`);
    }
  }
  const rest = line.slice(pos);
  if (!/^[ \t]/.test(rest)) return fail('expected a blank, then the value');
  const fields = rest.trim().split(/[ \t]+/);
  if (fields.length < 1 || fields.length > 2 || fields[0] === '') return fail('expected a value and at most a timestamp');
  const value = parseValue(fields[0]!);
  if (value === null) return fail(`"${fields[0]}" is not a value`);
  const sample: Sample = { name, labels, value };
  if (fields.length === 2) {
    if (!TIMESTAMP.test(fields[1]!)) return fail(`"${fields[1]}" is not a timestamp in milliseconds`);
    sample.timestamp = Number(fields[1]);
  }
  return sample;
}

/** A decimal float, NaN or an infinity; null for anything else. */
function parseValue(s: string): number | null {
  if (SPECIAL.test(s)) return /nan/i.test(s) ? Number.NaN : s.startsWith('-') ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  return FLOAT.test(s) ? Number(s) : null;
}

/** HELP text escapes only backslash (`\\`) and line feed (`\n`). */
function unescapeHelp(raw: string, n: number, line: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch !== '\\') {
      out += ch;
      continue;
    }
    const next = raw[++i];
    if (next === '\\') out += '\\';
    else if (next === 'n') out += '\n';
    else throw new PrometheusFormatError(n, line, `invalid escape "\\${next ?? ''}" in HELP`);
  }
  return out;
}
