// The Lambda Runtime API client (node's http, one keep-alive connection).
// Request shapes follow aws-lambda-ric's RAPIDClient.js and the native client
// it wraps (aws-lambda-cpp): JSON bodies, application/json, the X-Ray cause
// header on errors.

import http from 'node:http';
import { toRapidResponse, xrayCause } from './errors.mjs';

const BASE = '/2018-06-01/runtime';

// Header values node refuses (or that would break the header line).
function headerSafe(s, max) {
  s = String(s ?? '');
  // JSON text: non-ASCII can be written as \u escapes without changing it.
  s = s.replace(/[\u007f-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  return s.length > max ? '' : s;
}

function typeHeader(s) {
  return String(s ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 256);
}

function serialize(body) {
  try {
    return JSON.stringify(body === undefined ? null : body);
  } catch {
    throw new Error('Unable to stringify response body');
  }
}

export class RuntimeClient {
  constructor(hostPort) {
    const i = hostPort.lastIndexOf(':');
    this.hostname = i > 0 ? hostPort.slice(0, i).replace(/^\[|\]$/g, '') : hostPort;
    this.port = i > 0 ? parseInt(hostPort.slice(i + 1), 10) : 80;
    this.http = http;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  // One request; a reused keep-alive connection the server had closed is
  // retried once on a fresh one.
  request(method, path, headers, body, retried = false) {
    return new Promise((resolve, reject) => {
      const req = http.request(
        { hostname: this.hostname, port: this.port, method, path, headers, agent: this.agent },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', (e) => {
        if (!retried && req.reusedSocket && e.code === 'ECONNRESET') {
          this.request(method, path, headers, body, true).then(resolve, reject);
        } else {
          reject(e);
        }
      });
      req.end(body);
    });
  }

  async nextInvocation() {
    const r = await this.request('GET', `${BASE}/invocation/next`, {});
    if (r.status !== 200) {
      throw new Error(`Runtime API /invocation/next answered HTTP ${r.status}: ${r.body.slice(0, 512)}`);
    }
    return { bodyJson: r.body, headers: r.headers };
  }

  post(path, bodyString, headers, callback) {
    headers = Object.assign(
      { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(bodyString) },
      headers,
    );
    this.request('POST', path, headers, bodyString).then(
      () => callback(),
      (e) => {
        // The Runtime API is gone: the environment is being torn down.
        process.stderr.write(`sluice nodejs runtime: POST ${path}: ${e.message}\n`);
        process.exit(1);
      },
    );
  }

  postInvocationResponse(response, id, callback) {
    const body = serialize(response); // throws as the RIC's does
    this.post(`${BASE}/invocation/${encodeURIComponent(id)}/response`, body, {}, callback);
  }

  postInvocationError(error, id, callback) {
    const response = toRapidResponse(error);
    const body = serialize(response);
    const headers = { 'Lambda-Runtime-Function-Error-Type': typeHeader(response.errorType) };
    const cause = headerSafe(xrayCause(error), 8192);
    if (cause) headers['Lambda-Runtime-Function-XRay-Error-Cause'] = cause;
    this.post(`${BASE}/invocation/${encodeURIComponent(id)}/error`, body, headers, callback);
  }

  postInitError(error, callback) {
    const response = toRapidResponse(error);
    this.post(
      `${BASE}/init/error`,
      serialize(response),
      { 'Lambda-Runtime-Function-Error-Type': typeHeader(response.errorType) },
      callback,
    );
  }
}
