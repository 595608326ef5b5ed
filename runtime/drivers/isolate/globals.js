// Grove prelude part: how the other parts define globals. Runs first, in a bare V8 context, and leaves
// __grove_globals for them; subtle.js, the last part, deletes it before any user code runs.
//
//   define(name, value)  a global as Workers has it: non-enumerable, writable, configurable; a function
//                        is named `name` (the bundle's identifiers are shortened: prelude-bundle.ts).
//   named(fn, name)      fn, with its `name` set (for functions that are not globals themselves).
//   lazy(names, make)    globals made on first use. Each name is an accessor until one of them is
//                        read; then make() runs once and returns an object holding a value for each
//                        name (and whatever else its part needs), and each global that still holds
//                        its accessor becomes that value; one the worker assigned or deleted meanwhile
//                        stays as the worker left it. Returns load(): make()'s object, made now if need
//                        be; load.loaded() says whether make() has run.
//
// Why lazy: an isolate keeps, for every function in code it has run, a function object and V8's
// metadata about it, even if the function is never called. Most workers never touch a stream, a
// URLPattern, crypto.subtle, Blob or AbortController, and the parts defining them are most of the
// prelude's functions: made on first use, they cost an isolate that never uses them only their
// (pre-parsed) source. Measured with 300 isolates in one process: ~0.1 MiB less per isolate.
(function installGlobals() {
  'use strict';
  const g = globalThis;

  const named = (fn, name) => {
    if (fn.name !== name) Object.defineProperty(fn, 'name', { value: name, configurable: true });
    return fn;
  };
  const put = (name, value) => Object.defineProperty(g, name, { value, writable: true, configurable: true, enumerable: false });
  const define = (name, value) => put(name, typeof value === 'function' ? named(value, name) : value);

  function lazy(names, make) {
    let made = null;
    let making = false;
    const getters = new Map();
    const load = () => {
      if (made !== null) return made;
      // A part whose make() reads its own globals would otherwise recurse until the stack ran out.
      if (making) throw new Error(`the prelude part defining ${names.join(', ')} used its own globals while loading`);
      making = true;
      try {
        made = make();
      } finally {
        making = false;
      }
      for (const name of names) {
        if (Object.getOwnPropertyDescriptor(g, name)?.get === getters.get(name)) define(name, made[name]);
      }
      return made;
    };
    load.loaded = () => made !== null;
    for (const name of names) {
      const get = () => load()[name];
      getters.set(name, get);
      // The worker's own value is left as it is: no renaming.
      Object.defineProperty(g, name, { get, set: (value) => put(name, value), configurable: true, enumerable: false });
    }
    return load;
  }

  Object.defineProperty(g, '__grove_globals', { value: Object.freeze({ define, named, lazy }), configurable: true });
})();
