// Grove prelude part: URLPattern (https://urlpattern.spec.whatwg.org/). Runs inside every isolate as
// part of the one prelude script (see PRELUDE_PARTS in prelude-bundle.ts), after prelude.js, so the
// host-backed URL class is already a global. Written from the spec's algorithms and in its order
// (tokenize, parse a pattern string, generate a regexp and a pattern string, canonicalize, process a
// URLPatternInit, parse a constructor string), so each function can be checked against its section.
//
// Each component is compiled to one RegExp at construction. The spec now asks for the 'v' flag; we
// use 'u' because 'v' rejects common route regexps such as `:slug([\w-]+)`.
//
// Loaded on first use (globals.js's lazy), which saves each isolate that never matches a pattern ~20 KiB.
(function lazyURLPattern() {
  'use strict';
  const g = globalThis;
  // Captured now: user code may replace the global later, and canonicalization must not follow it.
  const NativeURL = g.URL;
  g.__grove_globals.lazy(['URLPattern'], () => ({ URLPattern: installURLPattern() }));

  function installURLPattern() {
    const COMPONENTS = ['protocol', 'username', 'password', 'hostname', 'port', 'pathname', 'search', 'hash'];
    const DEFAULT_PORTS = new Map([['ftp', '21'], ['file', ''], ['http', '80'], ['https', '443'], ['ws', '80'], ['wss', '443']]);
    const DEFAULT_OPTIONS = { delimiter: '', prefix: '' };
    const HOSTNAME_OPTIONS = { delimiter: '.', prefix: '' };
    const PATHNAME_OPTIONS = { delimiter: '/', prefix: '/' };
    const FULL_WILDCARD = '.*';

    const invalid = (message) => new TypeError(message);
    // WebIDL USVString: a template literal throws on symbols as ToString does; lone surrogates become U+FFFD.
    const usv = (v) => `${v}`.replace(/\p{Cs}/gu, '\uFFFD');
    const isDictionary = (v) => v === undefined || v === null || typeof v === 'object' || typeof v === 'function';

    const NAME_START = /^[$_\p{ID_Start}]/u;
    const NAME_PART = /^[$\u200C\u200D\p{ID_Continue}]/u;
    const isNameCodePoint = (s, first) => (first ? NAME_START : NAME_PART).test(s);

    const escapeRegExp = (s) => s.replace(/[.+*?^${}()[\]|/\\]/g, '\\$&');
    const escapePattern = (s) => s.replace(/[+*?:{}()\\]/g, '\\$&');
    const segmentWildcard = (options) => `[^${escapeRegExp(options.delimiter)}]+?`;

    // ── Tokenizing ────────────────────────────────────────────────────────────────────────────────
    // Works on code points (the spec's indices), so `cps` is the pattern split into code points.

    function tokenize(cps, lenient) {
      const n = cps.length;
      const tokens = [];
      let i = 0;
      const add = (type, next, from, to) => {
        tokens.push({ type, index: i, value: cps.slice(from, to).join('') });
        i = next;
      };
      // In lenient mode (the constructor string parser) a bad sequence is kept as an opaque token so
      // component boundaries can still be found; the component's own strict parse reports it later.
      const error = (next, at, why) => {
        if (!lenient) throw invalid(`${why} at position ${at}`);
        add('invalid-char', next, at, next);
      };
      while (i < n) {
        const c = cps[i];
        if (c === '*') add('asterisk', i + 1, i, i + 1);
        else if (c === '+' || c === '?') add('other-modifier', i + 1, i, i + 1);
        else if (c === '\\') {
          if (i === n - 1) error(i + 1, i, 'a trailing backslash escapes nothing');
          else add('escaped-char', i + 2, i + 1, i + 2);
        } else if (c === '{') add('open', i + 1, i, i + 1);
        else if (c === '}') add('close', i + 1, i, i + 1);
        else if (c === ':') {
          let p = i + 1;
          while (p < n && isNameCodePoint(cps[p], p === i + 1)) p++;
          if (p === i + 1) error(i + 1, i, '":" must be followed by a group name');
          else add('name', p, i + 1, p);
        } else if (c === '(') {
          let depth = 1;
          let p = i + 1;
          let why = '';
          while (p < n) {
            const d = cps[p];
            if (d.codePointAt(0) > 0x7f) why = 'a regexp group may only contain ASCII';
            else if (p === i + 1 && d === '?') why = 'a regexp group may not start with "?"';
            else if (d === '\\') {
              if (p === n - 1) why = 'a trailing backslash escapes nothing';
              else if (cps[p + 1].codePointAt(0) > 0x7f) why = 'a regexp group may only contain ASCII';
              else {
                p += 2;
                continue;
              }
            } else if (d === ')') {
              if (--depth === 0) {
                p++;
                break;
              }
            } else if (d === '(') {
              depth++;
              // Captures inside a group would shift the group numbering the result is read by.
              if (p === n - 1) why = 'unclosed regexp group';
              else if (cps[p + 1] !== '?') why = 'a regexp group may not contain a capturing group; use (?:…)';
            }
            if (why) break;
            p++;
          }
          if (!why && depth !== 0) why = 'unclosed regexp group';
          if (!why && p - i - 2 === 0) why = 'empty regexp group';
          if (why) error(i + 1, i, why);
          else add('regexp', p, i + 1, p - 1);
        } else add('char', i + 1, i, i + 1);
      }
      tokens.push({ type: 'end', index: i, value: '' });
      return tokens;
    }

    // ── Parsing a pattern string into a part list ─────────────────────────────────────────────────
    // A part: { type: 'fixed' | 'regexp' | 'segment' | 'full', value, modifier: '' | '?' | '*' | '+',
    // name, prefix, suffix }. Modifiers are kept as their pattern characters, which is also their regexp form.

    function parsePattern(input, options, encode) {
      const tokens = tokenize(Array.from(input), false);
      const segment = segmentWildcard(options);
      const parts = [];
      let pending = '';
      let k = 0;
      let nextNumericName = 0;
      const take = (type) => (tokens[k].type === type ? tokens[k++] : null);
      const unexpected = () => {
        const t = tokens[k];
        return invalid(t.type === 'end' ? 'unexpected end of pattern' : `unexpected "${t.value}" at position ${t.index}`);
      };
      const takeModifier = () => take('other-modifier') || take('asterisk');
      const takeRegexpOrWildcard = (name) => take('regexp') || (name ? null : take('asterisk'));
      const takeText = () => {
        let s = '';
        for (let t; (t = take('char') || take('escaped-char')); ) s += t.value;
        return s;
      };
      const fixed = (value, modifier) => ({ type: 'fixed', value: encode(value), modifier, name: '', prefix: '', suffix: '' });
      const flushPending = () => {
        if (pending === '') return;
        const value = pending;
        pending = '';
        parts.push(fixed(value, ''));
      };
      const addPart = (prefix, nameToken, regexpToken, suffix, modifierToken) => {
        const modifier = modifierToken ? modifierToken.value : '';
        // "{foo}" with no group and no modifier is just text: merge it with its neighbours.
        if (!nameToken && !regexpToken && !modifier) {
          pending += prefix;
          return;
        }
        flushPending();
        if (!nameToken && !regexpToken) {
          if (prefix !== '') parts.push(fixed(prefix, modifier));
          return;
        }
        let value = !regexpToken ? segment : regexpToken.type === 'asterisk' ? FULL_WILDCARD : regexpToken.value;
        let type = 'regexp';
        // Spelling a wildcard out as a regexp gives the same part as the shorthand.
        if (value === segment) type = 'segment';
        else if (value === FULL_WILDCARD) type = 'full';
        if (type !== 'regexp') value = '';
        const name = nameToken ? nameToken.value : String(nextNumericName++);
        if (parts.some((p) => p.name === name)) throw invalid(`duplicate group name "${name}"`);
        parts.push({ type, value, modifier, name, prefix: prefix && encode(prefix), suffix: suffix && encode(suffix) });
      };

      while (k < tokens.length) {
        const charToken = take('char');
        let nameToken = take('name');
        let regexpToken = takeRegexpOrWildcard(nameToken);
        if (nameToken || regexpToken) {
          let prefix = charToken ? charToken.value : '';
          // Only the component's prefix character ("/" in a pathname) binds to a group and becomes
          // optional with it; any other character before a group is plain text.
          if (prefix !== '' && prefix !== options.prefix) {
            pending += prefix;
            prefix = '';
          }
          flushPending();
          addPart(prefix, nameToken, regexpToken, '', takeModifier());
          continue;
        }
        const fixedToken = charToken || take('escaped-char');
        if (fixedToken) {
          pending += fixedToken.value;
          continue;
        }
        if (take('open')) {
          const prefix = takeText();
          nameToken = take('name');
          regexpToken = takeRegexpOrWildcard(nameToken);
          const suffix = takeText();
          if (!take('close')) throw unexpected();
          addPart(prefix, nameToken, regexpToken, suffix, takeModifier());
          continue;
        }
        flushPending();
        if (!take('end')) throw unexpected();
      }
      return parts;
    }

    // ── Part list → regular expression, and → normalized pattern string ──────────────────────────

    function regExpSource(parts, options) {
      let source = '^';
      const names = [];
      for (const part of parts) {
        if (part.type === 'fixed') {
          source += part.modifier ? `(?:${escapeRegExp(part.value)})${part.modifier}` : escapeRegExp(part.value);
          continue;
        }
        names.push(part.name);
        const re = part.type === 'segment' ? segmentWildcard(options) : part.type === 'full' ? FULL_WILDCARD : part.value;
        const prefix = escapeRegExp(part.prefix);
        const suffix = escapeRegExp(part.suffix);
        const repeats = part.modifier === '*' || part.modifier === '+';
        if (prefix === '' && suffix === '') source += repeats ? `((?:${re})${part.modifier})` : `(${re})${part.modifier}`;
        else if (!repeats) source += `(?:${prefix}(${re})${suffix})${part.modifier}`;
        // A repeated group captures all its repetitions as one value, with the prefix and suffix kept
        // between repetitions but not around the whole: "/:p+" on "/a/b" gives p = "a/b".
        else source += `(?:${prefix}((?:${re})(?:${suffix}${prefix}(?:${re}))*)${suffix})${part.modifier === '*' ? '?' : ''}`;
      }
      return { source: `${source}$`, names };
    }

    function patternString(parts, options) {
      let out = '';
      parts.forEach((part, index) => {
        const previous = parts[index - 1];
        const next = parts[index + 1];
        if (part.type === 'fixed') {
          out += part.modifier ? `{${escapePattern(part.value)}}${part.modifier}` : escapePattern(part.value);
          return;
        }
        const customName = !/^[0-9]/.test(part.name);
        // Braces are added back only where leaving them out would re-parse differently.
        let grouping = part.suffix !== '' || (part.prefix !== '' && part.prefix !== options.prefix);
        if (!grouping && customName && part.type === 'segment' && !part.modifier && next && next.prefix === '' && next.suffix === '') {
          grouping = next.type === 'fixed' ? isNameCodePoint(next.value, false) : /^[0-9]/.test(next.name);
        }
        if (!grouping && part.prefix === '' && previous && previous.type === 'fixed' && options.prefix !== '' && previous.value.endsWith(options.prefix)) {
          grouping = true;
        }
        if (grouping) out += '{';
        out += escapePattern(part.prefix);
        if (customName) out += `:${part.name}`;
        if (part.type === 'regexp') out += `(${part.value})`;
        else if (part.type === 'segment' && !customName) out += `(${segmentWildcard(options)})`;
        else if (part.type === 'full') {
          const bare = !customName && (!previous || previous.type === 'fixed' || previous.modifier !== '' || grouping || part.prefix !== '');
          out += bare ? '*' : `(${FULL_WILDCARD})`;
        }
        if (part.type === 'segment' && customName && part.suffix !== '' && isNameCodePoint(part.suffix, false)) out += '\\';
        out += escapePattern(part.suffix);
        if (grouping) out += '}';
        out += part.modifier;
      });
      return out;
    }

    // Most patterns leave most components at "*"; those compile the same every time, and a compiled
    // component is immutable (its RegExp has no g or y flag, so no lastIndex state), so share them.
    const wildcards = new Map();

    function compileComponent(component, input, encode, options, ignoreCase) {
      const key = input === '*' ? `${component} ${options.delimiter} ${ignoreCase}` : null;
      if (key !== null && wildcards.has(key)) return wildcards.get(key);
      let parts, compiled, regexp;
      try {
        parts = parsePattern(input, options, encode);
        compiled = regExpSource(parts, options);
        regexp = new RegExp(compiled.source, ignoreCase ? 'ui' : 'u');
      } catch (err) {
        throw invalid(`URLPattern: invalid ${component} pattern ${JSON.stringify(input)}: ${err instanceof Error ? err.message : String(err)}`);
      }
      const result = {
        pattern: patternString(parts, options),
        regexp,
        names: compiled.names,
        hasRegExpGroups: parts.some((p) => p.type === 'regexp'),
      };
      if (key !== null) wildcards.set(key, result);
      return result;
    }

    const matchesSpecialScheme = (protocol) => [...DEFAULT_PORTS.keys()].some((scheme) => protocol.regexp.test(scheme));
    const isIPv6Pattern = (s) => s[0] === '[' || ((s[0] === '{' || s[0] === '\\') && s[1] === '[');

    // ── Canonicalization (encoding callbacks) ─────────────────────────────────────────────────────
    // Pattern text is canonicalized the way the URL parser would canonicalize the same text in a URL,
    // so "/café" in a pattern matches the "/caf%C3%A9" that a parsed URL carries.

    const stripTabs = (s) => s.replace(/[\t\n\r]/g, '');
    const USERINFO_SET = ' "#<>?`{}/:;=@[\\]^|';
    const QUERY_SET = ' "#<>';
    const FRAGMENT_SET = ' "<>`';
    function percentEncode(s, set) {
      let out = '';
      for (const ch of s) {
        const c = ch.codePointAt(0);
        if (c > 0x7e) out += encodeURIComponent(ch);
        else if (c < 0x20 || c === 0x7f || set.includes(ch)) out += `%${c.toString(16).toUpperCase().padStart(2, '0')}`;
        else out += ch;
      }
      return out;
    }

    function canonicalizeProtocol(v) {
      if (v === '') return v;
      const s = stripTabs(v);
      if (!/^[a-zA-Z][a-zA-Z0-9+\-.]*$/.test(s)) throw invalid(`invalid protocol "${v}"`);
      return s.toLowerCase();
    }
    const canonicalizeUserinfo = (v) => percentEncode(v, USERINFO_SET);
    const canonicalizeSearch = (v) => percentEncode(stripTabs(v), QUERY_SET);
    const canonicalizeHash = (v) => percentEncode(stripTabs(v), FRAGMENT_SET);
    const canonicalizeOpaquePathname = (v) => percentEncode(stripTabs(v), '');

    function canonicalizePort(v, protocol) {
      if (v === '') return v;
      const s = stripTabs(v);
      if (!/^[0-9]+$/.test(s) || Number(s) > 65535) throw invalid(`invalid port "${v}"`);
      const port = String(Number(s));
      return protocol !== undefined && DEFAULT_PORTS.get(protocol) === port ? '' : port;
    }

    // Lower-case ASCII labels that do not end in a number are already canonical; anything else (upper
    // case, IDN, IPv4 forms, xn-- labels to validate) goes to the host's URL parser.
    const PLAIN_HOSTNAME = /^[a-z0-9.-]+$/;
    const NEEDS_HOST_PARSER = /(?:^|\.)xn--|(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)\.?$/;
    // The hostname setter leaves the URL unchanged on failure, so a failed parse shows as this host.
    const SENTINEL_HOST = 'grove-urlpattern-sentinel.invalid';
    function canonicalizeHostname(v) {
      if (v === '' || (PLAIN_HOSTNAME.test(v) && !NEEDS_HOST_PARSER.test(v))) return v;
      const url = new NativeURL(`https://${SENTINEL_HOST}/`);
      url.hostname = v;
      if (url.hostname === SENTINEL_HOST) throw invalid(`invalid hostname "${v}"`);
      return url.hostname;
    }

    function canonicalizeIPv6Hostname(v) {
      if (!/^[0-9a-fA-F[\]:]*$/.test(v)) throw invalid(`invalid IPv6 hostname "${v}"`);
      return v.toLowerCase();
    }

    // Text with nothing to percent-encode and no dot segments is already canonical; the rest goes to
    // the host's URL parser, once, through a reused dummy URL.
    const PLAIN_PATHNAME = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;
    const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;
    let pathnameDummy = null;
    function canonicalizePathname(v) {
      if (v === '' || (PLAIN_PATHNAME.test(v) && !DOT_SEGMENT.test(v))) return v;
      // A fragment without a leading slash gets one and a "-" (so a leading "." is not a dot segment),
      // both removed again: the parser would otherwise prepend a slash to the piece.
      const leadingSlash = v[0] === '/';
      pathnameDummy ||= new NativeURL('https://dummy.invalid/');
      pathnameDummy.pathname = leadingSlash ? v : `/-${v}`;
      return leadingSlash ? pathnameDummy.pathname : pathnameDummy.pathname.slice(2);
    }

    // ── URLPatternInit processing ─────────────────────────────────────────────────────────────────

    // WebIDL dictionary conversion: members read in lexicographic order, absent ones left out.
    function toInit(v) {
      const init = {};
      if (v === undefined || v === null) return init;
      for (const key of ['baseURL', 'hash', 'hostname', 'password', 'pathname', 'port', 'protocol', 'search', 'username']) {
        const member = v[key];
        if (member !== undefined) init[key] = usv(member);
      }
      return init;
    }

    const hasOpaquePath = (url) => url.href.charAt(url.protocol.length) !== '/';

    function isAbsolutePathname(s, type) {
      if (s === '') return false;
      if (s[0] === '/') return true;
      if (type === 'url' || s.length < 2) return false;
      return (s[0] === '\\' || s[0] === '{') && s[1] === '/';
    }

    // type 'pattern': values stay pattern text (base URL parts are escaped into it); type 'url': values
    // are canonicalized as the URL parser would. `result` carries the defaults.
    function processInit(init, type, result) {
      const pattern = type === 'pattern';
      const has = (key) => init[key] !== undefined;
      const fromBase = (s) => (pattern ? escapePattern(s) : s);
      let baseURL = null;
      if (has('baseURL')) {
        try {
          baseURL = new NativeURL(init.baseURL);
        } catch {
          throw invalid(`URLPattern: invalid baseURL "${init.baseURL}"`);
        }
        // A component is inherited only if init gives nothing at least as specific: a later one in
        // protocol, hostname, port, pathname, search, hash (or in protocol, hostname, port, username, password).
        const authority = has('protocol') || has('hostname') || has('port');
        if (!has('protocol')) result.protocol = fromBase(baseURL.protocol.slice(0, -1));
        if (!pattern && !authority && !has('username')) result.username = baseURL.username;
        if (!pattern && !authority && !has('username') && !has('password')) result.password = baseURL.password;
        if (!has('protocol') && !has('hostname')) result.hostname = fromBase(baseURL.hostname);
        if (!authority) result.port = baseURL.port;
        if (!authority && !has('pathname')) result.pathname = fromBase(baseURL.pathname);
        if (!authority && !has('pathname') && !has('search')) result.search = fromBase(baseURL.search.slice(1));
        if (!authority && !has('pathname') && !has('search') && !has('hash')) result.hash = fromBase(baseURL.hash.slice(1));
      }
      if (has('protocol')) {
        const v = init.protocol.endsWith(':') ? init.protocol.slice(0, -1) : init.protocol;
        result.protocol = pattern ? v : canonicalizeProtocol(v);
      }
      if (has('username')) result.username = pattern ? init.username : canonicalizeUserinfo(init.username);
      if (has('password')) result.password = pattern ? init.password : canonicalizeUserinfo(init.password);
      if (has('hostname')) result.hostname = pattern ? init.hostname : canonicalizeHostname(init.hostname);
      if (has('port')) result.port = pattern ? init.port : canonicalizePort(init.port, result.protocol);
      if (has('pathname')) {
        let v = init.pathname;
        // A relative pathname resolves against the base URL's directory, as a relative URL would.
        if (baseURL && !hasOpaquePath(baseURL) && !isAbsolutePathname(v, type)) {
          const basePath = fromBase(baseURL.pathname);
          const slash = basePath.lastIndexOf('/');
          if (slash >= 0) v = basePath.slice(0, slash + 1) + v;
        }
        if (pattern) result.pathname = v;
        else result.pathname = DEFAULT_PORTS.has(result.protocol) || result.protocol === '' ? canonicalizePathname(v) : canonicalizeOpaquePathname(v);
      }
      if (has('search')) {
        const v = init.search.startsWith('?') ? init.search.slice(1) : init.search;
        result.search = pattern ? v : canonicalizeSearch(v);
      }
      if (has('hash')) {
        const v = init.hash.startsWith('#') ? init.hash.slice(1) : init.hash;
        result.hash = pattern ? v : canonicalizeHash(v);
      }
      return result;
    }

    // ── Constructor string parsing ("https://*.example.com/:path*") ──────────────────────────────

    // Position of each state in URL order, for "was the parser before X when it moved past Y" tests.
    const STATE_ORDER = { protocol: 0, authority: 1, username: 2, password: 3, hostname: 4, port: 5, pathname: 6, search: 7, hash: 8 };

    function parseConstructorString(input) {
      const cps = Array.from(input);
      const tokens = tokenize(cps, true);
      const result = {};
      let state = 'init';
      let componentStart = 0;
      let k = 0;
      let increment = 1;
      let groupDepth = 0;
      let ipv6Depth = 0;
      let special = false;

      const safeToken = (i) => tokens[Math.min(i, tokens.length - 1)];
      // A separator counts only as plain text: not inside a name, regexp, or as a modifier.
      const isChar = (i, value) => {
        const t = safeToken(i);
        return t.value === value && (t.type === 'char' || t.type === 'escaped-char' || t.type === 'invalid-char');
      };
      const isSearchPrefix = () => {
        if (isChar(k, '?')) return true;
        if (tokens[k].value !== '?') return false;
        if (k === 0) return true;
        // After a group, "?" is that group's modifier, not the start of the search.
        const previous = safeToken(k - 1).type;
        return previous !== 'name' && previous !== 'regexp' && previous !== 'close' && previous !== 'asterisk';
      };
      const componentString = () => cps.slice(safeToken(componentStart).index, tokens[k].index).join('');
      const rewind = (to) => {
        k = componentStart;
        increment = 0;
        if (to) state = to;
      };
      const changeState = (next, skip) => {
        if (state !== 'init' && state !== 'authority' && state !== 'done') result[state] = componentString();
        if (state !== 'init' && next !== 'done') {
          // Skipping over a component gives it an empty pattern rather than leaving it a wildcard.
          const from = STATE_ORDER[state];
          const to = STATE_ORDER[next];
          if (from <= STATE_ORDER.password && to >= STATE_ORDER.port && result.hostname === undefined) result.hostname = '';
          if (from <= STATE_ORDER.port && to >= STATE_ORDER.search && result.pathname === undefined) result.pathname = special ? '/' : '';
          if (from <= STATE_ORDER.pathname && to === STATE_ORDER.hash && result.search === undefined) result.search = '';
        }
        state = next;
        k += skip;
        componentStart = k;
        increment = 0;
      };

      while (k < tokens.length) {
        increment = 1;
        const token = tokens[k];
        if (token.type === 'end') {
          if (state === 'init') {
            // No protocol: a relative pattern, starting at the pathname, search or hash.
            rewind();
            if (isChar(k, '#')) changeState('hash', 1);
            else if (isSearchPrefix()) changeState('search', 1);
            else changeState('pathname', 0);
            k += increment;
            continue;
          }
          if (state === 'authority') {
            // No "@": there is no username or password.
            rewind('hostname');
            k += increment;
            continue;
          }
          changeState('done', 0);
          break;
        }
        // A component boundary never falls inside "{…}".
        if (token.type === 'open') {
          groupDepth++;
          k += increment;
          continue;
        }
        if (groupDepth > 0) {
          if (token.type === 'close') groupDepth--;
          else {
            k += increment;
            continue;
          }
        }
        switch (state) {
          case 'init':
            if (isChar(k, ':')) rewind('protocol');
            break;
          case 'protocol':
            if (isChar(k, ':')) {
              // Whether the scheme is special decides if an authority follows without "//", and the
              // pathname default.
              special = matchesSpecialScheme(compileComponent('protocol', componentString(), canonicalizeProtocol, DEFAULT_OPTIONS, false));
              if (isChar(k + 1, '/') && isChar(k + 2, '/')) changeState('authority', 3);
              else changeState(special ? 'authority' : 'pathname', 1);
            }
            break;
          case 'authority':
            if (isChar(k, '@')) rewind('username');
            else if (isChar(k, '/') || isSearchPrefix() || isChar(k, '#')) rewind('hostname');
            break;
          case 'username':
            if (isChar(k, ':')) changeState('password', 1);
            else if (isChar(k, '@')) changeState('hostname', 1);
            break;
          case 'password':
            if (isChar(k, '@')) changeState('hostname', 1);
            break;
          case 'hostname':
            if (isChar(k, '[')) ipv6Depth++;
            else if (isChar(k, ']')) ipv6Depth--;
            else if (isChar(k, ':') && ipv6Depth === 0) changeState('port', 1);
            else if (isChar(k, '/')) changeState('pathname', 0);
            else if (isSearchPrefix()) changeState('search', 1);
            else if (isChar(k, '#')) changeState('hash', 1);
            break;
          case 'port':
            if (isChar(k, '/')) changeState('pathname', 0);
            else if (isSearchPrefix()) changeState('search', 1);
            else if (isChar(k, '#')) changeState('hash', 1);
            break;
          case 'pathname':
            if (isSearchPrefix()) changeState('search', 1);
            else if (isChar(k, '#')) changeState('hash', 1);
            break;
          case 'search':
            if (isChar(k, '#')) changeState('hash', 1);
            break;
        }
        k += increment;
      }
      // A hostname without a port means the default port: "https://example.com/*" is one origin.
      if (result.hostname !== undefined && result.port === undefined) result.port = '';
      return result;
    }

    // ── The class ─────────────────────────────────────────────────────────────────────────────────

    class URLPattern {
      #components;

      constructor(input = {}, baseURL = undefined, options = undefined) {
        // WebIDL overloads (input, baseURL, options) and (input, options): an object or nothing in
        // second place is the options.
        if (isDictionary(baseURL)) {
          options = baseURL;
          baseURL = null;
        } else baseURL = usv(baseURL);
        const ignoreCase = options !== undefined && options !== null && Boolean(options.ignoreCase);
        let init;
        if (isDictionary(input)) {
          if (baseURL !== null) throw invalid('URLPattern: a baseURL argument goes with a string pattern; in an init object, set its baseURL member');
          init = toInit(input);
        } else {
          const pattern = usv(input);
          init = parseConstructorString(pattern);
          if (baseURL === null && init.protocol === undefined) {
            throw invalid(`URLPattern: relative pattern ${JSON.stringify(pattern)} needs a baseURL (or give an absolute pattern, or an init object such as { pathname })`);
          }
          if (baseURL !== null) init.baseURL = baseURL;
        }
        const p = processInit(init, 'pattern', {});
        for (const key of COMPONENTS) if (p[key] === undefined) p[key] = '*';
        if (DEFAULT_PORTS.has(p.protocol) && DEFAULT_PORTS.get(p.protocol) === p.port) p.port = '';

        const c = {};
        c.protocol = compileComponent('protocol', p.protocol, canonicalizeProtocol, DEFAULT_OPTIONS, false);
        c.username = compileComponent('username', p.username, canonicalizeUserinfo, DEFAULT_OPTIONS, false);
        c.password = compileComponent('password', p.password, canonicalizeUserinfo, DEFAULT_OPTIONS, false);
        c.hostname = compileComponent('hostname', p.hostname, isIPv6Pattern(p.hostname) ? canonicalizeIPv6Hostname : canonicalizeHostname, HOSTNAME_OPTIONS, false);
        c.port = compileComponent('port', p.port, canonicalizePort, DEFAULT_OPTIONS, false);
        // Only URLs with a special scheme have "/"-separated paths; others have an opaque path.
        if (matchesSpecialScheme(c.protocol)) c.pathname = compileComponent('pathname', p.pathname, canonicalizePathname, PATHNAME_OPTIONS, ignoreCase);
        else c.pathname = compileComponent('pathname', p.pathname, canonicalizeOpaquePathname, DEFAULT_OPTIONS, ignoreCase);
        c.search = compileComponent('search', p.search, canonicalizeSearch, DEFAULT_OPTIONS, ignoreCase);
        c.hash = compileComponent('hash', p.hash, canonicalizeHash, DEFAULT_OPTIONS, ignoreCase);
        this.#components = c;
      }

      test(input = {}, baseURL = undefined) {
        return this.#match(input, baseURL) !== null;
      }

      exec(input = {}, baseURL = undefined) {
        return this.#match(input, baseURL);
      }

      #match(input, baseURL) {
        let values;
        const inputs = [];
        if (isDictionary(input)) {
          if (baseURL !== undefined) throw invalid('URLPattern: a baseURL argument goes with a string input; in an init object, set its baseURL member');
          const init = toInit(input);
          inputs.push(init);
          // Input that cannot be canonicalized cannot match.
          try {
            values = processInit(init, 'url', { protocol: '', username: '', password: '', hostname: '', port: '', pathname: '', search: '', hash: '' });
          } catch {
            return null;
          }
        } else {
          const s = usv(input);
          inputs.push(s);
          let url;
          try {
            if (baseURL === undefined) url = new NativeURL(s);
            else {
              const base = usv(baseURL);
              inputs.push(base);
              url = new NativeURL(s, base);
            }
          } catch {
            return null;
          }
          values = {
            protocol: url.protocol.slice(0, -1),
            username: url.username,
            password: url.password,
            hostname: url.hostname,
            port: url.port,
            pathname: url.pathname,
            search: url.search.slice(1),
            hash: url.hash.slice(1),
          };
        }
        const result = { inputs };
        for (const key of COMPONENTS) {
          const component = this.#components[key];
          const m = component.regexp.exec(values[key]);
          if (m === null) return null;
          const groups = {};
          component.names.forEach((name, i) => {
            groups[name] = m[i + 1];
          });
          result[key] = { input: values[key], groups };
        }
        return result;
      }

      get protocol() {
        return this.#components.protocol.pattern;
      }
      get username() {
        return this.#components.username.pattern;
      }
      get password() {
        return this.#components.password.pattern;
      }
      get hostname() {
        return this.#components.hostname.pattern;
      }
      get port() {
        return this.#components.port.pattern;
      }
      get pathname() {
        return this.#components.pathname.pattern;
      }
      get search() {
        return this.#components.search.pattern;
      }
      get hash() {
        return this.#components.hash.pattern;
      }
      get hasRegExpGroups() {
        return COMPONENTS.some((key) => this.#components[key].hasRegExpGroups);
      }
      get [Symbol.toStringTag]() {
        return 'URLPattern';
      }
    }

    return URLPattern;
  }
})();
