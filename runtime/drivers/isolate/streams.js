// Grove prelude part: WHATWG Streams (https://streams.spec.whatwg.org/), written for Grove from the
// spec's algorithms. It runs in a bare V8 context, after globals.js and before the other parts, so it
// may use ECMAScript built-ins only: errors are TypeError/RangeError (no DOMException yet), and the one Web
// API it needs from later parts — AbortController, for WritableStreamDefaultController.signal and
// pipeTo's signal — is handed over by prelude.js through the internal hooks below.
//
// Layout: every stream, controller and reader is a plain record on which the spec's abstract
// operations work; the public classes are thin shells holding one record in a private field. Records
// let the operations of one class reach another's slots (a pipe reads a reader's and a writer's),
// which private fields alone cannot, and let the core make streams for bodies without the public
// constructor's option parsing.
//
// Byte streams: `type: 'bytes'` is accepted, but the stream behaves as a default stream whose chunks
// are Uint8Array views of what was enqueued (queue size counted in bytes); there are no BYOB readers
// and no byobRequest. Bodies only ever need Uint8Array chunks, and a byte-stream source that enqueues
// works unchanged.
//
// Loaded on first use (globals.js's lazy): most workers never make a stream (`new Response("text")`
// does not), and the classes, their prototypes and their functions cost each isolate ~75 KiB.
//
// Hooks for prelude.js (taken and deleted by it before user code runs): __grove_streams.
(function lazyStreams() {
  'use strict';
  const g = globalThis;
  const { lazy } = g.__grove_globals;

  // User code may replace Promise's methods, before the streams load or after; the streams keep
  // working on the originals, taken now.
  const NativePromise = Promise;
  const promiseThen = Promise.prototype.then;
  const promiseResolve = Promise.resolve;
  const promiseReject = Promise.reject;

  let abortClasses = null; // () => ({ AbortController, AbortSignal }), from prelude.js
  const load = lazy(
    [
      'ReadableStream',
      'ReadableStreamDefaultReader',
      'ReadableStreamDefaultController',
      'WritableStream',
      'WritableStreamDefaultWriter',
      'WritableStreamDefaultController',
      'TransformStream',
      'TransformStreamDefaultController',
      'ByteLengthQueuingStrategy',
      'CountQueuingStrategy',
    ],
    installStreams,
  );

  Object.defineProperty(g, '__grove_streams', {
    configurable: true,
    value: Object.freeze({
      // The classes, for the core: the globals may have been replaced by user code.
      classes: load,
      // No stream exists before the part loads, so nothing is one.
      isReadableStream: (o) => load.loaded() && load().ops.isReadableStream(o),
      isDisturbed: (o) => load().ops.isDisturbed(o),
      isLocked: (o) => load().ops.isLocked(o),
      fromBytes: (bytes) => load().ops.fromBytes(bytes),
      readAllBytes: (o, maxBytes, tooLarge) => load().ops.readAllBytes(o, maxBytes, tooLarge),
      tee: (o) => load().ops.tee(o),
      proxy: (o) => load().ops.proxy(o),
      // AbortController and AbortSignal are made on first use too, so this part gets their loader.
      useAbort(classes) {
        abortClasses = classes;
      },
    }),
  });

  function installStreams() {
    const upon = (promise, onFulfilled, onRejected) => promiseThen.call(promise, onFulfilled, onRejected);
    const noop = () => undefined;
    const setHandled = (promise) => {
      promiseThen.call(promise, undefined, noop);
      return promise;
    };
    const resolved = (value) => promiseResolve.call(NativePromise, value);
    const rejected = (reason) => promiseReject.call(NativePromise, reason);
    const microtask = (fn) => promiseThen.call(resolved(undefined), fn);
    // Promise.all looks up Promise.resolve and then at call time, so it is not used.
    const waitForAll = (promises) =>
      new NativePromise((resolve, reject) => {
        let left = promises.length;
        if (left === 0) resolve(undefined);
        for (const p of promises) upon(p, () => --left === 0 && resolve(undefined), reject);
      });

    // A promise with its resolving functions and whether it has settled (writer.ready needs to know).
    function deferred() {
      const d = { promise: undefined, settled: false, resolve: undefined, reject: undefined };
      d.promise = new NativePromise((resolve, reject) => {
        d.resolve = (value) => {
          d.settled = true;
          resolve(value);
        };
        d.reject = (reason) => {
          d.settled = true;
          reject(reason);
        };
      });
      return d;
    }
    function resolvedDeferred(value) {
      const d = deferred();
      d.resolve(value);
      return d;
    }
    function rejectedDeferred(reason) {
      const d = deferred();
      setHandled(d.promise);
      d.reject(reason);
      return d;
    }

    // Calls a user callback as a promise: a synchronous throw becomes a rejection.
    function promiseCall(fn, thisArg, args) {
      try {
        return resolved(fn.apply(thisArg, args));
      } catch (err) {
        return rejected(err);
      }
    }

    const isObject = (x) => (typeof x === 'object' && x !== null) || typeof x === 'function';

    // WebIDL callback members of a dictionary: absent is undefined, anything else must be callable.
    function callbackMember(dict, name, where) {
      const value = dict[name];
      if (value === undefined) return undefined;
      if (typeof value !== 'function') throw new TypeError(`${where}: ${name} must be a function`);
      return value;
    }
    function dictionary(value, where) {
      if (value === undefined || value === null) return {};
      if (!isObject(value)) throw new TypeError(`${where} must be an object`);
      return value;
    }

    function extractHighWaterMark(strategy, defaultHWM) {
      if (strategy.highWaterMark === undefined) return defaultHWM;
      const hwm = Number(strategy.highWaterMark);
      if (Number.isNaN(hwm) || hwm < 0) throw new RangeError('highWaterMark must be a non-negative number');
      return hwm;
    }
    function extractSizeAlgorithm(strategy) {
      const size = strategy.size;
      if (size === undefined) return () => 1;
      if (typeof size !== 'function') throw new TypeError('the strategy size must be a function');
      return (chunk) => size(chunk);
    }

    // ── Queue with sizes (a deque: Array#shift is linear once an array grows large) ─────────────────

    function resetQueue(container) {
      container.queue = [];
      container.queueHead = 0;
      container.queueTotalSize = 0;
    }
    const queueLength = (container) => container.queue.length - container.queueHead;
    function enqueueValueWithSize(container, value, size) {
      const n = Number(size);
      if (!(n >= 0) || n === Infinity) throw new RangeError('a chunk size must be a finite, non-negative number');
      container.queue.push(value, n);
      container.queueTotalSize += n;
    }
    function dequeueValue(container) {
      const q = container.queue;
      const value = q[container.queueHead];
      const size = q[container.queueHead + 1];
      q[container.queueHead] = q[container.queueHead + 1] = undefined;
      container.queueHead += 2;
      if (container.queueHead === q.length) {
        container.queue = [];
        container.queueHead = 0;
      } else if (container.queueHead > 1024 && container.queueHead * 2 > q.length) {
        container.queue = q.slice(container.queueHead);
        container.queueHead = 0;
      }
      container.queueTotalSize -= size;
      if (container.queueTotalSize < 0) container.queueTotalSize = 0; // rounding
      return value;
    }
    const peekQueueValue = (container) => container.queue[container.queueHead];

    // Construction of the public shells is private: the key is never reachable from user code.
    const INTERNAL = Object.freeze({});
    const illegal = (name) => new TypeError(`Illegal constructor: ${name} cannot be constructed directly`);

    // ══ Readable streams ═══════════════════════════════════════════════════════════════════════════

    let readableRecord; // ReadableStream → record, or undefined for anything else
    let readerRecord;

    function newReadableRecord() {
      return { state: 'readable', storedError: undefined, reader: undefined, disturbed: false, controller: undefined, api: undefined };
    }
    function readableApi(stream) {
      if (stream.api === undefined) new ReadableStream(INTERNAL, stream);
      return stream.api;
    }
    function readableControllerApi(controller) {
      if (controller.api === undefined) new ReadableStreamDefaultController(INTERNAL, controller);
      return controller.api;
    }

    function createReadableStream(startAlgorithm, pullAlgorithm, cancelAlgorithm, highWaterMark = 1, sizeAlgorithm = () => 1) {
      const stream = newReadableRecord();
      setUpReadableStreamDefaultController(stream, {}, startAlgorithm, pullAlgorithm, cancelAlgorithm, highWaterMark, sizeAlgorithm);
      return stream;
    }

    const isReadableStreamLocked = (stream) => stream.reader !== undefined;

    function readableStreamCancel(stream, reason) {
      stream.disturbed = true;
      if (stream.state === 'closed') return resolved(undefined);
      if (stream.state === 'errored') return rejected(stream.storedError);
      readableStreamClose(stream);
      const sourceCancelPromise = readableControllerCancelSteps(stream.controller, reason);
      return upon(sourceCancelPromise, noop);
    }

    function readableStreamClose(stream) {
      stream.state = 'closed';
      const reader = stream.reader;
      if (reader === undefined) return;
      reader.closed.resolve(undefined);
      const requests = reader.readRequests;
      reader.readRequests = [];
      for (const request of requests) request.close();
    }

    function readableStreamError(stream, e) {
      stream.state = 'errored';
      stream.storedError = e;
      const reader = stream.reader;
      if (reader === undefined) return;
      setHandled(reader.closed.promise);
      reader.closed.reject(e);
      readerErrorReadRequests(reader, e);
    }

    // Closing fulfils waiting reads through readableStreamClose, so only chunks come this way.
    function readableStreamFulfillReadRequest(stream, chunk) {
      stream.reader.readRequests.shift().chunk(chunk);
    }

    const readableStreamGetNumReadRequests = (stream) => stream.reader.readRequests.length;

    // ── Default controller ──

    function setUpReadableStreamDefaultController(stream, controller, startAlgorithm, pullAlgorithm, cancelAlgorithm, highWaterMark, sizeAlgorithm, bytes = false) {
      controller.stream = stream;
      controller.api = undefined;
      resetQueue(controller);
      controller.started = controller.closeRequested = controller.pullAgain = controller.pulling = false;
      controller.bytes = bytes;
      controller.strategySizeAlgorithm = sizeAlgorithm;
      controller.strategyHWM = highWaterMark;
      controller.pullAlgorithm = pullAlgorithm;
      controller.cancelAlgorithm = cancelAlgorithm;
      stream.controller = controller;
      const startResult = startAlgorithm();
      upon(
        resolved(startResult),
        () => {
          controller.started = true;
          readableControllerCallPullIfNeeded(controller);
        },
        (r) => readableControllerError(controller, r),
      );
    }

    function setUpFromUnderlyingSource(stream, source, dict, highWaterMark, sizeAlgorithm, bytes) {
      const controller = {};
      const start = callbackMember(dict, 'start', 'ReadableStream source');
      const pull = callbackMember(dict, 'pull', 'ReadableStream source');
      const cancel = callbackMember(dict, 'cancel', 'ReadableStream source');
      setUpReadableStreamDefaultController(
        stream,
        controller,
        () => (start ? start.call(source, readableControllerApi(controller)) : undefined),
        pull ? () => promiseCall(pull, source, [readableControllerApi(controller)]) : () => resolved(undefined),
        cancel ? (reason) => promiseCall(cancel, source, [reason]) : () => resolved(undefined),
        highWaterMark,
        sizeAlgorithm,
        bytes,
      );
    }

    function readableControllerCallPullIfNeeded(controller) {
      if (!readableControllerShouldCallPull(controller)) return;
      if (controller.pulling) {
        controller.pullAgain = true;
        return;
      }
      controller.pulling = true;
      upon(
        controller.pullAlgorithm(),
        () => {
          controller.pulling = false;
          if (controller.pullAgain) {
            controller.pullAgain = false;
            readableControllerCallPullIfNeeded(controller);
          }
        },
        (e) => readableControllerError(controller, e),
      );
    }

    function readableControllerShouldCallPull(controller) {
      const stream = controller.stream;
      if (!readableControllerCanCloseOrEnqueue(controller) || !controller.started) return false;
      if (isReadableStreamLocked(stream) && readableStreamGetNumReadRequests(stream) > 0) return true;
      return readableControllerGetDesiredSize(controller) > 0;
    }

    function readableControllerClearAlgorithms(controller) {
      controller.pullAlgorithm = undefined;
      controller.cancelAlgorithm = undefined;
      controller.strategySizeAlgorithm = undefined;
    }

    function readableControllerClose(controller) {
      if (!readableControllerCanCloseOrEnqueue(controller)) return;
      controller.closeRequested = true;
      if (queueLength(controller) === 0) {
        readableControllerClearAlgorithms(controller);
        readableStreamClose(controller.stream);
      }
    }

    function readableControllerEnqueue(controller, chunk) {
      if (!readableControllerCanCloseOrEnqueue(controller)) return;
      const stream = controller.stream;
      if (isReadableStreamLocked(stream) && readableStreamGetNumReadRequests(stream) > 0) {
        readableStreamFulfillReadRequest(stream, chunk);
      } else {
        try {
          enqueueValueWithSize(controller, chunk, controller.strategySizeAlgorithm(chunk));
        } catch (err) {
          readableControllerError(controller, err);
          throw err;
        }
      }
      readableControllerCallPullIfNeeded(controller);
    }

    function readableControllerError(controller, e) {
      const stream = controller.stream;
      if (stream.state !== 'readable') return;
      resetQueue(controller);
      readableControllerClearAlgorithms(controller);
      readableStreamError(stream, e);
    }

    function readableControllerGetDesiredSize(controller) {
      const state = controller.stream.state;
      if (state === 'errored') return null;
      if (state === 'closed') return 0;
      return controller.strategyHWM - controller.queueTotalSize;
    }

    const readableControllerHasBackpressure = (controller) => !readableControllerShouldCallPull(controller);
    const readableControllerCanCloseOrEnqueue = (controller) => !controller.closeRequested && controller.stream.state === 'readable';

    function readableControllerCancelSteps(controller, reason) {
      resetQueue(controller);
      const result = controller.cancelAlgorithm(reason);
      readableControllerClearAlgorithms(controller);
      return result;
    }

    function readableControllerPullSteps(controller, readRequest) {
      const stream = controller.stream;
      if (queueLength(controller) > 0) {
        const chunk = dequeueValue(controller);
        if (controller.closeRequested && queueLength(controller) === 0) {
          readableControllerClearAlgorithms(controller);
          readableStreamClose(stream);
        } else readableControllerCallPullIfNeeded(controller);
        readRequest.chunk(chunk);
      } else {
        stream.reader.readRequests.push(readRequest);
        readableControllerCallPullIfNeeded(controller);
      }
    }

    // ── Default reader ──

    function acquireReader(stream) {
      if (isReadableStreamLocked(stream)) throw new TypeError('This ReadableStream is locked to a reader');
      const reader = { stream, readRequests: [], closed: undefined, api: undefined };
      stream.reader = reader;
      if (stream.state === 'readable') reader.closed = deferred();
      else if (stream.state === 'closed') reader.closed = resolvedDeferred(undefined);
      else reader.closed = rejectedDeferred(stream.storedError);
      return reader;
    }

    // A read request is { chunk(value), close(), error(e) }: the spec's chunk, close and error steps.
    function readerRead(reader, readRequest) {
      const stream = reader.stream;
      stream.disturbed = true;
      if (stream.state === 'closed') readRequest.close();
      else if (stream.state === 'errored') readRequest.error(stream.storedError);
      else readableControllerPullSteps(stream.controller, readRequest);
    }

    function readerReadPromise(reader) {
      return new NativePromise((resolve, reject) =>
        readerRead(reader, {
          chunk: (value) => resolve({ value, done: false }),
          close: () => resolve({ value: undefined, done: true }),
          error: reject,
        }),
      );
    }

    function readerErrorReadRequests(reader, e) {
      const requests = reader.readRequests;
      reader.readRequests = [];
      for (const request of requests) request.error(e);
    }

    function readerRelease(reader) {
      const stream = reader.stream;
      const released = new TypeError('the reader was released');
      if (stream.state === 'readable') {
        setHandled(reader.closed.promise);
        reader.closed.reject(released);
      } else reader.closed = rejectedDeferred(released);
      setHandled(reader.closed.promise);
      stream.reader = undefined;
      reader.stream = undefined;
      readerErrorReadRequests(reader, new TypeError('the reader was released'));
    }

    function readerGenericCancel(reader, reason) {
      return readableStreamCancel(reader.stream, reason);
    }

    // ── tee ──

    function readableStreamTee(stream, cloneForBranch2) {
      const reader = acquireReader(stream);
      let reading = false;
      let readAgain = false;
      let canceled1 = false;
      let canceled2 = false;
      let reason1;
      let reason2;
      const cancelPromise = deferred();
      const pullAlgorithm = () => {
        if (reading) {
          readAgain = true;
          return resolved(undefined);
        }
        reading = true;
        readerRead(reader, {
          // Deferred a microtask so a branch errored by this very chunk sees the error first.
          chunk: (chunk) =>
            microtask(() => {
              readAgain = false;
              const chunk2 = cloneForBranch2 ? cloneForBranch2(chunk) : chunk;
              if (!canceled1) readableControllerEnqueue(branch1.controller, chunk);
              if (!canceled2) readableControllerEnqueue(branch2.controller, chunk2);
              reading = false;
              if (readAgain) pullAlgorithm();
            }),
          close: () => {
            reading = false;
            if (!canceled1) readableControllerClose(branch1.controller);
            if (!canceled2) readableControllerClose(branch2.controller);
            if (!canceled1 || !canceled2) cancelPromise.resolve(undefined);
          },
          error: () => {
            reading = false;
          },
        });
        return resolved(undefined);
      };
      const cancelBoth = () => cancelPromise.resolve(readableStreamCancel(stream, [reason1, reason2]));
      const branch1 = createReadableStream(noop, pullAlgorithm, (reason) => {
        canceled1 = true;
        reason1 = reason;
        if (canceled2) cancelBoth();
        return cancelPromise.promise;
      });
      const branch2 = createReadableStream(noop, pullAlgorithm, (reason) => {
        canceled2 = true;
        reason2 = reason;
        if (canceled1) cancelBoth();
        return cancelPromise.promise;
      });
      upon(reader.closed.promise, undefined, (r) => {
        readableControllerError(branch1.controller, r);
        readableControllerError(branch2.controller, r);
        if (!canceled1 || !canceled2) cancelPromise.resolve(undefined);
      });
      return [branch1, branch2];
    }

    // ── pipeTo ──

    function readableStreamPipeTo(source, dest, preventClose, preventAbort, preventCancel, signal) {
      const reader = acquireReader(source);
      const writer = acquireWriter(dest);
      source.disturbed = true;
      let shuttingDown = false;
      const promise = deferred();
      let currentWrite = resolved(undefined);
      let abortAlgorithm;

      const waitForWritesToFinish = () => {
        const old = currentWrite;
        return upon(old, () => (old !== currentWrite ? waitForWritesToFinish() : undefined));
      };
      const finalize = (isError, error) => {
        writerRelease(writer);
        readerRelease(reader);
        if (signal !== undefined) signal.removeEventListener('abort', abortAlgorithm);
        if (isError) promise.reject(error);
        else promise.resolve(undefined);
      };
      const writesThenFinish = (then) => {
        if (dest.state === 'writable' && !writableStreamCloseQueuedOrInFlight(dest)) upon(waitForWritesToFinish(), then);
        else then();
      };
      const shutdownWithAnAction = (action, originalIsError, originalError) => {
        if (shuttingDown) return;
        shuttingDown = true;
        writesThenFinish(() =>
          upon(
            action(),
            () => finalize(originalIsError, originalError),
            (newError) => finalize(true, newError),
          ),
        );
      };
      const shutdown = (isError, error) => {
        if (shuttingDown) return;
        shuttingDown = true;
        writesThenFinish(() => finalize(isError, error));
      };

      if (signal !== undefined) {
        abortAlgorithm = () => {
          const error = signal.reason;
          const actions = [];
          if (!preventAbort) actions.push(() => (dest.state === 'writable' ? writableStreamAbort(dest, error) : resolved(undefined)));
          if (!preventCancel) actions.push(() => (source.state === 'readable' ? readableStreamCancel(source, error) : resolved(undefined)));
          shutdownWithAnAction(() => waitForAll(actions.map((action) => action())), true, error);
        };
        if (signal.aborted) {
          abortAlgorithm();
          return promise.promise;
        }
        signal.addEventListener('abort', abortAlgorithm);
      }

      // Reads only while the destination wants more (writer.ready), one chunk per step.
      const pipeStep = () => {
        if (shuttingDown) return resolved(true);
        return upon(
          writer.ready.promise,
          () =>
            new NativePromise((resolveRead, rejectRead) => {
              readerRead(reader, {
                chunk: (chunk) => {
                  currentWrite = upon(writerWrite(writer, chunk), undefined, noop);
                  resolveRead(false);
                },
                close: () => resolveRead(true),
                error: rejectRead,
              });
            }),
        );
      };
      const pipeLoop = () =>
        new NativePromise((resolveLoop, rejectLoop) => {
          const next = (done) => {
            if (done) resolveLoop();
            else upon(pipeStep(), next, rejectLoop);
          };
          next(false);
        });

      // Errors must be propagated forward.
      const onSourceErrored = (storedError) => {
        if (!preventAbort) shutdownWithAnAction(() => writableStreamAbort(dest, storedError), true, storedError);
        else shutdown(true, storedError);
      };
      if (source.state === 'errored') onSourceErrored(source.storedError);
      else upon(reader.closed.promise, undefined, onSourceErrored);
      // Errors must be propagated backward.
      const onDestErrored = (storedError) => {
        if (!preventCancel) shutdownWithAnAction(() => readableStreamCancel(source, storedError), true, storedError);
        else shutdown(true, storedError);
      };
      if (dest.state === 'errored') onDestErrored(dest.storedError);
      else upon(writer.closed.promise, undefined, onDestErrored);
      // Closing must be propagated forward.
      const onSourceClosed = () => {
        if (!preventClose) shutdownWithAnAction(() => writerCloseWithErrorPropagation(writer));
        else shutdown();
      };
      if (source.state === 'closed') onSourceClosed();
      else upon(reader.closed.promise, onSourceClosed, noop);
      // Closing must be propagated backward.
      if (writableStreamCloseQueuedOrInFlight(dest) || dest.state === 'closed') {
        const destClosed = new TypeError('the destination writable stream closed before all data could be piped to it');
        if (!preventCancel) shutdownWithAnAction(() => readableStreamCancel(source, destClosed), true, destClosed);
        else shutdown(true, destClosed);
      }
      setHandled(pipeLoop());
      return promise.promise;
    }

    // ── from(asyncIterable) ──

    function getAsyncIterator(iterable) {
      if (iterable === null || iterable === undefined) throw new TypeError('ReadableStream.from needs an iterable or async iterable');
      const asyncMethod = iterable[Symbol.asyncIterator];
      if (asyncMethod !== undefined && asyncMethod !== null) {
        if (typeof asyncMethod !== 'function') throw new TypeError('Symbol.asyncIterator is not a function');
        const iterator = asyncMethod.call(iterable);
        if (!isObject(iterator)) throw new TypeError('the async iterator is not an object');
        return { iterator, next: iterator.next, sync: false };
      }
      const syncMethod = iterable[Symbol.iterator];
      if (typeof syncMethod !== 'function') throw new TypeError('ReadableStream.from needs an iterable or async iterable');
      const iterator = syncMethod.call(iterable);
      if (!isObject(iterator)) throw new TypeError('the iterator is not an object');
      return { iterator, next: iterator.next, sync: true };
    }

    function readableStreamFromIterable(asyncIterable) {
      const record = getAsyncIterator(asyncIterable);
      const { iterator, sync } = record;
      // A sync iterator's values may be promises: awaited as for-await does (CreateAsyncFromSyncIterator).
      const settleResult = (result) => {
        if (!isObject(result)) throw new TypeError('the iterator result is not an object');
        if (!sync) return result;
        const done = Boolean(result.done);
        return upon(resolved(result.value), (value) => ({ value, done }));
      };
      const pullAlgorithm = () => {
        let nextResult;
        try {
          nextResult = record.next.call(iterator);
        } catch (err) {
          return rejected(err);
        }
        return upon(
          upon(resolved(nextResult), settleResult),
          (result) => {
            if (!isObject(result)) throw new TypeError('the iterator result is not an object');
            if (result.done) readableControllerClose(stream.controller);
            else readableControllerEnqueue(stream.controller, result.value);
          },
        );
      };
      const cancelAlgorithm = (reason) => {
        let returnMethod;
        try {
          returnMethod = iterator.return;
          if (returnMethod === undefined || returnMethod === null) return resolved(undefined);
          if (typeof returnMethod !== 'function') throw new TypeError('the iterator return is not a function');
        } catch (err) {
          return rejected(err);
        }
        return upon(promiseCall(returnMethod, iterator, [reason]), (result) => {
          if (!isObject(result)) throw new TypeError('the iterator return result is not an object');
        });
      };
      const stream = createReadableStream(noop, pullAlgorithm, cancelAlgorithm, 0);
      return stream;
    }

    // ── Async iteration ──

    const AsyncIteratorPrototype = Object.getPrototypeOf(Object.getPrototypeOf(async function* () {}).prototype);
    let iteratorState;
    const ReadableStreamAsyncIteratorPrototype = Object.create(AsyncIteratorPrototype);
    {
      // A WebIDL async iterator: next() and return() calls queue behind one another.
      const states = new WeakMap();
      iteratorState = states;
      const stateOf = (it) => {
        const state = states.get(it);
        if (!state) throw new TypeError('not a ReadableStream async iterator');
        return state;
      };
      const nextResult = (state) => {
        const reader = state.reader;
        if (reader.stream === undefined) return rejected(new TypeError('the iterator released its reader'));
        return new NativePromise((resolve, reject) =>
          readerRead(reader, {
            chunk: (value) => resolve({ value, done: false }),
            close: () => {
              readerRelease(reader);
              state.finished = true;
              resolve({ value: undefined, done: true });
            },
            error: (e) => {
              readerRelease(reader);
              state.finished = true;
              reject(e);
            },
          }),
        );
      };
      Object.defineProperties(ReadableStreamAsyncIteratorPrototype, {
        next: {
          value: function next() {
            let state;
            try {
              state = stateOf(this);
            } catch (err) {
              return rejected(err);
            }
            const steps = () => {
              if (state.finished) return resolved({ value: undefined, done: true });
              return upon(
                nextResult(state),
                (result) => {
                  state.ongoing = undefined;
                  return result;
                },
                (reason) => {
                  state.ongoing = undefined;
                  state.finished = true;
                  throw reason;
                },
              );
            };
            state.ongoing = state.ongoing ? upon(state.ongoing, steps, steps) : steps();
            return state.ongoing;
          },
          writable: true,
          configurable: true,
        },
        return: {
          value: function (value) {
            let state;
            try {
              state = stateOf(this);
            } catch (err) {
              return rejected(err);
            }
            const steps = () => {
              if (state.finished) return resolved({ value, done: true });
              state.finished = true;
              const reader = state.reader;
              if (reader.stream === undefined) return resolved(undefined);
              if (!state.preventCancel) {
                const result = readerGenericCancel(reader, value);
                readerRelease(reader);
                return result;
              }
              readerRelease(reader);
              return resolved(undefined);
            };
            state.ongoing = state.ongoing ? upon(state.ongoing, steps, steps) : steps();
            return upon(state.ongoing, () => ({ value, done: true }));
          },
          writable: true,
          configurable: true,
        },
        [Symbol.toStringTag]: { value: 'ReadableStream AsyncIterator', configurable: true },
      });
    }

    // ── Public classes ──

    class ReadableStream {
      #s;
      constructor(underlyingSource = undefined, strategy = undefined) {
        if (underlyingSource === INTERNAL) {
          this.#s = strategy;
          strategy.api = this;
          return;
        }
        const source = dictionary(underlyingSource, 'ReadableStream underlying source');
        const strat = dictionary(strategy, 'ReadableStream strategy');
        this.#s = newReadableRecord();
        this.#s.api = this;
        const type = source.type;
        if (type !== undefined && String(type) !== 'bytes') throw new TypeError(`ReadableStream type must be "bytes" or left out, not "${String(type)}"`);
        if (type !== undefined) {
          if (strat.size !== undefined) throw new RangeError('a byte stream cannot have a size function in its strategy');
          if (source.autoAllocateChunkSize !== undefined && !(Number(source.autoAllocateChunkSize) > 0)) {
            throw new TypeError('autoAllocateChunkSize must be greater than 0');
          }
          setUpFromUnderlyingSource(this.#s, underlyingSource, source, extractHighWaterMark(strat, 0), (chunk) => chunk.byteLength, true);
        } else {
          setUpFromUnderlyingSource(this.#s, underlyingSource, source, extractHighWaterMark(strat, 1), extractSizeAlgorithm(strat), false);
        }
      }
      static {
        readableRecord = (o) => (isObject(o) && #s in o ? o.#s : undefined);
      }
      static from(asyncIterable) {
        return readableApi(readableStreamFromIterable(asyncIterable));
      }
      get locked() {
        return isReadableStreamLocked(this.#s);
      }
      cancel(reason = undefined) {
        const stream = readableRecord(this);
        if (!stream) return rejected(new TypeError('cancel called on something that is not a ReadableStream'));
        if (isReadableStreamLocked(stream)) return rejected(new TypeError('Cannot cancel a ReadableStream that is locked to a reader'));
        return readableStreamCancel(stream, reason);
      }
      getReader(options = undefined) {
        const stream = this.#s;
        const mode = dictionary(options, 'getReader options').mode;
        if (mode !== undefined) {
          if (String(mode) === 'byob') throw new TypeError('BYOB readers are not supported: Grove reads byte streams with a default reader');
          throw new TypeError(`getReader mode must be "byob" or left out, not "${String(mode)}"`);
        }
        return new ReadableStreamDefaultReader(readableApi(stream));
      }
      pipeThrough(transform, options = undefined) {
        const stream = this.#s;
        if (!isObject(transform)) throw new TypeError('pipeThrough needs a { writable, readable } pair');
        const readable = transform.readable;
        if (!readableRecord(readable)) throw new TypeError('pipeThrough: transform.readable must be a ReadableStream');
        const writable = writableRecord(transform.writable);
        if (!writable) throw new TypeError('pipeThrough: transform.writable must be a WritableStream');
        const opts = pipeOptions(options);
        if (isReadableStreamLocked(stream)) throw new TypeError('Cannot pipe a ReadableStream that is locked to a reader');
        if (isWritableStreamLocked(writable)) throw new TypeError('Cannot pipe to a WritableStream that is locked to a writer');
        setHandled(readableStreamPipeTo(stream, writable, opts.preventClose, opts.preventAbort, opts.preventCancel, opts.signal));
        return readable;
      }
      pipeTo(destination, options = undefined) {
        const stream = readableRecord(this);
        if (!stream) return rejected(new TypeError('pipeTo called on something that is not a ReadableStream'));
        const dest = writableRecord(destination);
        if (!dest) return rejected(new TypeError('pipeTo needs a WritableStream as its destination'));
        let opts;
        try {
          opts = pipeOptions(options);
        } catch (err) {
          return rejected(err);
        }
        if (isReadableStreamLocked(stream)) return rejected(new TypeError('Cannot pipe a ReadableStream that is locked to a reader'));
        if (isWritableStreamLocked(dest)) return rejected(new TypeError('Cannot pipe to a WritableStream that is locked to a writer'));
        return readableStreamPipeTo(stream, dest, opts.preventClose, opts.preventAbort, opts.preventCancel, opts.signal);
      }
      tee() {
        return readableStreamTee(this.#s, null).map(readableApi);
      }
      values(options = undefined) {
        const stream = this.#s;
        const preventCancel = Boolean(dictionary(options, 'values options').preventCancel);
        const reader = acquireReader(stream);
        const it = Object.create(ReadableStreamAsyncIteratorPrototype);
        iteratorState.set(it, { reader, preventCancel, ongoing: undefined, finished: false });
        return it;
      }
    }
    Object.defineProperty(ReadableStream.prototype, Symbol.asyncIterator, {
      value: ReadableStream.prototype.values,
      writable: true,
      configurable: true,
    });

    function pipeOptions(options) {
      const opts = dictionary(options, 'pipe options');
      const signal = opts.signal;
      if (signal !== undefined) {
        const isSignal = abortClasses ? signal instanceof abortClasses().AbortSignal : isObject(signal) && 'aborted' in signal;
        if (!isSignal) throw new TypeError('pipe options: signal must be an AbortSignal');
      }
      return {
        preventAbort: Boolean(opts.preventAbort),
        preventCancel: Boolean(opts.preventCancel),
        preventClose: Boolean(opts.preventClose),
        signal,
      };
    }

    class ReadableStreamDefaultReader {
      #r;
      constructor(stream) {
        const record = readableRecord(stream);
        if (!record) throw new TypeError('ReadableStreamDefaultReader needs a ReadableStream');
        this.#r = acquireReader(record);
        this.#r.api = this;
      }
      static {
        readerRecord = (o) => (isObject(o) && #r in o ? o.#r : undefined);
      }
      get closed() {
        const reader = readerRecord(this);
        if (!reader) return rejected(new TypeError('not a ReadableStreamDefaultReader'));
        return reader.closed.promise;
      }
      read() {
        const reader = readerRecord(this);
        if (!reader) return rejected(new TypeError('not a ReadableStreamDefaultReader'));
        if (reader.stream === undefined) return rejected(new TypeError('Cannot read from a released reader'));
        return readerReadPromise(reader);
      }
      releaseLock() {
        const reader = this.#r;
        if (reader.stream === undefined) return;
        readerRelease(reader);
      }
      cancel(reason = undefined) {
        const reader = readerRecord(this);
        if (!reader) return rejected(new TypeError('not a ReadableStreamDefaultReader'));
        if (reader.stream === undefined) return rejected(new TypeError('Cannot cancel through a released reader'));
        return readerGenericCancel(reader, reason);
      }
    }

    class ReadableStreamDefaultController {
      #c;
      constructor(key, record) {
        if (key !== INTERNAL) throw illegal('ReadableStreamDefaultController');
        this.#c = record;
        record.api = this;
      }
      get desiredSize() {
        return readableControllerGetDesiredSize(this.#c);
      }
      close() {
        const controller = this.#c;
        if (!readableControllerCanCloseOrEnqueue(controller)) throw new TypeError('The stream is not in a state that permits close');
        readableControllerClose(controller);
      }
      enqueue(chunk = undefined) {
        const controller = this.#c;
        if (!readableControllerCanCloseOrEnqueue(controller)) throw new TypeError('The stream is not in a state that permits enqueue');
        if (controller.bytes) {
          if (!ArrayBuffer.isView(chunk)) throw new TypeError('a byte stream takes ArrayBuffer views (such as Uint8Array) as chunks');
          if (chunk.byteLength === 0) throw new TypeError('a byte stream chunk cannot be empty');
          if (!(chunk instanceof Uint8Array)) chunk = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        }
        readableControllerEnqueue(controller, chunk);
      }
      error(e = undefined) {
        readableControllerError(this.#c, e);
      }
    }

    // ══ Writable streams ═══════════════════════════════════════════════════════════════════════════

    const CLOSE_SENTINEL = Object.freeze({});
    let writableRecord;
    let writerRecord;

    function newWritableRecord() {
      return {
        state: 'writable',
        storedError: undefined,
        writer: undefined,
        controller: undefined,
        inFlightWriteRequest: undefined,
        closeRequest: undefined,
        inFlightCloseRequest: undefined,
        pendingAbortRequest: undefined,
        writeRequests: [],
        backpressure: false,
        api: undefined,
      };
    }
    function writableApi(stream) {
      if (stream.api === undefined) new WritableStream(INTERNAL, stream);
      return stream.api;
    }
    function writableControllerApi(controller) {
      if (controller.api === undefined) new WritableStreamDefaultController(INTERNAL, controller);
      return controller.api;
    }

    function createWritableStream(startAlgorithm, writeAlgorithm, closeAlgorithm, abortAlgorithm, highWaterMark, sizeAlgorithm) {
      const stream = newWritableRecord();
      setUpWritableStreamDefaultController(stream, {}, startAlgorithm, writeAlgorithm, closeAlgorithm, abortAlgorithm, highWaterMark, sizeAlgorithm);
      return stream;
    }

    const isWritableStreamLocked = (stream) => stream.writer !== undefined;

    function writableStreamAbort(stream, reason) {
      if (stream.state === 'closed' || stream.state === 'errored') return resolved(undefined);
      writableControllerSignalAbort(stream.controller, reason);
      // Abort listeners may have errored or closed the stream meanwhile.
      const state = stream.state;
      if (state === 'closed' || state === 'errored') return resolved(undefined);
      if (stream.pendingAbortRequest !== undefined) return stream.pendingAbortRequest.promise.promise;
      let wasAlreadyErroring = false;
      if (state === 'erroring') {
        wasAlreadyErroring = true;
        reason = undefined;
      }
      const promise = deferred();
      stream.pendingAbortRequest = { promise, reason, wasAlreadyErroring };
      if (!wasAlreadyErroring) writableStreamStartErroring(stream, reason);
      return promise.promise;
    }

    function writableStreamClose(stream) {
      const state = stream.state;
      if (state === 'closed' || state === 'errored') return rejected(new TypeError(`Cannot close a WritableStream that is ${state}`));
      const promise = deferred();
      stream.closeRequest = promise;
      const writer = stream.writer;
      if (writer !== undefined && stream.backpressure && state === 'writable') writer.ready.resolve(undefined);
      enqueueValueWithSize(stream.controller, CLOSE_SENTINEL, 0);
      writableControllerAdvanceQueueIfNeeded(stream.controller);
      return promise.promise;
    }

    function writableStreamDealWithRejection(stream, error) {
      if (stream.state === 'writable') writableStreamStartErroring(stream, error);
      else writableStreamFinishErroring(stream);
    }

    function writableStreamStartErroring(stream, reason) {
      const controller = stream.controller;
      stream.state = 'erroring';
      stream.storedError = reason;
      if (stream.writer !== undefined) writerEnsureReadyPromiseRejected(stream.writer, reason);
      if (!writableStreamHasOperationMarkedInFlight(stream) && controller.started) writableStreamFinishErroring(stream);
    }

    function writableStreamFinishErroring(stream) {
      stream.state = 'errored';
      resetQueue(stream.controller);
      const storedError = stream.storedError;
      for (const request of stream.writeRequests) request.reject(storedError);
      stream.writeRequests = [];
      const abortRequest = stream.pendingAbortRequest;
      if (abortRequest === undefined) {
        writableStreamRejectCloseAndClosedPromiseIfNeeded(stream);
        return;
      }
      stream.pendingAbortRequest = undefined;
      if (abortRequest.wasAlreadyErroring) {
        abortRequest.promise.reject(storedError);
        writableStreamRejectCloseAndClosedPromiseIfNeeded(stream);
        return;
      }
      const controller = stream.controller;
      const abortPromise = controller.abortAlgorithm ? controller.abortAlgorithm(abortRequest.reason) : resolved(undefined);
      writableControllerClearAlgorithms(controller);
      upon(
        abortPromise,
        () => {
          abortRequest.promise.resolve(undefined);
          writableStreamRejectCloseAndClosedPromiseIfNeeded(stream);
        },
        (reason) => {
          abortRequest.promise.reject(reason);
          writableStreamRejectCloseAndClosedPromiseIfNeeded(stream);
        },
      );
    }

    function writableStreamFinishInFlightWrite(stream) {
      stream.inFlightWriteRequest.resolve(undefined);
      stream.inFlightWriteRequest = undefined;
    }

    function writableStreamFinishInFlightWriteWithError(stream, error) {
      stream.inFlightWriteRequest.reject(error);
      stream.inFlightWriteRequest = undefined;
      writableStreamDealWithRejection(stream, error);
    }

    function writableStreamFinishInFlightClose(stream) {
      stream.inFlightCloseRequest.resolve(undefined);
      stream.inFlightCloseRequest = undefined;
      if (stream.state === 'erroring') {
        stream.storedError = undefined;
        if (stream.pendingAbortRequest !== undefined) {
          stream.pendingAbortRequest.promise.resolve(undefined);
          stream.pendingAbortRequest = undefined;
        }
      }
      stream.state = 'closed';
      if (stream.writer !== undefined) stream.writer.closed.resolve(undefined);
    }

    function writableStreamFinishInFlightCloseWithError(stream, error) {
      stream.inFlightCloseRequest.reject(error);
      stream.inFlightCloseRequest = undefined;
      if (stream.pendingAbortRequest !== undefined) {
        stream.pendingAbortRequest.promise.reject(error);
        stream.pendingAbortRequest = undefined;
      }
      writableStreamDealWithRejection(stream, error);
    }

    const writableStreamCloseQueuedOrInFlight = (stream) => stream.closeRequest !== undefined || stream.inFlightCloseRequest !== undefined;
    const writableStreamHasOperationMarkedInFlight = (stream) => stream.inFlightWriteRequest !== undefined || stream.inFlightCloseRequest !== undefined;

    function writableStreamRejectCloseAndClosedPromiseIfNeeded(stream) {
      if (stream.closeRequest !== undefined) {
        stream.closeRequest.reject(stream.storedError);
        stream.closeRequest = undefined;
      }
      const writer = stream.writer;
      if (writer !== undefined) {
        setHandled(writer.closed.promise);
        writer.closed.reject(stream.storedError);
      }
    }

    function writableStreamUpdateBackpressure(stream, backpressure) {
      const writer = stream.writer;
      if (writer !== undefined && backpressure !== stream.backpressure) {
        if (backpressure) writer.ready = deferred();
        else writer.ready.resolve(undefined);
      }
      stream.backpressure = backpressure;
    }

    // ── Writer ──

    function acquireWriter(stream) {
      if (isWritableStreamLocked(stream)) throw new TypeError('This WritableStream is locked to a writer');
      const writer = { stream, ready: undefined, closed: undefined, api: undefined };
      stream.writer = writer;
      const state = stream.state;
      if (state === 'writable') {
        writer.ready = !writableStreamCloseQueuedOrInFlight(stream) && stream.backpressure ? deferred() : resolvedDeferred(undefined);
        writer.closed = deferred();
      } else if (state === 'erroring') {
        writer.ready = rejectedDeferred(stream.storedError);
        writer.closed = deferred();
      } else if (state === 'closed') {
        writer.ready = resolvedDeferred(undefined);
        writer.closed = resolvedDeferred(undefined);
      } else {
        writer.ready = rejectedDeferred(stream.storedError);
        writer.closed = rejectedDeferred(stream.storedError);
      }
      return writer;
    }

    function writerCloseWithErrorPropagation(writer) {
      const stream = writer.stream;
      if (writableStreamCloseQueuedOrInFlight(stream) || stream.state === 'closed') return resolved(undefined);
      if (stream.state === 'errored') return rejected(stream.storedError);
      return writableStreamClose(stream);
    }

    function writerEnsureClosedPromiseRejected(writer, error) {
      if (!writer.closed.settled) writer.closed.reject(error);
      else writer.closed = rejectedDeferred(error);
      setHandled(writer.closed.promise);
    }

    function writerEnsureReadyPromiseRejected(writer, error) {
      if (!writer.ready.settled) writer.ready.reject(error);
      else writer.ready = rejectedDeferred(error);
      setHandled(writer.ready.promise);
    }

    function writerGetDesiredSize(writer) {
      const state = writer.stream.state;
      if (state === 'errored' || state === 'erroring') return null;
      if (state === 'closed') return 0;
      return writableControllerGetDesiredSize(writer.stream.controller);
    }

    function writerRelease(writer) {
      const released = new TypeError('the writer was released');
      writerEnsureReadyPromiseRejected(writer, released);
      writerEnsureClosedPromiseRejected(writer, released);
      writer.stream.writer = undefined;
      writer.stream = undefined;
    }

    function writerWrite(writer, chunk) {
      const stream = writer.stream;
      const controller = stream.controller;
      const chunkSize = writableControllerGetChunkSize(controller, chunk);
      if (stream !== writer.stream) return rejected(new TypeError('the writer was released while sizing the chunk'));
      const state = stream.state;
      if (state === 'errored') return rejected(stream.storedError);
      if (writableStreamCloseQueuedOrInFlight(stream) || state === 'closed') {
        return rejected(new TypeError('Cannot write to a WritableStream that is closing or closed'));
      }
      if (state === 'erroring') return rejected(stream.storedError);
      const promise = deferred();
      stream.writeRequests.push(promise);
      writableControllerWrite(controller, chunk, chunkSize);
      return promise.promise;
    }

    // ── Default controller ──

    function setUpWritableStreamDefaultController(stream, controller, startAlgorithm, writeAlgorithm, closeAlgorithm, abortAlgorithm, highWaterMark, sizeAlgorithm) {
      controller.stream = stream;
      controller.api = undefined;
      stream.controller = controller;
      resetQueue(controller);
      // The AbortSignal is made only if someone reads controller.signal; an abort before that is kept.
      controller.abortController = undefined;
      controller.aborted = false;
      controller.abortReason = undefined;
      controller.started = false;
      controller.strategySizeAlgorithm = sizeAlgorithm;
      controller.strategyHWM = highWaterMark;
      controller.writeAlgorithm = writeAlgorithm;
      controller.closeAlgorithm = closeAlgorithm;
      controller.abortAlgorithm = abortAlgorithm;
      writableStreamUpdateBackpressure(stream, writableControllerGetBackpressure(controller));
      const startResult = startAlgorithm();
      upon(
        resolved(startResult),
        () => {
          controller.started = true;
          writableControllerAdvanceQueueIfNeeded(controller);
        },
        (r) => {
          controller.started = true;
          writableStreamDealWithRejection(stream, r);
        },
      );
    }

    function setUpFromUnderlyingSink(stream, sink, dict, highWaterMark, sizeAlgorithm) {
      const controller = {};
      const start = callbackMember(dict, 'start', 'WritableStream sink');
      const write = callbackMember(dict, 'write', 'WritableStream sink');
      const close = callbackMember(dict, 'close', 'WritableStream sink');
      const abort = callbackMember(dict, 'abort', 'WritableStream sink');
      setUpWritableStreamDefaultController(
        stream,
        controller,
        () => (start ? start.call(sink, writableControllerApi(controller)) : undefined),
        write ? (chunk) => promiseCall(write, sink, [chunk, writableControllerApi(controller)]) : () => resolved(undefined),
        close ? () => promiseCall(close, sink, []) : () => resolved(undefined),
        abort ? (reason) => promiseCall(abort, sink, [reason]) : () => resolved(undefined),
        highWaterMark,
        sizeAlgorithm,
      );
    }

    function writableControllerSignalAbort(controller, reason) {
      if (controller.aborted) return;
      controller.aborted = true;
      controller.abortReason = reason;
      if (controller.abortController !== undefined) controller.abortController.abort(reason);
    }

    function writableControllerSignal(controller) {
      if (controller.abortController === undefined) {
        if (!abortClasses) throw new TypeError('AbortController is not available');
        controller.abortController = new (abortClasses().AbortController)();
        if (controller.aborted) controller.abortController.abort(controller.abortReason);
      }
      return controller.abortController.signal;
    }

    function writableControllerAdvanceQueueIfNeeded(controller) {
      const stream = controller.stream;
      if (!controller.started || stream.inFlightWriteRequest !== undefined) return;
      if (stream.state === 'erroring') {
        writableStreamFinishErroring(stream);
        return;
      }
      if (queueLength(controller) === 0) return;
      const value = peekQueueValue(controller);
      if (value === CLOSE_SENTINEL) writableControllerProcessClose(controller);
      else writableControllerProcessWrite(controller, value);
    }

    function writableControllerClearAlgorithms(controller) {
      controller.writeAlgorithm = undefined;
      controller.closeAlgorithm = undefined;
      controller.abortAlgorithm = undefined;
      controller.strategySizeAlgorithm = undefined;
    }

    function writableControllerError(controller, error) {
      writableControllerClearAlgorithms(controller);
      writableStreamStartErroring(controller.stream, error);
    }

    function writableControllerErrorIfNeeded(controller, error) {
      if (controller.stream.state === 'writable') writableControllerError(controller, error);
    }

    const writableControllerGetBackpressure = (controller) => writableControllerGetDesiredSize(controller) <= 0;

    function writableControllerGetChunkSize(controller, chunk) {
      if (controller.strategySizeAlgorithm === undefined) return 1;
      try {
        return controller.strategySizeAlgorithm(chunk);
      } catch (err) {
        writableControllerErrorIfNeeded(controller, err);
        return 1;
      }
    }

    const writableControllerGetDesiredSize = (controller) => controller.strategyHWM - controller.queueTotalSize;

    function writableControllerProcessClose(controller) {
      const stream = controller.stream;
      stream.inFlightCloseRequest = stream.closeRequest;
      stream.closeRequest = undefined;
      dequeueValue(controller);
      const sinkClosePromise = controller.closeAlgorithm();
      writableControllerClearAlgorithms(controller);
      upon(
        sinkClosePromise,
        () => writableStreamFinishInFlightClose(stream),
        (reason) => writableStreamFinishInFlightCloseWithError(stream, reason),
      );
    }

    function writableControllerProcessWrite(controller, chunk) {
      const stream = controller.stream;
      stream.inFlightWriteRequest = stream.writeRequests.shift();
      upon(
        controller.writeAlgorithm(chunk),
        () => {
          writableStreamFinishInFlightWrite(stream);
          const state = stream.state;
          dequeueValue(controller);
          if (!writableStreamCloseQueuedOrInFlight(stream) && state === 'writable') {
            writableStreamUpdateBackpressure(stream, writableControllerGetBackpressure(controller));
          }
          writableControllerAdvanceQueueIfNeeded(controller);
        },
        (reason) => {
          if (stream.state === 'writable') writableControllerClearAlgorithms(controller);
          writableStreamFinishInFlightWriteWithError(stream, reason);
        },
      );
    }

    function writableControllerWrite(controller, chunk, chunkSize) {
      try {
        enqueueValueWithSize(controller, chunk, chunkSize);
      } catch (err) {
        writableControllerErrorIfNeeded(controller, err);
        return;
      }
      const stream = controller.stream;
      if (!writableStreamCloseQueuedOrInFlight(stream) && stream.state === 'writable') {
        writableStreamUpdateBackpressure(stream, writableControllerGetBackpressure(controller));
      }
      writableControllerAdvanceQueueIfNeeded(controller);
    }

    // ── Public classes ──

    class WritableStream {
      #s;
      constructor(underlyingSink = undefined, strategy = undefined) {
        if (underlyingSink === INTERNAL) {
          this.#s = strategy;
          strategy.api = this;
          return;
        }
        const sink = dictionary(underlyingSink, 'WritableStream underlying sink');
        const strat = dictionary(strategy, 'WritableStream strategy');
        if (sink.type !== undefined) throw new RangeError('WritableStream sink type must be left out');
        this.#s = newWritableRecord();
        this.#s.api = this;
        setUpFromUnderlyingSink(this.#s, underlyingSink, sink, extractHighWaterMark(strat, 1), extractSizeAlgorithm(strat));
      }
      static {
        writableRecord = (o) => (isObject(o) && #s in o ? o.#s : undefined);
      }
      get locked() {
        return isWritableStreamLocked(this.#s);
      }
      abort(reason = undefined) {
        const stream = writableRecord(this);
        if (!stream) return rejected(new TypeError('abort called on something that is not a WritableStream'));
        if (isWritableStreamLocked(stream)) return rejected(new TypeError('Cannot abort a WritableStream that is locked to a writer'));
        return writableStreamAbort(stream, reason);
      }
      close() {
        const stream = writableRecord(this);
        if (!stream) return rejected(new TypeError('close called on something that is not a WritableStream'));
        if (isWritableStreamLocked(stream)) return rejected(new TypeError('Cannot close a WritableStream that is locked to a writer'));
        if (writableStreamCloseQueuedOrInFlight(stream)) return rejected(new TypeError('Cannot close a WritableStream that is already closing'));
        return writableStreamClose(stream);
      }
      getWriter() {
        return new WritableStreamDefaultWriter(this);
      }
    }

    class WritableStreamDefaultWriter {
      #w;
      constructor(stream) {
        const record = writableRecord(stream);
        if (!record) throw new TypeError('WritableStreamDefaultWriter needs a WritableStream');
        this.#w = acquireWriter(record);
        this.#w.api = this;
      }
      static {
        writerRecord = (o) => (isObject(o) && #w in o ? o.#w : undefined);
      }
      get closed() {
        const writer = writerRecord(this);
        if (!writer) return rejected(new TypeError('not a WritableStreamDefaultWriter'));
        return writer.closed.promise;
      }
      get desiredSize() {
        const writer = this.#w;
        if (writer.stream === undefined) throw new TypeError('the writer was released');
        return writerGetDesiredSize(writer);
      }
      get ready() {
        const writer = writerRecord(this);
        if (!writer) return rejected(new TypeError('not a WritableStreamDefaultWriter'));
        return writer.ready.promise;
      }
      abort(reason = undefined) {
        const writer = writerRecord(this);
        if (!writer) return rejected(new TypeError('not a WritableStreamDefaultWriter'));
        if (writer.stream === undefined) return rejected(new TypeError('Cannot abort through a released writer'));
        return writableStreamAbort(writer.stream, reason);
      }
      close() {
        const writer = writerRecord(this);
        if (!writer) return rejected(new TypeError('not a WritableStreamDefaultWriter'));
        const stream = writer.stream;
        if (stream === undefined) return rejected(new TypeError('Cannot close through a released writer'));
        if (writableStreamCloseQueuedOrInFlight(stream)) return rejected(new TypeError('Cannot close a WritableStream that is already closing'));
        return writableStreamClose(stream);
      }
      releaseLock() {
        const writer = this.#w;
        if (writer.stream === undefined) return;
        writerRelease(writer);
      }
      write(chunk = undefined) {
        const writer = writerRecord(this);
        if (!writer) return rejected(new TypeError('not a WritableStreamDefaultWriter'));
        if (writer.stream === undefined) return rejected(new TypeError('Cannot write through a released writer'));
        return writerWrite(writer, chunk);
      }
    }

    class WritableStreamDefaultController {
      #c;
      constructor(key, record) {
        if (key !== INTERNAL) throw illegal('WritableStreamDefaultController');
        this.#c = record;
        record.api = this;
      }
      get signal() {
        return writableControllerSignal(this.#c);
      }
      error(e = undefined) {
        const controller = this.#c;
        if (controller.stream.state !== 'writable') return;
        writableControllerError(controller, e);
      }
    }

    // ══ Transform streams ══════════════════════════════════════════════════════════════════════════

    let transformRecord;

    function initializeTransformStream(stream, startPromise, writableHWM, writableSize, readableHWM, readableSize) {
      const startAlgorithm = () => startPromise.promise;
      stream.writable = createWritableStream(
        startAlgorithm,
        (chunk) => transformSinkWrite(stream, chunk),
        () => transformSinkClose(stream),
        (reason) => transformSinkAbort(stream, reason),
        writableHWM,
        writableSize,
      );
      stream.readable = createReadableStream(
        startAlgorithm,
        () => transformSourcePull(stream),
        (reason) => transformSourceCancel(stream, reason),
        readableHWM,
        readableSize,
      );
      stream.backpressure = undefined;
      stream.backpressureChangePromise = undefined;
      transformSetBackpressure(stream, true);
      stream.controller = undefined;
    }

    function transformStreamError(stream, e) {
      readableControllerError(stream.readable.controller, e);
      transformErrorWritableAndUnblockWrite(stream, e);
    }

    function transformErrorWritableAndUnblockWrite(stream, e) {
      transformControllerClearAlgorithms(stream.controller);
      writableControllerErrorIfNeeded(stream.writable.controller, e);
      if (stream.backpressure) transformSetBackpressure(stream, false);
    }

    function transformSetBackpressure(stream, backpressure) {
      if (stream.backpressureChangePromise !== undefined) stream.backpressureChangePromise.resolve(undefined);
      stream.backpressureChangePromise = deferred();
      stream.backpressure = backpressure;
    }

    function transformControllerApi(controller) {
      if (controller.api === undefined) new TransformStreamDefaultController(INTERNAL, controller);
      return controller.api;
    }

    function setUpTransformStreamDefaultController(stream, controller, transformAlgorithm, flushAlgorithm, cancelAlgorithm) {
      controller.stream = stream;
      controller.api = undefined;
      stream.controller = controller;
      controller.transformAlgorithm = transformAlgorithm;
      controller.flushAlgorithm = flushAlgorithm;
      controller.cancelAlgorithm = cancelAlgorithm;
      controller.finishPromise = undefined;
    }

    function setUpFromTransformer(stream, transformer, dict) {
      const controller = {};
      const transform = callbackMember(dict, 'transform', 'TransformStream transformer');
      const flush = callbackMember(dict, 'flush', 'TransformStream transformer');
      const cancel = callbackMember(dict, 'cancel', 'TransformStream transformer');
      setUpTransformStreamDefaultController(
        stream,
        controller,
        transform
          ? (chunk) => promiseCall(transform, transformer, [chunk, transformControllerApi(controller)])
          : (chunk) => {
              try {
                transformControllerEnqueue(controller, chunk);
                return resolved(undefined);
              } catch (err) {
                return rejected(err);
              }
            },
        flush ? () => promiseCall(flush, transformer, [transformControllerApi(controller)]) : () => resolved(undefined),
        cancel ? (reason) => promiseCall(cancel, transformer, [reason]) : () => resolved(undefined),
      );
      return controller;
    }

    function transformControllerClearAlgorithms(controller) {
      controller.transformAlgorithm = undefined;
      controller.flushAlgorithm = undefined;
      controller.cancelAlgorithm = undefined;
    }

    function transformControllerEnqueue(controller, chunk) {
      const stream = controller.stream;
      const readableController = stream.readable.controller;
      if (!readableControllerCanCloseOrEnqueue(readableController)) throw new TypeError('The readable side is not in a state that permits enqueue');
      try {
        readableControllerEnqueue(readableController, chunk);
      } catch (err) {
        transformErrorWritableAndUnblockWrite(stream, err);
        throw stream.readable.storedError;
      }
      const backpressure = readableControllerHasBackpressure(readableController);
      if (backpressure !== stream.backpressure) transformSetBackpressure(stream, true);
    }

    function transformControllerTerminate(controller) {
      const stream = controller.stream;
      readableControllerClose(stream.readable.controller);
      transformErrorWritableAndUnblockWrite(stream, new TypeError('the TransformStream was terminated'));
    }

    function transformPerform(controller, chunk) {
      const transformPromise = controller.transformAlgorithm ? controller.transformAlgorithm(chunk) : resolved(undefined);
      return upon(transformPromise, undefined, (r) => {
        transformStreamError(controller.stream, r);
        throw r;
      });
    }

    function transformSinkWrite(stream, chunk) {
      const controller = stream.controller;
      if (stream.backpressure) {
        return upon(stream.backpressureChangePromise.promise, () => {
          const writable = stream.writable;
          if (writable.state === 'erroring') throw writable.storedError;
          return transformPerform(controller, chunk);
        });
      }
      return transformPerform(controller, chunk);
    }

    function transformSinkAbort(stream, reason) {
      const controller = stream.controller;
      if (controller.finishPromise !== undefined) return controller.finishPromise.promise;
      const readable = stream.readable;
      controller.finishPromise = deferred();
      const cancelPromise = controller.cancelAlgorithm ? controller.cancelAlgorithm(reason) : resolved(undefined);
      transformControllerClearAlgorithms(controller);
      upon(
        cancelPromise,
        () => {
          if (readable.state === 'errored') controller.finishPromise.reject(readable.storedError);
          else {
            readableControllerError(readable.controller, reason);
            controller.finishPromise.resolve(undefined);
          }
        },
        (r) => {
          readableControllerError(readable.controller, r);
          controller.finishPromise.reject(r);
        },
      );
      return controller.finishPromise.promise;
    }

    function transformSinkClose(stream) {
      const controller = stream.controller;
      if (controller.finishPromise !== undefined) return controller.finishPromise.promise;
      const readable = stream.readable;
      controller.finishPromise = deferred();
      const flushPromise = controller.flushAlgorithm ? controller.flushAlgorithm() : resolved(undefined);
      transformControllerClearAlgorithms(controller);
      upon(
        flushPromise,
        () => {
          if (readable.state === 'errored') controller.finishPromise.reject(readable.storedError);
          else {
            readableControllerClose(readable.controller);
            controller.finishPromise.resolve(undefined);
          }
        },
        (r) => {
          readableControllerError(readable.controller, r);
          controller.finishPromise.reject(r);
        },
      );
      return controller.finishPromise.promise;
    }

    function transformSourcePull(stream) {
      transformSetBackpressure(stream, false);
      return stream.backpressureChangePromise.promise;
    }

    function transformSourceCancel(stream, reason) {
      const controller = stream.controller;
      if (controller.finishPromise !== undefined) return controller.finishPromise.promise;
      const writable = stream.writable;
      controller.finishPromise = deferred();
      const cancelPromise = controller.cancelAlgorithm ? controller.cancelAlgorithm(reason) : resolved(undefined);
      transformControllerClearAlgorithms(controller);
      upon(
        cancelPromise,
        () => {
          if (writable.state === 'errored') controller.finishPromise.reject(writable.storedError);
          else {
            writableControllerErrorIfNeeded(writable.controller, reason);
            if (stream.backpressure) transformSetBackpressure(stream, false);
            controller.finishPromise.resolve(undefined);
          }
        },
        (r) => {
          writableControllerErrorIfNeeded(writable.controller, r);
          if (stream.backpressure) transformSetBackpressure(stream, false);
          controller.finishPromise.reject(r);
        },
      );
      return controller.finishPromise.promise;
    }

    class TransformStream {
      #s;
      constructor(transformer = undefined, writableStrategy = undefined, readableStrategy = undefined) {
        const dict = dictionary(transformer, 'TransformStream transformer');
        const writableStrat = dictionary(writableStrategy, 'TransformStream writable strategy');
        const readableStrat = dictionary(readableStrategy, 'TransformStream readable strategy');
        if (dict.readableType !== undefined) throw new RangeError('TransformStream readableType must be left out');
        if (dict.writableType !== undefined) throw new RangeError('TransformStream writableType must be left out');
        const readableHWM = extractHighWaterMark(readableStrat, 0);
        const readableSize = extractSizeAlgorithm(readableStrat);
        const writableHWM = extractHighWaterMark(writableStrat, 1);
        const writableSize = extractSizeAlgorithm(writableStrat);
        const start = callbackMember(dict, 'start', 'TransformStream transformer');
        const startPromise = deferred();
        const stream = { readable: undefined, writable: undefined, backpressure: undefined, backpressureChangePromise: undefined, controller: undefined };
        this.#s = stream;
        initializeTransformStream(stream, startPromise, writableHWM, writableSize, readableHWM, readableSize);
        const controller = setUpFromTransformer(stream, transformer, dict);
        startPromise.resolve(start ? start.call(transformer, transformControllerApi(controller)) : undefined);
      }
      static {
        transformRecord = (o) => (isObject(o) && #s in o ? o.#s : undefined);
      }
      get readable() {
        return readableApi(this.#s.readable);
      }
      get writable() {
        return writableApi(this.#s.writable);
      }
    }

    class TransformStreamDefaultController {
      #c;
      constructor(key, record) {
        if (key !== INTERNAL) throw illegal('TransformStreamDefaultController');
        this.#c = record;
        record.api = this;
      }
      get desiredSize() {
        return readableControllerGetDesiredSize(this.#c.stream.readable.controller);
      }
      enqueue(chunk = undefined) {
        transformControllerEnqueue(this.#c, chunk);
      }
      error(reason = undefined) {
        transformStreamError(this.#c.stream, reason);
      }
      terminate() {
        transformControllerTerminate(this.#c);
      }
    }

    // ══ Queuing strategies ═════════════════════════════════════════════════════════════════════════

    // One size function per realm, as the spec requires (strategy.size === other.size).
    const byteLengthSize = function size(chunk) {
      return chunk.byteLength;
    };
    const countSize = function size() {
      return 1;
    };
    function strategyHighWaterMark(init, name) {
      if (!isObject(init) || init.highWaterMark === undefined) throw new TypeError(`${name} needs { highWaterMark }`);
      return Number(init.highWaterMark);
    }

    class ByteLengthQueuingStrategy {
      #hwm;
      constructor(init) {
        this.#hwm = strategyHighWaterMark(init, 'ByteLengthQueuingStrategy');
      }
      get highWaterMark() {
        return this.#hwm;
      }
      get size() {
        return byteLengthSize;
      }
    }

    class CountQueuingStrategy {
      #hwm;
      constructor(init) {
        this.#hwm = strategyHighWaterMark(init, 'CountQueuingStrategy');
      }
      get highWaterMark() {
        return this.#hwm;
      }
      get size() {
        return countSize;
      }
    }

    // ══ Hooks for the core (prelude.js) ════════════════════════════════════════════════════════════

    // Reads a stream of Uint8Array chunks to its end. Chunks already queued are taken synchronously
    // (read requests run their steps at once when data is waiting), so a body made from bytes costs no
    // promise turn per chunk. The reader is kept, as the Fetch spec's "fully read" does: the stream
    // stays locked and disturbed afterwards.
    function readAllBytes(stream, maxBytes, tooLarge) {
      return new NativePromise((resolve, reject) => {
        const reader = acquireReader(stream);
        const chunks = [];
        let total = 0;
        let finished = false;
        let pumping = false;
        let again = false;
        const fail = (err) => {
          finished = true;
          setHandled(readerGenericCancel(reader, err));
          reject(err);
        };
        const request = {
          chunk(chunk) {
            if (!(chunk instanceof Uint8Array)) return fail(new TypeError('a body stream must produce Uint8Array chunks'));
            total += chunk.byteLength;
            if (total > maxBytes) return fail(tooLarge(maxBytes));
            chunks.push(chunk);
            pump();
          },
          close() {
            finished = true;
            if (chunks.length === 1) return resolve(chunks[0]);
            const out = new Uint8Array(total);
            let offset = 0;
            for (const c of chunks) {
              out.set(c, offset);
              offset += c.byteLength;
            }
            resolve(out);
          },
          error(e) {
            finished = true;
            reject(e);
          },
        };
        // A loop, not recursion: a long run of queued chunks would otherwise grow the stack.
        const pump = () => {
          if (pumping) {
            again = true;
            return;
          }
          pumping = true;
          do {
            again = false;
            readerRead(reader, request);
          } while (again && !finished);
          pumping = false;
        };
        pump();
      });
    }

    const copyBytes = (chunk) => (chunk instanceof Uint8Array ? chunk.slice() : chunk);

    const hooks = {
      isReadableStream: (o) => readableRecord(o) !== undefined,
      isDisturbed: (o) => readableRecord(o).disturbed,
      isLocked: (o) => isReadableStreamLocked(readableRecord(o)),
      // A stream holding `bytes` as one chunk, already closed: what a buffered body looks like as a stream.
      fromBytes(bytes) {
        const stream = createReadableStream(noop, () => resolved(undefined), () => resolved(undefined), 0);
        if (bytes.byteLength > 0) readableControllerEnqueue(stream.controller, bytes);
        readableControllerClose(stream.controller);
        return readableApi(stream);
      },
      readAllBytes: (o, maxBytes, tooLarge) => readAllBytes(readableRecord(o), maxBytes, tooLarge),
      // The second branch gets copies, so a consumer mutating its chunks cannot reach the other's.
      tee: (o) => readableStreamTee(readableRecord(o), copyBytes).map(readableApi),
      // What the Fetch spec calls a proxy: a new stream fed from this one, which locks and disturbs it.
      proxy(o) {
        const identity = new TransformStream();
        const t = transformRecord(identity);
        setHandled(readableStreamPipeTo(readableRecord(o), t.writable, false, false, false, undefined));
        return readableApi(t.readable);
      },
    };

    const classes = {
      ReadableStream,
      ReadableStreamDefaultReader,
      ReadableStreamDefaultController,
      WritableStream,
      WritableStreamDefaultWriter,
      WritableStreamDefaultController,
      TransformStream,
      TransformStreamDefaultController,
      ByteLengthQueuingStrategy,
      CountQueuingStrategy,
    };
    for (const name of Object.keys(classes)) {
      Object.defineProperty(classes[name].prototype, Symbol.toStringTag, { value: name, configurable: true });
    }
    return { ...classes, ops: hooks };
  }
})();
