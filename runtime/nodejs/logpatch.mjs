// console.* as Lambda's Node runtime patches it (aws-lambda-ric LogPatch.js):
// text lines "<ISO time>\t<request id>\t<LEVEL>\t<message>", or JSON objects
// with AWS_LAMBDA_LOG_FORMAT=JSON filtered by AWS_LAMBDA_LOG_LEVEL; newlines
// inside a message become \r so one call is one line. With
// _LAMBDA_TELEMETRY_LOG_FD set, records go to that fd in Lambda's framing.

import fs from 'node:fs';
import util from 'node:util';
import { intoError, toFormatted } from './errors.mjs';

export const structuredConsole = {};

const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');
const TENANT_ID = Symbol.for('aws.lambda.runtime.tenantId');
export const setCurrentRequestId = (id) => (global[REQUEST_ID] = id);
export const setCurrentTenantId = (id) => (global[TENANT_ID] = id);

const jsonErrorReplacer = (_, value) => {
  if (value instanceof Error) {
    return Object.assign(
      {
        errorType: value?.constructor?.name ?? 'UnknownError',
        errorMessage: value.message,
        stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
      },
      value,
    );
  }
  return value;
};

function formatJsonMessage(requestId, timestamp, level, tenantId, ...messageParams) {
  const result = { timestamp, level: level.name, requestId };
  if (tenantId != undefined && tenantId != null) result.tenantId = tenantId;
  if (messageParams.length === 1) {
    result.message = messageParams[0];
    try {
      return JSON.stringify(result, jsonErrorReplacer);
    } catch {
      result.message = util.format(result.message);
      return JSON.stringify(result);
    }
  }
  result.message = util.format(...messageParams);
  for (const param of messageParams) {
    if (param instanceof Error) {
      result.errorType = param?.constructor?.name ?? 'UnknownError';
      result.errorMessage = param.message;
      result.stackTrace = typeof param.stack === 'string' ? param.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(result);
}

const logTextToStdout = (level, message, ...params) => {
  const time = new Date().toISOString();
  const line = `${time}\t${global[REQUEST_ID]}\t${level.name}\t${util.format(message, ...params)}`;
  process.stdout.write(line.replace(/\n/g, '\r') + '\n');
};

const logJsonToStdout = (level, message, ...params) => {
  const time = new Date().toISOString();
  const line = formatJsonMessage(global[REQUEST_ID], time, level, global[TENANT_ID], message, ...params);
  process.stdout.write(line.replace(/\n/g, '\r') + '\n');
};

// Frame: type (4 bytes, 0xa55a0003 text / 0xa55a0002 JSON, ORed with the
// level mask), length (4), timestamp in microseconds (8), message; big-endian.
function logToFd(fd, json) {
  const head = Buffer.alloc(16);
  return (level, message, ...params) => {
    const date = new Date();
    const time = date.toISOString();
    const text = json
      ? formatJsonMessage(global[REQUEST_ID], time, level, global[TENANT_ID], message, ...params)
      : `${time}\t${global[REQUEST_ID]}\t${level.name}\t${util.format(message, ...params)}\n`;
    head.writeUInt32BE(((json ? 0xa55a0002 : 0xa55a0003) | level.tlvMask) >>> 0, 0);
    const bytes = Buffer.from(text, 'utf8');
    head.writeInt32BE(bytes.length, 4);
    head.writeBigInt64BE(BigInt(date.valueOf()) * 1000n, 8);
    fs.writeSync(fd, head);
    fs.writeSync(fd, bytes);
  };
}

const levels = Object.freeze({
  TRACE: { name: 'TRACE', priority: 1, tlvMask: 0b00100 },
  DEBUG: { name: 'DEBUG', priority: 2, tlvMask: 0b01000 },
  INFO: { name: 'INFO', priority: 3, tlvMask: 0b01100 },
  WARN: { name: 'WARN', priority: 4, tlvMask: 0b10000 },
  ERROR: { name: 'ERROR', priority: 5, tlvMask: 0b10100 },
  FATAL: { name: 'FATAL', priority: 6, tlvMask: 0b11000 },
});

function patchConsoleWith(log) {
  const nop = () => {};
  const min = levels[process.env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? levels.TRACE;
  const at = (level) => (level.priority >= min.priority ? (msg, ...p) => log(level, msg, ...p) : nop);
  console.trace = at(levels.TRACE);
  console.debug = at(levels.DEBUG);
  console.info = at(levels.INFO);
  console.log = console.info;
  console.warn = at(levels.WARN);
  console.error = at(levels.ERROR);
  console.fatal = (msg, ...p) => log(levels.FATAL, msg, ...p);
}

export function patchConsole() {
  const json = process.env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === 'JSON';
  let logger;
  if (process.env._LAMBDA_TELEMETRY_LOG_FD != null) {
    const fd = parseInt(process.env._LAMBDA_TELEMETRY_LOG_FD);
    delete process.env._LAMBDA_TELEMETRY_LOG_FD;
    logger = logToFd(fd, json);
  } else {
    logger = json ? logJsonToStdout : logTextToStdout;
  }
  patchConsoleWith(logger);
  structuredConsole.logError = json
    ? (_, err) => console.error(intoError(err))
    : (msg, err) => console.error(msg, toFormatted(intoError(err)));
}
