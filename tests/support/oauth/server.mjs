// A real OAuth 2.0 server for the Maestro OAuth end-to-end tests (tests/tests/oauth_*.rs):
// oauth2-mock-server (npm), driven through its library API (OAuth2Issuer, OAuth2Service and
// their hooks), behind a small HTTP wrapper that adds a control endpoint for the tests.
//
//   node server.mjs            prints "oauth2-mock-server listening on http://127.0.0.1:PORT"
//
// The library's endpoints (/authorize, /token, /revoke, ...) are served as they are, with these
// hooks:
// * beforeAuthorizeRedirect: records the request (scope, PKCE method) and, on demand, answers
//   error=access_denied instead of a code;
// * beforeResponse (token endpoint): checks the client credentials the test registered, makes
//   codes single-use, grants the requested scopes minus any the test withholds, makes refresh
//   tokens single-use (rotation: a used one is refused with invalid_grant), refuses refreshes
//   on demand, sets the token lifetime the test asks for, and records every token issued;
// * beforeTokenSigning: a unique jti, so that two tokens issued in the same second differ.
// The library itself checks the PKCE verifier against the S256 challenge.
//
// Control (JSON, loopback only):
//   POST /_control/config  {"token_lifetime": 4, "refuse_refresh": 1, "deny_authorization": 1,
//                           "fail_revoke": 1, "withhold_scopes": ["gist"],
//                           "invalid_token_revoke": 1 (the next access token revocation answers
//                           400 invalid_token, as Google does once the grant was revoked),
//                           "client_id": "...", "client_secret": "..."}   (fields optional)
//   GET  /_control/log     what was asked and issued (tokens included: the tests search for
//                          them in the broker's files and logs)
// Nothing here prints a token.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const config = {
  token_lifetime: null,
  refuse_refresh: 0,
  deny_authorization: 0,
  fail_revoke: 0,
  invalid_token_revoke: 0,
  withhold_scopes: [],
  client_id: null,
  client_secret: null,
};

const log = {
  authorizations: [],
  token_requests: [],
  revocations: [],
  issued: { access_tokens: [], refresh_tokens: [] },
};

// code -> the scope string it was asked with; refresh token -> { scopes, used }.
const codes = new Map();
const refreshTokens = new Map();

const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);

service.on('beforeAuthorizeRedirect', (redirect, req) => {
  const q = req.query;
  const entry = {
    client_id: q.client_id ?? null,
    redirect_uri: q.redirect_uri ?? null,
    scope: q.scope ?? null,
    state_present: typeof q.state === 'string' && q.state.length > 0,
    code_challenge_present: typeof q.code_challenge === 'string' && q.code_challenge.length > 0,
    code_challenge_method: q.code_challenge_method ?? null,
    denied: false,
  };
  const code = redirect.url.searchParams.get('code');
  if (config.deny_authorization > 0) {
    config.deny_authorization -= 1;
    redirect.url.searchParams.delete('code');
    redirect.url.searchParams.set('error', 'access_denied');
    redirect.url.searchParams.set('error_description', 'The resource owner denied the request');
    entry.denied = true;
  } else if (code) {
    codes.set(code, typeof q.scope === 'string' ? q.scope : '');
  }
  log.authorizations.push(entry);
});

service.on('beforeTokenSigning', (token) => {
  token.payload.jti = randomUUID();
});

function refuse(response, status, error, description) {
  response.statusCode = status;
  response.body = { error, error_description: description };
}

service.on('beforeResponse', (response, req) => {
  const body = req.body ?? {};
  const entry = {
    grant_type: body.grant_type ?? null,
    code_verifier_present: typeof body.code_verifier === 'string',
    redirect_uri: body.redirect_uri ?? null,
    refresh_token_known: null,
    status: 200,
    error: null,
  };
  log.token_requests.push(entry);
  const finish = () => {
    entry.status = response.statusCode;
    entry.error = response.body?.error ?? null;
  };
  if (
    (config.client_id !== null && body.client_id !== config.client_id) ||
    (config.client_secret !== null && body.client_secret !== config.client_secret)
  ) {
    refuse(response, 401, 'invalid_client', 'Client authentication failed');
    return finish();
  }
  let scopes;
  if (body.grant_type === 'authorization_code') {
    if (!codes.has(body.code)) {
      refuse(response, 400, 'invalid_grant', 'The authorization code is unknown or was used');
      return finish();
    }
    scopes = codes.get(body.code).split(' ').filter((s) => s.length > 0);
    codes.delete(body.code);
  } else if (body.grant_type === 'refresh_token') {
    const known = refreshTokens.get(body.refresh_token);
    entry.refresh_token_known = known !== undefined && !known.used;
    if (known === undefined || known.used) {
      refuse(response, 400, 'invalid_grant', 'The refresh token is unknown, used or revoked');
      return finish();
    }
    known.used = true;
    if (config.refuse_refresh > 0) {
      config.refuse_refresh -= 1;
      refuse(response, 400, 'invalid_grant', 'The refresh token was revoked');
      return finish();
    }
    scopes = known.scopes;
  } else {
    return finish();
  }
  const granted = scopes.filter((s) => !config.withhold_scopes.includes(s));
  response.body.scope = granted.join(' ');
  if (config.token_lifetime !== null) {
    response.body.expires_in = config.token_lifetime;
  }
  delete response.body.id_token;
  log.issued.access_tokens.push(response.body.access_token);
  log.issued.refresh_tokens.push(response.body.refresh_token);
  refreshTokens.set(response.body.refresh_token, { scopes: granted, used: false });
  finish();
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 65536) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/_control/config' && req.method === 'POST') {
      const update = JSON.parse((await readBody(req)) || '{}');
      for (const [k, v] of Object.entries(update)) {
        if (!(k in config)) {
          return sendJson(res, 400, { error: `unknown setting ${k}` });
        }
        config[k] = v;
      }
      return sendJson(res, 200, config);
    }
    if (url.pathname === '/_control/log' && req.method === 'GET') {
      return sendJson(res, 200, log);
    }
    if (url.pathname === '/revoke' && req.method === 'POST') {
      // RFC 7009 requests are form-encoded, which the library does not parse for /revoke:
      // read and record them here, then let the library answer (or fail on demand).
      const form = new URLSearchParams(await readBody(req));
      const token = form.get('token');
      const kind = refreshTokens.has(token)
        ? 'refresh_token'
        : log.issued.access_tokens.includes(token)
          ? 'access_token'
          : 'unknown';
      const clientOk =
        (config.client_id === null || form.get('client_id') === config.client_id) &&
        (config.client_secret === null || form.get('client_secret') === config.client_secret);
      const entry = { token, token_type_hint: form.get('token_type_hint'), known_as: kind, client_ok: clientOk, status: 200 };
      log.revocations.push(entry);
      if (config.fail_revoke > 0) {
        config.fail_revoke -= 1;
        entry.status = 503;
        return sendJson(res, 503, { error: 'temporarily_unavailable' });
      }
      if (config.invalid_token_revoke > 0 && kind === 'access_token') {
        config.invalid_token_revoke -= 1;
        entry.status = 400;
        return sendJson(res, 400, { error: 'invalid_token' });
      }
      if (kind === 'refresh_token') {
        refreshTokens.get(token).used = true;
      }
    }
    service.requestHandler(req, res);
  } catch (e) {
    sendJson(res, 500, { error: 'server_error', error_description: String(e.message) });
  }
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer.url = `http://127.0.0.1:${port}`;
  process.stdout.write(`oauth2-mock-server listening on http://127.0.0.1:${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
