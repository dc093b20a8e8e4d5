// Error types and error bodies as Lambda's Node runtime (aws-lambda-ric
// Errors.js, XRayError.js) makes them.

import util from 'node:util';

function isErrorLike(o) {
  return (
    o && o.name && o.message && o.stack &&
    typeof o.name === 'string' && typeof o.message === 'string' && typeof o.stack === 'string'
  );
}

export function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

// The body of /invocation/{id}/error and /init/error:
// {errorType, errorMessage, trace:[stack lines]}; a thrown non-Error is
// {errorType: typeof value, errorMessage: String(value), trace: []}.
export function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: error.name?.replaceAll('\x7F', '%7F'),
        errorMessage: error.message?.replaceAll('\x7F', '%7F'),
        trace: error.stack.replaceAll('\x7F', '%7F').split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

function withEnumerableProperties(error) {
  if (error instanceof Error) {
    const ret = Object.assign({ errorType: error.name, errorMessage: error.message, code: error.code }, error);
    if (typeof error.stack == 'string') ret.stack = error.stack.split('\n');
    return ret;
  }
  return error;
}

// How text-format logs show an error: a tab, then JSON.
export function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

// The X-Ray cause the RIC sends with an invocation error.
export function xrayCause(err) {
  try {
    const stack = [];
    if (err && err.stack) {
      const lines = String(err.stack).replace(/\x7F/g, '%7F').split('\n');
      lines.shift();
      for (const stackLine of lines) {
        let line = stackLine.trim().replace(/\(|\)/g, '');
        line = line.substring(line.indexOf(' ') + 1);
        const label = line.lastIndexOf(' ') >= 0 ? line.slice(0, line.lastIndexOf(' ')) : null;
        let p = label == undefined || label.length === 0 ? line : line.slice(line.lastIndexOf(' ') + 1);
        p = p.split(':');
        stack.push({ path: p[0], line: parseInt(p[1]), label: label || 'anonymous' });
      }
    }
    return JSON.stringify({
      working_directory: process.cwd(),
      exceptions: [
        {
          type: err?.name?.replace(/\x7F/g, '%7F'),
          message: err?.message?.replace(/\x7F/g, '%7F'),
          stack,
        },
      ],
      paths: Array.from(new Set(stack.map((e) => e.path))),
    });
  } catch {
    return '';
  }
}

export class ImportModuleError extends Error {}
export class HandlerNotFound extends Error {}
export class MalformedHandlerName extends Error {}
export class UserCodeSyntaxError extends Error {}
export class MalformedStreamingHandler extends Error {}
export class InvalidStreamingOperation extends Error {}
export class NodeJsExit extends Error {
  constructor() {
    super(
      'The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly caused by a Promise that was never settled. For more information, see https://nodejs.org/docs/latest/api/process.html#exit-codes',
    );
  }
}
export class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}

for (const e of [
  ImportModuleError,
  HandlerNotFound,
  MalformedHandlerName,
  UserCodeSyntaxError,
  MalformedStreamingHandler,
  InvalidStreamingOperation,
  NodeJsExit,
  UnhandledPromiseRejection,
]) {
  e.prototype.name = `Runtime.${e.name}`;
}
