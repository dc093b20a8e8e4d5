// Response streaming as Lambda's Node runtime offers it (aws-lambda-ric
// UserFunction.js, StreamingContext.js, ResponseStream.js,
// HttpResponseStream.js): awslambda.streamifyResponse(handler) marks a
// handler (event, responseStream, context); its writes go to the Runtime API
// as one chunked POST with Lambda-Runtime-Function-Response-Mode: streaming,
// and an error after the first byte travels in the trailers.

import http from 'node:http';
import net from 'node:net';
import {
  InvalidStreamingOperation,
  MalformedStreamingHandler,
  toRapidResponse,
} from './errors.mjs';
import { structuredConsole } from './logpatch.mjs';

const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark');
const STREAM_RESPONSE = 'response';
const TRAILER_ERROR_TYPE = 'Lambda-Runtime-Function-Error-Type';
const TRAILER_ERROR_BODY = 'Lambda-Runtime-Function-Error-Body';

class HttpResponseStream {
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType('application/vnd.awslambda.http-integration-response');
    const metadataPrelude = JSON.stringify(prelude);
    underlyingStream._onBeforeFirstWrite = (write) => {
      write(metadataPrelude);
      write(new Uint8Array(8));
    };
    return underlyingStream;
  }
}

export function installGlobalAwsLambda() {
  const off = process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA;
  if (off === '1' || off === 'true') return;
  globalThis.awslambda = {
    streamifyResponse: (handler, options) => {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (typeof options?.highWaterMark === 'number') {
        handler[HANDLER_HIGHWATERMARK] = parseInt(options.highWaterMark);
      }
      return handler;
    },
    HttpResponseStream,
  };
}

export function isStreaming(handler) {
  const v = handler[HANDLER_STREAMING];
  if (v === undefined || v === null || v === false) return false;
  if (v === STREAM_RESPONSE) return STREAM_RESPONSE;
  throw new MalformedStreamingHandler('Only response streaming is supported.');
}

export function highWaterMark(handler) {
  const v = handler[HANDLER_HIGHWATERMARK];
  if (v === undefined || v === null || v === false) return undefined;
  const n = parseInt(v);
  return isNaN(n) ? undefined : n;
}

const failProps = new WeakMap();

// Only the Writable and EventEmitter surface of the request reaches the
// handler, as in the RIC.
function writableStreamOnly(inner) {
  const fns = [
    'cork', 'destroy', 'end', 'uncork', 'write',
    'addListener', 'emit', 'eventNames', 'getMaxListeners', 'listenerCount', 'listeners', 'off', 'on',
    'once', 'prependListener', 'prependOnceListener', 'rawListeners', 'removeAllListeners',
    'removeListener', 'setMaxListeners',
    'setContentType',
  ];
  const stream = Object.fromEntries(fns.map((fn) => [fn, inner[fn].bind(inner)]));
  for (const prop of ['destroyed', 'writable', '_onBeforeFirstWrite']) {
    Object.defineProperty(stream, prop, { get: () => inner[prop], set: (v) => (inner[prop] = v) });
  }
  for (const prop of [
    'writableFinished', 'writableObjectMode', 'writableBuffer', 'writableEnded', 'writableNeedDrain',
    'writableHighWaterMark', 'writableCorked', 'writableLength',
  ]) {
    Object.defineProperty(stream, prop, { get: () => inner[prop] });
  }
  return stream;
}

function createResponseStream(client, id, options) {
  let ready = true;
  let responseDoneResolve, responseDoneReject;
  const responseDone = new Promise((res, rej) => {
    responseDoneResolve = res;
    responseDoneReject = rej;
  });
  const agent = client.agent;
  agent.createConnection = (opts, cb) =>
    net.createConnection({ ...opts, highWaterMark: options?.highWaterMark }, cb);

  const req = http.request(
    {
      method: 'POST',
      hostname: client.hostname,
      port: client.port,
      path: `/2018-06-01/runtime/invocation/${encodeURIComponent(id)}/response`,
      headers: {
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        Trailer: [TRAILER_ERROR_TYPE, TRAILER_ERROR_BODY],
        'Content-Type': 'application/octet-stream',
      },
      agent,
    },
    (res) => {
      res.on('data', () => {});
      res.on('aborted', (err) => {
        responseDoneReject(err);
        req.destroy(err);
      });
      res.on('end', () => responseDoneResolve());
    },
  );
  req.on('error', (err) => {
    responseDoneReject(err);
    req.destroy(err);
  });
  responseDone.catch(() => {});

  const origEnd = req.end.bind(req);
  req.end = function (cb) {
    origEnd(cb);
  };
  req.setContentType = function (contentType) {
    if (!ready) throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    req.setHeader('Content-Type', contentType);
  };
  const origWrite = req.write.bind(req);
  req.write = function (chunk, encoding, callback) {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && chunk?.constructor !== Uint8Array) {
      chunk = JSON.stringify(chunk);
    }
    if (ready && typeof this._onBeforeFirstWrite === 'function') {
      this._onBeforeFirstWrite((ch) => origWrite(ch));
    }
    const ret = origWrite(chunk, encoding, callback);
    ready = false;
    return ret;
  };

  const request = writableStreamOnly(req);
  failProps.set(request, (err, callback) => {
    const error = toRapidResponse(err);
    req.addTrailers({
      [TRAILER_ERROR_TYPE]: String(error.errorType).replace(/[^\x20-\x7e]/g, '?'),
      [TRAILER_ERROR_BODY]: Buffer.from(JSON.stringify(error)).toString('base64'),
    });
    req.end(callback);
  });
  return { request, responseDone };
}

export function buildStreamingContext(client, id, scheduleNext, beforeExit, options) {
  let waitForEmptyEventLoop = true;
  const scheduleNextNow = () => {
    if (!waitForEmptyEventLoop) scheduleNext();
    else beforeExit.set(() => setImmediate(() => scheduleNext()));
  };
  let created = false;
  return {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(v) {
      waitForEmptyEventLoop = v;
    },
    createStream: () => {
      if (created) {
        throw new InvalidStreamingOperation('Cannot create stream for the same StreamingContext more than once.');
      }
      const { request: responseStream, responseDone } = createResponseStream(client, id, options);
      created = true;
      return {
        fail: (err, callback) => {
          structuredConsole.logError('Invoke Error', err);
          const fail = failProps.get(responseStream);
          if (typeof fail === 'function') fail(err, callback);
        },
        responseStream,
        rapidResponse: responseDone,
        scheduleNext: () => {
          beforeExit.reset();
          scheduleNextNow();
        },
      };
    },
  };
}
