// The broker's user API: one fetch wrapper, its failure type, and the catalog of kinds.

import { BASE, TOKEN_KEY } from './constants.js';
import { state } from './state.js';
import { $ } from './util.js';

// ---------------------------------------------------------------- the API

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// A mistake in a form, found before anything is sent.
export class Invalid extends Error {}

export const token = () => sessionStorage.getItem(TOKEN_KEY);

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
    const message = data && typeof data.message === 'string' && data.message
      ? data.message
      : `the broker answered ${response.status} ${response.statusText} without an explanation; see its log`;
    throw new ApiFailure(response.status, (data && data.error) || 'http', message);
  }
  return data;
}

export async function loadKinds() {
  if (!state.kinds) {
    const view = await api('GET', 'v1/kinds');
    state.kinds = view.kinds;
  }
  return state.kinds;
}

export const kindByName = (name) => (state.kinds || []).find((k) => k.name === name);
