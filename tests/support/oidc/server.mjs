// Test-only authorization server for Gatehouse's integration tests: panva's oidc-provider (a
// certified OpenID provider) on 127.0.0.1, plus a "Graph stand-in" API on a second port that
// checks every bearer token with the provider's own introspection endpoint.
//
// Everything is configured from the environment so that each test starts its own isolated
// instance (all state is in memory and dies with the process). See README.md for the contract.
//
// OIDC_SHAPE picks how the provider behaves: `microsoft` (the default: refresh tokens for
// `offline_access`, rotated on every refresh, reuse kills the grant) or `google` (refresh tokens
// for `access_type=offline` + `prompt=consent`, never rotated and absent from refresh answers, none
// on a re-consent while one is live, revoking any token revokes the whole authorization).
//
// Once both listeners are up it prints ONE JSON line on stdout:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT,"graph_port":GPORT,"pid":PID,"shape":SHAPE}
// and it exits with status 0 on SIGTERM / SIGINT (and on stdin EOF when OIDC_EXIT_ON_STDIN_EOF=1,
// so an orphan never outlives the test process that spawned it).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';
const env = process.env;

function intEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function listEnv(name) {
  return (env[name] ?? '').split(/[,\s]+/).map((s) => s.trim()).filter(Boolean);
}

const SHAPE = (env.OIDC_SHAPE || 'microsoft').toLowerCase();
if (SHAPE !== 'microsoft' && SHAPE !== 'google') {
  throw new Error(`OIDC_SHAPE must be microsoft or google, got ${JSON.stringify(env.OIDC_SHAPE)}`);
}
const GOOGLE = SHAPE === 'google';

const CLIENT_ID = env.OIDC_CLIENT_ID || 'gatehouse-test';
const CLIENT_SECRET = env.OIDC_CLIENT_SECRET || 'gatehouse-test-secret';
// The client must be registered with at least one redirect URI; more can be set at run time
// through POST /__control/redirect_uris (the Gatehouse under test often learns its own port only
// after the provider has started).
const REDIRECT_URIS = listEnv('OIDC_REDIRECT_URIS');
const ACCESS_TTL = intEnv('OIDC_ACCESS_TTL', 3600);
const REFRESH_TTL = intEnv('OIDC_REFRESH_TTL', 14 * 24 * 3600);

// Scopes the provider recognises. Scopes outside this list are silently dropped from a request
// (oidc-provider's behaviour), so list every scope a test expects back in the token response.
const MICROSOFT_SCOPES = [
  'User.Read',
  'Mail.ReadWrite',
  'Mail.ReadWrite.Shared',
  'Mail.Send',
  'Mail.Send.Shared',
  'Calendars.ReadWrite',
  'Calendars.ReadWrite.Shared',
];
const GOOGLE_SCOPES = [
  'https://mail.google.com/',
  'https://www.googleapis.com/auth/gmail.modify',
  'https://www.googleapis.com/auth/calendar',
  'https://www.googleapis.com/auth/userinfo.email',
  'https://www.googleapis.com/auth/userinfo.profile',
];
const SCOPES = [...new Set([
  'openid', 'offline_access', 'profile', 'email',
  ...MICROSOFT_SCOPES, ...GOOGLE_SCOPES, ...listEnv('OIDC_EXTRA_SCOPES'),
])];

