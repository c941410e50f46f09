// Test-only driver of the official MCP TypeScript SDK client (@modelcontextprotocol/sdk, pinned
// by package-lock.json) for Gatehouse's `/mcp` integration tests. See README.md.
//
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "ok": true, "result": ...}  or  {"id": 1, "ok": false, "error": {"message", "code", "name"}}
// Nothing else is ever written to stdout; diagnostics go to stderr. Commands run as they arrive
// (answers carry the command's id). The process exits on `close` or when stdin ends.

import readline from 'node:readline';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

// Keep stdout for answers only, whatever a library might print.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.debug = (...args) => console.error(...args);

/** The one client of this process (one `connect` at a time). */
const state = {
  client: null,
  transport: null,
  /** One entry per HTTP request the transport made, in the order they were sent. */
  httpLog: [],
  requestCount: 0,
  /** The `elicitation/create` requests the server sent on the current connection. */
  elicitations: [],
};

const ELICIT_ACTIONS = ['accept', 'decline', 'cancel'];

function answer(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function errorJson(error) {
  if (error === null || error === undefined) {
    return { message: String(error), code: null, name: null };
  }
  const code = typeof error.code === 'number' ? error.code : null;
  const out = {
    message: error.message ?? String(error),
    code,
    name: error.constructor?.name ?? error.name ?? null,
  };
  if (error.data !== undefined) {
    out.data = error.data;
  }
  if (error.cause !== undefined) {
    out.cause = String(error.cause?.message ?? error.cause);
  }
  return out;
}

/**
 * A fetch for the transport: request i goes to urls[i % n] (round robin over replicas), the
 * initialize request offers `protocolVersion` when one is given, and every request is logged.
 */
function makeFetch(urls, protocolVersion) {
  const primary = new URL(urls[0]).href;
  return async (input, init = {}) => {
    const given = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const i = state.requestCount++;
    let index = null;
    let target = given;
    // Only the endpoint itself is spread over the replicas (a followed redirect would not be).
    if (new URL(given).href === primary) {
      index = i % urls.length;
      target = urls[index];
    }
    let body = init.body;
    let rpcMethod = null;
    let rpcId = null;
    let offered = null;
    if (typeof body === 'string') {
      try {
        const message = JSON.parse(body);
        const first = Array.isArray(message) ? message[0] : message;
        rpcMethod = first?.method ?? null;
        // The client's answer to a server request (e.g. elicitation/create) has no method.
        const isObject = typeof first === 'object' && first !== null;
        if (rpcMethod === null && isObject && ('result' in first || 'error' in first)) {
          rpcMethod = '(response)';
        }
        rpcId = first?.id ?? null;
        if (first?.method === 'initialize') {
          if (protocolVersion) {
            first.params = { ...first.params, protocolVersion };
            body = JSON.stringify(message);
          }
          offered = first.params?.protocolVersion ?? null;
        }
      } catch {
        // Not JSON: sent as it is.
      }
    }
    const headers = new Headers(init.headers ?? {});
    const entry = {
      seq: i,
      index,
      url: target,
      method: (init.method ?? 'GET').toUpperCase(),
      rpcMethod,
      rpcId,
      offeredProtocolVersion: offered,
      requestProtocolVersion: headers.get('mcp-protocol-version'),
      requestSessionId: headers.get('mcp-session-id'),
      status: null,
      contentType: null,
      sessionId: null,
      error: null,
    };
    state.httpLog.push(entry);
    try {
      const response = await fetch(target, { ...init, body });
      entry.status = response.status;
      entry.contentType = response.headers.get('content-type');
      entry.sessionId = response.headers.get('mcp-session-id');
      return response;
    } catch (error) {
      entry.error = String(error?.message ?? error);
      throw error;
    }
  };
}

async function closeClient() {
  const client = state.client;
  state.client = null;
  state.transport = null;
  if (client) {
    try {
      await client.close();
    } catch (error) {
      console.error(`mcp-client: close: ${error?.message ?? error}`);
    }
  }
}

function connectedClient() {
  if (!state.client) {
    throw new Error('not connected (send a successful "connect" first)');
  }
  return state.client;
}

/**
 * The `elicitation` field of `connect`, checked here so a test's typo fails the connect rather
 * than surfacing as a server-side error later.
 */
function elicitationAnswer(spec) {
  if (spec === null || typeof spec !== 'object' || !ELICIT_ACTIONS.includes(spec.action)) {
    throw new Error(`connect "elicitation" needs "action": one of ${ELICIT_ACTIONS.join(', ')}`);
  }
  const delayMs = spec.delayMs ?? 0;
  if (!Number.isFinite(delayMs) || delayMs < 0) {
    throw new Error('connect "elicitation.delayMs" must be a number >= 0');
  }
  return { action: spec.action, content: spec.content, delayMs };
}

/** Run `callTool` and turn a thrown error into `{error: {...}}` (for `callMany`). */
async function settledCall(client, name, args) {
  try {
    return await client.callTool({ name, arguments: args ?? {} });
  } catch (error) {
    return { error: errorJson(error) };
  }
}

const ops = {
  async connect(command) {
    await closeClient();
    const urls = command.urls ?? (command.url ? [command.url] : []);
    if (!Array.isArray(urls) || urls.length === 0) {
      throw new Error('connect needs "urls": a non-empty list');
    }
    const given = command.elicitation;
    const elicitation = given === null || given === undefined ? null : elicitationAnswer(given);
    state.httpLog = [];
    state.requestCount = 0;
    // The handler below appends to this connection's own list, even if it answers after a
    // later connect.
    const elicitations = [];
    state.elicitations = elicitations;
    const requestInit = {};
    if (command.token !== null && command.token !== undefined) {
      requestInit.headers = { Authorization: `Bearer ${command.token}` };
    }
    const transport = new StreamableHTTPClientTransport(new URL(urls[0]), {
      requestInit,
      fetch: makeFetch(urls, command.protocolVersion ?? null),
    });
    transport.onerror = (error) => {
      console.error(`mcp-client: transport error: ${error?.message ?? error}`);
    };
    // The SDK only accepts an elicitation/create handler when the capability is declared (and
    // answers a form-mode request with an error unless `form` is, or the object is empty).
    const client = new Client(
      { name: 'gatehouse-tests', version: '0.0.0' },
      elicitation ? { capabilities: { elicitation: { form: {} } } } : undefined,
    );
    if (elicitation) {
      client.setRequestHandler(ElicitRequestSchema, async (request, extra) => {
        elicitations.push({
          requestId: extra?.requestId ?? null,
          params: structuredClone(request.params),
          receivedAt: Date.now(),
        });
        if (elicitation.delayMs > 0) {
          await new Promise((resolve) => setTimeout(resolve, elicitation.delayMs));
        }
        // The spec has content only with accept.
        return elicitation.action === 'accept' && elicitation.content !== undefined
          ? { action: 'accept', content: elicitation.content }
          : { action: elicitation.action };
      });
    }
    client.onerror = (error) => {
      console.error(`mcp-client: client error: ${error?.message ?? error}`);
    };
    // On failure the SDK closes the client itself.
    await client.connect(transport);
    state.client = client;
    state.transport = transport;
    const initialize = state.httpLog.find((e) => e.rpcMethod === 'initialize');
    return {
      serverVersion: client.getServerVersion() ?? null,
      instructions: client.getInstructions() ?? null,
      protocolVersion: transport.protocolVersion ?? null,
      offeredProtocolVersion: initialize?.offeredProtocolVersion ?? null,
      capabilities: client.getServerCapabilities() ?? null,
      sessionId: transport.sessionId ?? null,
    };
  },

  async listTools() {
    // Also makes the SDK validate later structuredContent against each tool's outputSchema.
    return await connectedClient().listTools();
  },

  async callTool(command) {
    return await connectedClient().callTool({
      name: command.name,
      arguments: command.arguments ?? {},
    });
  },

  async callMany(command) {
    const client = connectedClient();
    const count = Number(command.count ?? 1);
    if (!Number.isInteger(count) || count < 1 || count > 1000) {
      throw new Error('callMany needs "count" between 1 and 1000');
    }
    const calls = [];
    for (let i = 0; i < count; i++) {
      calls.push(settledCall(client, command.name, command.arguments));
    }
    return await Promise.all(calls);
  },

  async httpLog() {
    return state.httpLog;
  },

  async elicitations() {
    return state.elicitations;
  },

  async close() {
    await closeClient();
    return { closed: true };
  },
};

let exiting = false;

async function handle(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    answer({ id: null, ok: false, error: { message: `bad command line: ${error.message}`, code: null, name: 'SyntaxError' } });
    return;
  }
  const id = command?.id ?? null;
  const op = ops[command?.op];
  if (!op) {
    answer({ id, ok: false, error: { message: `unknown op ${JSON.stringify(command?.op)}`, code: null, name: 'Error' } });
    return;
  }
  try {
    const result = await op(command);
    answer({ id, ok: true, result: result ?? null });
  } catch (error) {
    answer({ id, ok: false, error: errorJson(error) });
  }
  if (command.op === 'close') {
    exiting = true;
    process.exit(0);
  }
}

const input = readline.createInterface({ input: process.stdin, terminal: false });
const pending = new Set();
input.on('line', (line) => {
  if (line.trim() === '') {
    return;
  }
  const task = handle(line).finally(() => pending.delete(task));
  pending.add(task);
});
input.on('close', async () => {
  // stdin ended (the test process is gone or done): finish what runs, then exit.
  await Promise.allSettled([...pending]);
  if (!exiting) {
    await closeClient();
    process.exit(0);
  }
});
process.on('unhandledRejection', (error) => {
  console.error(`mcp-client: unhandled rejection: ${error?.stack ?? error}`);
});
