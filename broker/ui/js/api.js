// The broker's API: one fetch wrapper, its failure type with messages worded for the browser,
// what the broker says of itself (`GET /v1/meta`: limits, audit actions, the OAuth redirect
// URI), and the catalog of kinds.

import { BASE, TOKEN_KEY } from './constants.js';
import { state } from './state.js';

// A refused or failed request: the HTTP status, the broker's error code, its message worded
// for this page, and the request's field at fault when the broker named one.
export class ApiFailure extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

// A mistake in a form, found before anything is sent; `field` is the input at fault (an
// element or its id), where the message is shown.
export class Invalid extends Error {
  constructor(message, field) {
    super(message);
    this.field = field || null;
  }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY);

// What to do instead, by error code, where the broker's message says it for the command line.
const BROWSER_HINTS = {
  not_found: 'pick one from the list (it may have been deleted meanwhile)',
  already_exists: 'choose another name, or edit the existing one from the list',
  session_ended: 'create a new session under Sessions',
  missing_field: 'give it a value',
  unknown_kind: 'pick a kind from the list',
  invalid_exposure: 'change the exposure or the hosts',
  oauth: 'start the connection again from this page',
};
// The parts of a message that address the command line: a command in backquotes, a --flag, an
// environment variable, a program name.
const CLI_WORDS = /`|(^|[\s(])--[a-z]|MAESTRO_[A-Z]|maestro-broker |\bmaestro [a-z]/;

// The broker's messages serve the CLI and this page alike; here, a part that names a command,
// a flag or an environment variable is replaced by what to do in the browser.
export function forBrowser(code, message) {
  if (code === 'unauthorized' || code === 'invalid_token') {
    if (!CLI_WORDS.test(message)) return message;
    return 'the broker refused this API token (missing, revoked or mistyped): sign in with a current one';
  }
  // A parenthesis, a sentence or a clause (between semicolons) that speaks to the CLI goes.
  const trimmed = message.replace(/\s*\([^()]*\)/g, (p) => (CLI_WORDS.test(p) ? '' : p));
  const sentences = trimmed.split(/(?<=\.)\s+/).map((s) => s.replace(/\.$/, ''));
  let dropped = false;
  const kept = [];
  for (const sentence of sentences) {
    const parts = sentence.split(/;\s+/);
    const clean = parts.filter((p) => !CLI_WORDS.test(p));
    if (clean.length < parts.length) dropped = true;
    if (clean.length) kept.push(clean.join('; '));
  }
  if (!dropped) return trimmed;
  const hint = BROWSER_HINTS[code] || 'correct it and try again';
  return kept.length ? `${kept.join('. ')}; ${hint}` : hint;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, BASE), init);
  } catch (err) {
    throw new ApiFailure(0, 'network',
      `cannot reach the broker (${err.message}); check that it is running, then retry`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!response.ok) {
    const code = (data && data.error) || 'http';
    const message = data && typeof data.message === 'string' && data.message
      ? forBrowser(code, data.message)
      : `the broker answered ${response.status} ${response.statusText} without an explanation; see its log`;
    throw new ApiFailure(response.status, code, message, data && data.field);
  }
  return data;
}

// `GET /v1/meta`, once: the limits the broker checks (so a mistake is named before upload),
// its audit actions and alert names, its OAuth redirect URI. It needs no token.
export async function loadMeta() {
  if (!state.meta) state.meta = await api('GET', 'v1/meta');
  return state.meta;
}

// The broker's limits (`maestro_wire::meta::Limits`); loaded before the first view.
export const limits = () => state.meta.limits;

export async function loadKinds() {
  if (!state.kinds) {
    const view = await api('GET', 'v1/kinds');
    state.kinds = view.kinds;
  }
  return state.kinds;
}

export const kindByName = (name) => (state.kinds || []).find((k) => k.name === name);