// ---------------------------------------------------------------------------------------------
// Accounts: the login name typed on the login page decides the profile.
//   ada            -> mail/email ada@example.com, UPN ada@corp.example.com, name "Ada"
//   bob@contoso.io -> mail/email/UPN bob@contoso.io
//   upn-only-x     -> no mail/email, UPN upn-only-x@corp.example.com
//   noemail-x      -> neither mail/email nor UPN
// ---------------------------------------------------------------------------------------------
function profileFor(login) {
  const local = login.includes('@') ? login.slice(0, login.indexOf('@')) : login;
  const name = local ? local[0].toUpperCase() + local.slice(1) : login;
  if (login.startsWith('noemail-')) {
    return { sub: login, name };
  }
  if (login.startsWith('upn-only-')) {
    return { sub: login, name, userPrincipalName: `${local}@corp.example.com` };
  }
  const mail = login.includes('@') ? login : `${login}@example.com`;
  const upn = login.includes('@') ? login : `${login}@corp.example.com`;
  return {
    sub: login, name, email: mail, email_verified: true, mail, userPrincipalName: upn,
  };
}

// ---------------------------------------------------------------------------------------------
// Storage: an unbounded in-memory adapter (the built-in one is an LRU of 1000 entries, which a
// long test could overflow, silently dropping live grants). Enumerable, so the control endpoint
// can revoke every grant of an account.
// ---------------------------------------------------------------------------------------------
const store = new Map(); // "Model:id" -> { payload, expiresAt }
const secondary = new Map(); // "uid:..." / "userCode:..." -> id
const grantMembers = new Map(); // grantId -> Set of "Model:id"
const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) secondary.set(`uid:${payload.uid}`, id);
    if (payload.userCode) secondary.set(`userCode:${payload.userCode}`, id);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    return live(this.key(id));
  }

  async findByUid(uid) {
    const id = secondary.get(`uid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = secondary.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = live(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const members = grantMembers.get(grantId);
    if (!members) return;
    for (const key of members) {
      if (key.startsWith(`${this.model}:`)) {
        store.delete(key);
        members.delete(key);
      }
    }
    if (members.size === 0) grantMembers.delete(grantId);
  }
}

function liveGrantsByAccount() {
  const out = {};
  for (const [key] of store) {
    if (!key.startsWith('Grant:')) continue;
    const grant = live(key);
    if (grant) out[grant.accountId] = (out[grant.accountId] ?? 0) + 1;
  }
  return out;
}

function revokeAccount(accountId, clientId = undefined) {
  let revoked = 0;
  for (const [key] of [...store]) {
    if (!key.startsWith('Grant:')) continue;
    const grant = live(key);
    if (!grant || grant.accountId !== accountId) continue;
    if (clientId !== undefined && grant.clientId !== clientId) continue;
    const grantId = key.slice('Grant:'.length);
    for (const member of grantMembers.get(grantId) ?? []) store.delete(member);
    grantMembers.delete(grantId);
    store.delete(key);
    revoked += 1;
  }
  return revoked;
}

// ---------------------------------------------------------------------------------------------
// Test control state: counters and injected token-endpoint failures.
// ---------------------------------------------------------------------------------------------
function freshStats() {
  return {
    // Every call that reached the token endpoint, by grant_type (injected failures included).
    authorization_code: 0,
    refresh_token: 0,
    other_grant: 0,
    // Of those, the ones the real token endpoint answered 200 / 4xx-5xx.
    authorization_code_ok: 0,
    refresh_token_ok: 0,
    authorization_code_error: 0,
    refresh_token_error: 0,
    // refresh_token calls answered invalid_grant by the real endpoint.
    refresh_token_invalid_grant: 0,
    // Calls answered by an injected failure, and delayed calls dropped because the client hung up.
    injected: 0,
    dropped: 0,
    revocation: 0,
    introspection: 0,
    graph_requests: 0,
    graph_unauthorized: 0,
    revoked_grants: 0,
    // Google shape: authorization-code exchanges answered without a refresh token because the
    // account already had a live one (a re-consent).
    refresh_token_withheld: 0,
  };
}
let stats = freshStats();
let rules = []; // injected behaviours for the next token-endpoint calls
const extraRedirectUris = new Set();
// What the authorization endpoint received (the query of every initial GET), oldest first.
let authorizeRequests = [];
// What the revocation endpoint received: form field names, client authentication, what the
// `token` was (refresh_token / access_token / null when unknown or already dead) and the status.
let revocations = [];
// Authorization request query by `state`, and by the code issued for it (Google shape: whether
// the code's request asked for offline access).
const requestsByState = new Map();
const requestsByCode = new Map();

function liveRefreshTokens(accountId, clientId) {
  let count = 0;
  for (const [key] of store) {
    if (!key.startsWith('RefreshToken:')) continue;
    const token = live(key);
    if (token && !token.consumed && token.accountId === accountId && token.clientId === clientId) {
      count += 1;
    }
  }
  return count;
}

function promptIncludes(prompt, value) {
  return (prompt ?? '').split(' ').includes(value);
}

// Google: a refresh token only for an authorization request with access_type=offline and
// prompt=consent, and none while the account already holds a live one for this client (Google
// omits it on a re-consent; the client must keep the one it has).
async function googleIssueRefreshToken(_ctx, client, code) {
  if (!client.grantTypeAllowed('refresh_token')) return false;
  const request = requestsByCode.get(code.jti);
  if (!request || request.access_type !== 'offline' || !promptIncludes(request.prompt, 'consent')) {
    return false;
  }
  if (liveRefreshTokens(code.accountId, client.clientId) > 0) {
    stats.refresh_token_withheld += 1;
    return false;
  }
  return true;
}

function takeRule(grantType) {
  const index = rules.findIndex((r) => r.count > 0 && (!r.grant_type || r.grant_type === grantType));
  if (index === -1) return undefined;
  const rule = rules[index];
  rule.count -= 1;
  if (rule.count <= 0) rules.splice(index, 1);
  return rule;
}

function parseRule(body) {
  const count = body.count === undefined ? 1 : Number(body.count);
  if (!Number.isInteger(count) || count < 1) throw new Error('count must be a positive integer');
  const status = body.status === undefined ? undefined : Number(body.status);
  if (status !== undefined && !(Number.isInteger(status) && status >= 200 && status <= 599)) {
    throw new Error('status must be an HTTP status code');
  }
  const delayMs = body.delay_ms === undefined ? 0 : Number(body.delay_ms);
  if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 120000) {
    throw new Error('delay_ms must be between 0 and 120000');
  }
  if (status === undefined && delayMs === 0) throw new Error('give status and/or delay_ms');
  return {
    count,
    status,
    delay_ms: delayMs,
    body: body.body,
    headers: body.headers ?? {},
    grant_type: body.grant_type,
    pass_through_after_abort: body.pass_through_after_abort === true,
  };
}

function isLoopback(address) {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

async function readRaw(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sleepUnlessAborted(ms, res) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      res.off('close', done);
      resolve();
    }
    res.on('close', done);
  });
}

// One refresh at a time per refresh token value, so that two concurrent uses of the same token
// are always seen as a reuse (the second finds it consumed) instead of racing past the check.
const refreshLocks = new Map();
async function withRefreshLock(token, fn) {
  const previous = refreshLocks.get(token) ?? Promise.resolve();
  let release;
  const current = new Promise((resolve) => { release = resolve; });
  const chained = previous.then(() => current);
  refreshLocks.set(token, chained);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (refreshLocks.get(token) === chained) refreshLocks.delete(token);
  }
}

// ---------------------------------------------------------------------------------------------
// The provider.
// ---------------------------------------------------------------------------------------------
const providerServer = http.createServer();
const graphServer = http.createServer();

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

const port = await listen(providerServer, intEnv('OIDC_PORT', 0));
const issuer = `http://${HOST}:${port}`;

const ROUTES = {
  authorization: '/auth',
  token: '/token',
  revocation: '/token/revocation',
  introspection: '/token/introspection',
  userinfo: '/me',
  jwks: '/jwks',
  end_session: '/session/end',
};

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: REDIRECT_URIS.length ? REDIRECT_URIS : ['http://127.0.0.1/unused-placeholder'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted too
  }],
  scopes: SCOPES,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  async findAccount(_ctx, id) {
    if (!id) return undefined;
    return {
      accountId: id,
      async claims() {
        return profileFor(id);
      },
    };
  },
  pkce: { required: () => true }, // oidc-provider 9 supports S256 only
  ...(GOOGLE ? {
    issueRefreshToken: googleIssueRefreshToken,
    rotateRefreshToken: false,
    // Offline access outlives the browser session that granted it.
    expiresWithSession: async () => false,
  } : {
    issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && code.scopes.has('offline_access'),
    rotateRefreshToken: true,
  }),
  ttl: {
    AccessToken: ACCESS_TTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: REFRESH_TTL,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: REFRESH_TTL,
  },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  routes: ROUTES,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  clientBasedCORS: () => false,
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oidc error</title></head><body>${
      Object.entries(out).map(([k, v]) => `<pre class="error" data-key="${k}">${String(v).replace(/[<>&"]/g, '')}</pre>`).join('')
    }</body></html>`;
  },
});
provider.proxy = false;

// Run-time redirect URIs (exact match, like the static ones).
const originalRedirectUriAllowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
  return extraRedirectUris.has(value) || originalRedirectUriAllowed.call(this, value);
};

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = body;
}

async function control(ctx) {
  if (!isLoopback(ctx.req.socket.remoteAddress)) {
    json(ctx, 403, { error: 'loopback only' });
    return;
  }
  let body = {};
  if (ctx.method === 'POST') {
    const raw = await readRaw(ctx.req);
    try {
      body = raw ? JSON.parse(raw) : {};
    } catch {
      json(ctx, 400, { error: 'body must be JSON' });
      return;
    }
  }
  const route = `${ctx.method} ${ctx.path}`;
  try {
    switch (route) {
      case 'GET /__control/stats':
        json(ctx, 200, stats);
        return;
      case 'GET /__control/authorize_requests':
        json(ctx, 200, authorizeRequests);
        return;
      case 'GET /__control/revocations':
        json(ctx, 200, revocations);
        return;
      case 'POST /__control/fail':
        rules.push(parseRule(body));
        json(ctx, 200, { pending: rules });
        return;
      case 'POST /__control/reset':
        stats = freshStats();
        rules = [];
        authorizeRequests = [];
        revocations = [];
        json(ctx, 200, { reset: true });
        return;
      case 'POST /__control/redirect_uris':
        if (!Array.isArray(body.redirect_uris)) throw new Error('redirect_uris must be an array');
        if (!body.add) extraRedirectUris.clear();
        for (const uri of body.redirect_uris) extraRedirectUris.add(String(uri));
        json(ctx, 200, { redirect_uris: [...extraRedirectUris] });
        return;
      case 'POST /__control/revoke': {
        if (typeof body.account !== 'string') throw new Error('account must be a string');
        const revoked = revokeAccount(body.account);
        stats.revoked_grants += revoked;
        json(ctx, 200, { revoked_grants: revoked });
        return;
      }
      case 'GET /__control/grants':
        json(ctx, 200, liveGrantsByAccount());
        return;
      default:
        json(ctx, 404, { error: `no control route ${route}` });
    }
  } catch (err) {
    json(ctx, 400, { error: err.message });
  }
}

function respondInjected(ctx, rule) {
  stats.injected += 1;
  ctx.status = rule.status;
  for (const [name, value] of Object.entries(rule.headers)) ctx.set(name, String(value));
  ctx.set('Cache-Control', 'no-store');
  if (typeof rule.body === 'string') {
    if (!ctx.response.get('Content-Type')) ctx.type = 'text/plain';
    ctx.body = rule.body;
  } else {
    ctx.type = 'application/json';
    ctx.body = rule.body ?? {
      error: rule.status === 429 || rule.status >= 500 ? 'temporarily_unavailable' : 'invalid_request',
      error_description: 'failure injected by the test control endpoint',
    };
  }
}

// Mounted before the provider's own routes: control endpoint, counters, injected failures.
provider.use(async (ctx, next) => {
  if (ctx.path === '/__control' || ctx.path.startsWith('/__control/')) {
    await control(ctx);
    return;
  }
  if (ctx.path === ROUTES.authorization || ctx.path.startsWith(`${ROUTES.authorization}/`)) {
    await authorization(ctx, next);
    return;
  }
  if (ctx.method === 'POST' && ctx.path === ROUTES.revocation) {
    await revocation(ctx, next);
    return;
  }
  if (ctx.method === 'POST' && ctx.path === ROUTES.introspection) stats.introspection += 1;
  if (!(ctx.method === 'POST' && ctx.path === ROUTES.token)) {
    await next();
    return;
  }

  // Read the form body here (the provider then uses the pre-read body) to learn the grant type.
  const raw = await readRaw(ctx.req);
  ctx.req.body = raw;
  const params = new URLSearchParams(ctx.is('application/x-www-form-urlencoded') ? raw : '');
  const grantType = params.get('grant_type') ?? '';
  const known = grantType === 'authorization_code' || grantType === 'refresh_token';
  stats[known ? grantType : 'other_grant'] += 1;

  const rule = takeRule(grantType);
  if (rule) {
    if (rule.delay_ms > 0) await sleepUnlessAborted(rule.delay_ms, ctx.res);
    const aborted = ctx.res.destroyed || ctx.req.socket.destroyed;
    if (aborted && !rule.pass_through_after_abort) {
      // The client gave up: like a request lost in the network, it never reaches the endpoint.
      stats.dropped += 1;
      ctx.respond = false;
      ctx.res.destroy();
      return;
    }
    if (rule.status !== undefined) {
      respondInjected(ctx, rule);
      return;
    }
  }

  const run = async () => {
    await next();
    if (!known) return;
    if (ctx.status === 200) {
      stats[`${grantType}_ok`] += 1;
      // Google answers a refresh with a new access token only: no refresh_token field at all.
      if (GOOGLE && grantType === 'refresh_token' && ctx.body && typeof ctx.body === 'object') {
        delete ctx.body.refresh_token;
      }
    } else {
      stats[`${grantType}_error`] += 1;
      if (grantType === 'refresh_token' && ctx.body?.error === 'invalid_grant') {
        stats.refresh_token_invalid_grant += 1;
      }
    }
  };
  const refreshToken = params.get('refresh_token');
  if (grantType === 'refresh_token' && refreshToken) {
    await withRefreshLock(refreshToken, run);
  } else {
    await run();
  }
});

// The authorization endpoint: record every initial request's query, and which request each
// issued code answers (the code comes back in the Location of the final redirect).
async function authorization(ctx, next) {
  const initial = ctx.path === ROUTES.authorization
    && (ctx.method === 'GET' || ctx.method === 'POST') && ctx.querystring;
  if (initial) {
    const query = Object.fromEntries(new URLSearchParams(ctx.querystring));
    authorizeRequests.push(query);
    if (query.state) requestsByState.set(query.state, query);
  }
  await next();
  const location = ctx.response.get('Location');
  if (!location) return;
  let redirect;
  try {
    redirect = new URL(location);
  } catch {
    return;
  }
  const code = redirect.searchParams.get('code');
  const request = requestsByState.get(redirect.searchParams.get('state') ?? '');
  if (code && request) requestsByCode.set(code, request);
}

// The revocation endpoint: record what it received (the body is read here; the provider then
// uses the pre-read body). Google shape: revoking any token of an authorization revokes all of
// it (every grant of that account for this client).
async function revocation(ctx, next) {
  stats.revocation += 1;
  const raw = await readRaw(ctx.req);
  ctx.req.body = raw;
  const form = new URLSearchParams(ctx.is('application/x-www-form-urlencoded') ? raw : '');
  const value = form.get('token');
  const refresh = value ? live(`RefreshToken:${value}`) : undefined;
  const access = value && !refresh ? live(`AccessToken:${value}`) : undefined;
  const token = refresh ?? access;
  let clientAuth = 'none';
  if (/^Basic\s/i.test(ctx.get('authorization'))) clientAuth = 'client_secret_basic';
  else if (form.has('client_secret')) clientAuth = 'client_secret_post';
  await next();
  revocations.push({
    fields: [...new Set(form.keys())],
    token_type_hint: form.get('token_type_hint'),
    client_auth: clientAuth,
    token: refresh ? 'refresh_token' : (access ? 'access_token' : null),
    status: ctx.status,
  });
  if (GOOGLE && ctx.status === 200 && token) revokeAccount(token.accountId, token.clientId);
}

providerServer.on('request', provider.callback());

// ---------------------------------------------------------------------------------------------
// Graph stand-in: GET /v1.0/me -> the profile of the token's subject; anything else echoes
// {path, method, sub}. Every request's bearer token is checked with the provider's
// introspection endpoint (client credentials, over loopback HTTP).
// ---------------------------------------------------------------------------------------------
const basic = Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64');

async function introspect(token) {
  const response = await fetch(`${issuer}${ROUTES.introspection}`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${basic}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
    signal: AbortSignal.timeout(10000),
  });
  if (!response.ok) throw new Error(`introspection answered ${response.status}`);
  return response.json();
}

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

graphServer.on('request', async (req, res) => {
  try {
    stats.graph_requests += 1;
    const url = new URL(req.url, `http://${HOST}`);
    const auth = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(auth);
    const info = match ? await introspect(match[1]) : { active: false };
    if (!info.active || info.token_type !== 'Bearer') {
      stats.graph_unauthorized += 1;
      send(res, 401, {
        error: {
          code: 'InvalidAuthenticationToken',
          message: match ? 'Access token is not active.' : 'Access token is empty.',
        },
      }, { 'www-authenticate': 'Bearer error="invalid_token"' });
      return;
    }
    const sub = info.sub;
    if (req.method === 'GET' && url.pathname === '/v1.0/me') {
      const p = profileFor(sub);
      send(res, 200, {
        '@odata.context': `http://${HOST}/v1.0/$metadata#users/$entity`,
        id: sub,
        displayName: p.name ?? null,
        mail: p.mail ?? null,
        userPrincipalName: p.userPrincipalName ?? null,
      });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/oauth2/v3/userinfo') {
      const p = profileFor(sub);
      send(res, 200, {
        sub, name: p.name, email: p.email, email_verified: p.email ? true : undefined,
      });
      return;
    }
    // Drain any request body before echoing.
    await readRaw(req, 16 * 1024 * 1024);
    send(res, 200, {
      path: url.pathname, query: url.search ? url.search.slice(1) : null, method: req.method, sub,
    });
  } catch (err) {
    send(res, 500, { error: { code: 'StandInFailure', message: String(err?.message ?? err) } });
  }
});

const graphPort = await listen(graphServer, intEnv('GRAPH_PORT', 0));

// ---------------------------------------------------------------------------------------------
// Shutdown (handlers in place before the ready line, so a SIGTERM right after it exits 0), then
// the ready line.
// ---------------------------------------------------------------------------------------------
let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  const exit = () => process.exit(0);
  setTimeout(exit, 1000).unref();
  let open = 2;
  const closed = () => { open -= 1; if (open === 0) exit(); };
  for (const server of [providerServer, graphServer]) {
    server.close(closed);
    server.closeAllConnections();
  }
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (env.OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}

process.stdout.write(`${JSON.stringify({
  issuer, port, graph_port: graphPort, pid: process.pid, shape: SHAPE,
})}\n`);
