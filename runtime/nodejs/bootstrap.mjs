// sluice's Node.js runtime: Lambda's Node.js handler contract over the Lambda
// Runtime API, with no npm dependencies.
//
//   AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 _HANDLER=index.handler \
//   LAMBDA_TASK_ROOT=/var/task node bootstrap.mjs [handler]
//
// Behaviour follows AWS's Node runtime interface client (aws-lambda-ric, the
// code Lambda's managed nodejs runtimes run): handler resolution and module
// loading (UserFunction.js), the context and callback contract
// (CallbackContext.js, InvokeContext.js, Runtime.js), error bodies
// (Errors.js), console patching (LogPatch.js). See docs/NODEJS.md.

import fs from 'node:fs';
import path from 'node:path';
import Module, { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { RuntimeClient } from './rapid.mjs';
import {
  HandlerNotFound,
  MalformedHandlerName,
  ImportModuleError,
  UserCodeSyntaxError,
  UnhandledPromiseRejection,
  NodeJsExit,
} from './errors.mjs';
import {
  patchConsole,
  structuredConsole,
  setCurrentRequestId,
  setCurrentTenantId,
} from './logpatch.mjs';
import { installGlobalAwsLambda, isStreaming, highWaterMark, buildStreamingContext } from './streaming.mjs';

const require = createRequire(import.meta.url);

// ---------------------------------------------------------------- loading

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;

// './a/b/module.nested.fn' -> ['./a/b/', 'module.nested.fn']
function moduleRootAndHandler(full) {
  const handlerString = path.basename(full);
  return [full.substring(0, full.indexOf(handlerString)), handlerString];
}

function splitHandlerString(handler) {
  const m = handler.match(FUNCTION_EXPR);
  if (!m || m.length !== 3) throw new MalformedHandlerName('Bad handler');
  return [m[1], m[2]];
}

function resolveHandler(object, nested) {
  return nested.split('.').reduce((o, key) => o && o[key], object);
}

function tryRequireFile(file, ext) {
  const p = file + (ext || '');
  return fs.existsSync(p) ? require(p) : undefined;
}

async function tryAwaitImport(file, ext) {
  const p = file + (ext || '');
  return fs.existsSync(p) ? await import(pathToFileURL(p).href) : undefined;
}

// Nearest package.json decides; a node_modules folder or / stops the walk.
function folderHasTypeModule(folder) {
  if (folder.endsWith('/node_modules')) return false;
  const pj = path.join(folder, 'package.json');
  if (fs.existsSync(pj)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(pj));
      if (pkg) return pkg.type === 'module';
    } catch (e) {
      console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
      return false;
    }
  }
  if (folder === '/') return false;
  return folderHasTypeModule(path.resolve(folder, '..'));
}

function hasPackageJsonTypeModule(file) {
  const js = file + '.js';
  return fs.existsSync(js) ? folderHasTypeModule(path.resolve(path.dirname(js))) : false;
}

// Lambda's order: extensionless (require), .js (require unless the nearest
// package.json says "type":"module", then import), .mjs (import), .cjs
// (require), then Node's own resolution from the task root.
async function tryRequire(appRoot, moduleRoot, module) {
  const lambdaStylePath = path.resolve(appRoot, moduleRoot, module);
  const extensionless = tryRequireFile(lambdaStylePath);
  if (extensionless) return extensionless;

  const pjHasModule = hasPackageJsonTypeModule(lambdaStylePath);
  if (!pjHasModule) {
    const loaded = tryRequireFile(lambdaStylePath, '.js');
    if (loaded) return loaded;
  }
  const loaded =
    (pjHasModule && (await tryAwaitImport(lambdaStylePath, '.js'))) ||
    (await tryAwaitImport(lambdaStylePath, '.mjs')) ||
    tryRequireFile(lambdaStylePath, '.cjs');
  if (loaded) return loaded;

  const nodeStylePath = require.resolve(module, { paths: [appRoot, moduleRoot] });
  return require(nodeStylePath);
}

async function loadUserApp(appRoot, moduleRoot, module) {
  installGlobalAwsLambda();
  try {
    return await tryRequire(appRoot, moduleRoot, module);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code !== undefined && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
}

async function loadHandler(appRoot, fullHandlerString) {
  if (fullHandlerString.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandlerString}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const [moduleRoot, moduleAndHandler] = moduleRootAndHandler(fullHandlerString);
  const [module, handlerPath] = splitHandlerString(moduleAndHandler);
  const userApp = await loadUserApp(appRoot, moduleRoot, module);
  const fn = resolveHandler(userApp, handlerPath);
  if (!fn) throw new HandlerNotFound(`${fullHandlerString} is undefined or not exported`);
  if (typeof fn !== 'function') throw new HandlerNotFound(`${fullHandlerString} is not a function`);
  return fn;
}

function isAsyncFunction(fn) {
  try {
    return !!(fn && typeof fn === 'function' && fn.constructor && fn.constructor.name === 'AsyncFunction');
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- beforeExit

// One listener slot, as the RIC keeps it: the callback contract completes an
// invocation when the event loop drains.
const LISTENER = Symbol.for('aws.lambda.beforeExit');
const NOOP = () => {};
const beforeExit = {
  invoke: () => global[LISTENER](),
  reset: () => (global[LISTENER] = NOOP),
  set: (fn) => (global[LISTENER] = fn),
};

// ---------------------------------------------------------------- context

function lowercaseKeys(h) {
  const out = {};
  for (const k of Object.keys(h)) out[k.toLowerCase()] = h[k];
  return out;
}

function parseJsonHeader(s, name) {
  if (s === undefined) return undefined;
  try {
    return JSON.parse(s);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

class InvokeContext {
  constructor(headers) {
    this.headers = lowercaseKeys(headers);
  }
  get invokeId() {
    const id = this.headers['lambda-runtime-aws-request-id'];
    if (!id) throw new Error('invocation id is missing or invalid');
    return id;
  }
  get tenantId() {
    return this.headers['lambda-runtime-aws-tenant-id'];
  }
  updateLoggingContext() {
    setCurrentRequestId(this.invokeId);
    setCurrentTenantId(this.tenantId);
  }
  attachEnvironmentData(ctx) {
    const trace = this.headers['lambda-runtime-trace-id'];
    if (trace) process.env._X_AMZN_TRACE_ID = trace;
    else delete process.env._X_AMZN_TRACE_ID;
    const deadline = Number(this.headers['lambda-runtime-deadline-ms']);
    return Object.assign(
      ctx,
      {
        functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
        functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
        memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
        logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
        logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
      },
      {
        clientContext: parseJsonHeader(this.headers['lambda-runtime-client-context'], 'ClientContext'),
        identity: parseJsonHeader(this.headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
        invokedFunctionArn: this.headers['lambda-runtime-invoked-function-arn'],
        awsRequestId: this.headers['lambda-runtime-aws-request-id'],
        tenantId: this.headers['lambda-runtime-aws-tenant-id'],
        getRemainingTimeInMillis: function () {
          return deadline - Date.now();
        },
      },
    );
  }
}

// callback, context.{done,succeed,fail,callbackWaitsForEmptyEventLoop}: only
// the first call of any of them counts.
function buildCallbackContext(client, id, scheduleNext) {
  const postError = (err, cb) => {
    structuredConsole.logError('Invoke Error', err);
    client.postInvocationError(err, id, cb);
  };
  let isCompleteInvoked = false;
  const complete = (result, cb) => {
    if (isCompleteInvoked) {
      console.error(
        'Invocation has already been reported as done. Cannot call complete more than once per invocation.',
      );
      return;
    }
    isCompleteInvoked = true;
    client.postInvocationResponse(result, id, cb);
  };
  let waitForEmptyEventLoop = true;

  const callback = function (err, result) {
    beforeExit.reset();
    if (err !== undefined && err !== null) {
      postError(err, scheduleNext);
    } else if (!waitForEmptyEventLoop) {
      complete(result, scheduleNext);
    } else {
      beforeExit.set(() => setImmediate(() => complete(result, scheduleNext)));
    }
  };
  const done = (err, result) => {
    beforeExit.reset();
    if (err !== undefined && err !== null) postError(err, scheduleNext);
    else complete(result, scheduleNext);
  };
  const succeed = (result) => done(null, result);
  const fail = (err) => (err === undefined || err === null ? done('handled') : done(err, null));

  let finished = false;
  const once = (fn) =>
    function () {
      if (!finished) {
        fn.apply(null, arguments);
        finished = true;
      }
    };
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(v) {
      waitForEmptyEventLoop = v;
    },
    succeed: once(succeed),
    fail: once(fail),
    done: once(done),
  };
  return [once(callback), context, () => (isCompleteInvoked = true)];
}

function isPromise(o) {
  return o && o.then && typeof o.then === 'function';
}

// ---------------------------------------------------------------- the loop

class Runtime {
  constructor(client, handler, metadata, errorCallbacks) {
    this.client = client;
    this.handler = handler;
    this.metadata = metadata;
    this.errorCallbacks = errorCallbacks;
  }

  scheduleIteration() {
    setImmediate(() => {
      const once = this.metadata.streaming ? this.handleOnceStreaming() : this.handleOnce();
      once.then(
        () => {},
        (err) => {
          console.log(`Unexpected Top Level Error: ${err.toString()}`);
          this.errorCallbacks.uncaughtException(err);
        },
      );
    });
  }

  async handleOnce() {
    const { bodyJson, headers } = await this.client.nextInvocation();
    const ic = new InvokeContext(headers);
    ic.updateLoggingContext();
    const [callback, callbackContext, markCompleted] = buildCallbackContext(
      this.client,
      ic.invokeId,
      this.scheduleIteration.bind(this),
    );
    try {
      this.setErrorCallbacks(ic.invokeId);
      this.setDefaultExitListener(ic.invokeId, markCompleted, this.metadata.isAsync);
      const result = this.handler(JSON.parse(bodyJson), ic.attachEnvironmentData(callbackContext), callback);
      if (isPromise(result)) {
        result.then(callbackContext.succeed, callbackContext.fail).catch(callbackContext.fail);
      }
    } catch (err) {
      callback(err);
    }
  }

  async handleOnceStreaming() {
    const { bodyJson, headers } = await this.client.nextInvocation();
    const ic = new InvokeContext(headers);
    ic.updateLoggingContext();
    const sc = buildStreamingContext(
      this.client,
      ic.invokeId,
      this.scheduleIteration.bind(this),
      beforeExit,
      this.metadata.highWaterMark ? { highWaterMark: this.metadata.highWaterMark } : undefined,
    );
    const { responseStream, rapidResponse, scheduleNext, fail } = sc.createStream();
    delete sc.createStream;
    try {
      this.setErrorCallbacks(ic.invokeId);
      beforeExit.set(() => this.scheduleIteration());
      const ctx = ic.attachEnvironmentData(sc);
      const handlerResult = this.handler(JSON.parse(bodyJson), responseStream, ctx);
      if (!isPromise(handlerResult)) {
        fail('Streaming does not support non-async handlers.', scheduleNext);
        return;
      }
      const result = await handlerResult;
      if (typeof result !== 'undefined') console.warn('Streaming handlers ignore return values.');
      if (rapidResponse) await rapidResponse;
      if (!responseStream.writableFinished) {
        fail('Response stream is not finished.', scheduleNext);
        return;
      }
      scheduleNext();
    } catch (err) {
      fail(err, scheduleNext);
    }
  }

  setErrorCallbacks(invokeId) {
    this.errorCallbacks.uncaughtException = (error) =>
      this.client.postInvocationError(error, invokeId, () => process.exit(129));
    this.errorCallbacks.unhandledRejection = (error) =>
      this.client.postInvocationError(error, invokeId, () => process.exit(128));
  }

  // The event loop drained and the handler never finished: an async handler
  // whose promise never settled fails; a sync or callback handler that never
  // called back succeeds with null.
  setDefaultExitListener(invokeId, markCompleted, isAsync) {
    beforeExit.set(() => {
      markCompleted();
      if (isAsync) {
        const e = new NodeJsExit();
        structuredConsole.logError('Invoke Error', e);
        this.client.postInvocationError(e, invokeId, () => this.scheduleIteration());
      } else {
        this.client.postInvocationResponse(null, invokeId, () => this.scheduleIteration());
      }
    });
  }
}

function checkForDeprecatedCallback(metadata) {
  if (
    process.env.AWS_LAMBDA_NODEJS_DISABLE_CALLBACK_WARNING === undefined &&
    metadata.argsNum == 3 &&
    metadata.isAsync == false &&
    metadata.streaming == false
  ) {
    console.warn(
      'AWS Lambda plans to remove support for callback-based function handlers starting with Node.js 24. You will need to update this function to use an async handler to use Node.js 24 or later. For more information and to provide feedback on this change, see https://github.com/aws/aws-lambda-nodejs-runtime-interface-client/issues/137. To disable this warning, set the AWS_LAMBDA_NODEJS_DISABLE_CALLBACK_WARNING environment variable.',
    );
  }
}

async function run(appRoot, handlerString) {
  patchConsole();
  const api = process.env.AWS_LAMBDA_RUNTIME_API;
  if (!api) {
    process.stderr.write('sluice nodejs runtime: AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(1);
  }
  const client = new RuntimeClient(api);

  const errorCallbacks = {
    uncaughtException: (error) => client.postInitError(error, () => process.exit(129)),
    unhandledRejection: (error) => client.postInitError(error, () => process.exit(128)),
  };
  process.on('uncaughtException', (error) => {
    structuredConsole.logError('Uncaught Exception', error);
    errorCallbacks.uncaughtException(error);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const error = new UnhandledPromiseRejection(reason, promise);
    structuredConsole.logError('Unhandled Promise Rejection', error);
    errorCallbacks.unhandledRejection(error);
  });
  beforeExit.reset();
  process.on('beforeExit', beforeExit.invoke);

  let handler, metadata;
  try {
    if (!handlerString) throw new MalformedHandlerName('Bad handler');
    handler = await loadHandler(appRoot, handlerString);
    metadata = {
      streaming: isStreaming(handler),
      highWaterMark: highWaterMark(handler),
      isAsync: isAsyncFunction(handler),
      argsNum: handler.length,
    };
  } catch (error) {
    // What Lambda's runtime does with a failed load: the error escapes its
    // top-level await and reaches the uncaughtException listener.
    structuredConsole.logError('Uncaught Exception', error);
    errorCallbacks.uncaughtException(error);
    return;
  }
  checkForDeprecatedCallback(metadata);
  new Runtime(client, handler, metadata, errorCallbacks).scheduleIteration();
}

// Lambda's NODE_PATH when the environment gives none: layers' node_modules
// under /opt, then the task root. (CommonJS only: ES modules ignore it.)
function defaultNodePath(appRoot) {
  if (process.env.NODE_PATH !== undefined) return;
  const major = process.versions.node.split('.')[0];
  process.env.NODE_PATH = [
    `/opt/nodejs/node${major}/node_modules`,
    '/opt/nodejs/node_modules',
    '/var/runtime/node_modules',
    '/var/runtime',
    appRoot,
  ].join(':');
  if (typeof Module._initPaths === 'function') Module._initPaths();
}

// The handler comes from _HANDLER (Lambda) or the first argument (the RIC's
// container entry point); code from LAMBDA_TASK_ROOT, else the working dir.
const appRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
defaultNodePath(appRoot);
await run(appRoot, process.argv[2] || process.env._HANDLER || '');
