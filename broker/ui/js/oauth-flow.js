// An OAuth authorization in progress: polled until the callback stored the secret.

import { ApiFailure, api, forBrowser } from './api.js';
import { OPEN_STATES, POLL_GRACE_MS, POLL_MS } from './constants.js';
import { clearErrors, fail, messageOf, notify, showError } from './messages.js';
import { closeTab, reloadOAuthLists } from './oauth.js';
import { route } from './router.js';
import { state } from './state.js';
import { $, badge, chips, clear, enc, formatTime, h, muted, relativeTime, renderMeta, shown, timeEl } from './util.js';

// ---------------------------------------------------------------- OAuth: an authorization

// The authorization in progress (`state.flow`): what the broker answered when it started,
// the tab sent to the provider, and what the last poll said.
export function beginFlow(kind, started, win) {
  stopFlow();
  const f = {
    kind, started, win, status: null, error: null, outcome: null, finished: false, timer: null,
    blocked: !win, cancelled: false,
  };
  state.flow = f;
  if (win) {
    try {
      win.location.replace(started.authorization_url);
    } catch (_) {
      f.blocked = true;
      closeTab(win);
      f.win = null;
    }
  }
  renderFlow();
  // The form that started it is gone: the panel takes the focus (and the screen reader's).
  $('oauth-flow').scrollIntoView({ block: 'nearest' });
  $('oauth-flow').focus({ preventScroll: true });
  f.timer = setTimeout(() => pollFlow(f), POLL_MS);
}

export function stopFlow() {
  const f = state.flow;
  if (f) clearTimeout(f.timer);
  state.flow = null;
  renderFlow();
}

export async function pollFlow(f) {
  if (state.flow !== f || f.finished) return;
  f.timer = null;
  try {
    const status = await api('GET', `v1/oauth/authorizations/${enc(f.started.id)}`);
    if (state.flow !== f || f.finished) return;
    f.status = status;
    f.error = null;
    if (!OPEN_STATES.includes(status.state)) {
      finishFlow(f);
      return;
    }
  } catch (err) {
    if (state.flow !== f || f.finished) return;
    if (err instanceof ApiFailure && err.status === 401) {
      stopFlow();
      fail(err);
      return;
    }
    if (err instanceof ApiFailure && err.status === 404) {
      f.outcome = err.message;
      finishFlow(f);
      return;
    }
    f.error = messageOf(err);
  }
  if (Date.now() > Date.parse(f.started.expires_at) + POLL_GRACE_MS) {
    f.outcome = `no answer came before the authorization expired at ${formatTime(f.started.expires_at)}; `
      + 'nothing was stored: start again';
    finishFlow(f);
    api('POST', `v1/oauth/authorizations/${enc(f.started.id)}/cancel`).catch(() => null);
    return;
  }
  renderFlow();
  f.timer = setTimeout(() => pollFlow(f), POLL_MS);
}

export function finishFlow(f) {
  f.finished = true;
  clearTimeout(f.timer);
  const done = f.status && f.status.state === 'done';
  // The provider's tab ends on the broker's own page; once the secret is stored it has
  // nothing more to say (a failure page stays open for the user to read).
  if (done || f.cancelled) closeTab(f.win);
  renderFlow();
  const name = f.started.secret_name;
  if (done) notify(f.kind === 'reconnect' ? `Reconnected ${name}.` : `Connected ${name}.`);
  // Show the new state where it is on screen; a form being filled in there stays as it is.
  const hash = location.hash;
  if (hash === `#/secrets/${enc(name)}/reconnect`) location.hash = `#/secrets/${enc(name)}`;
  else if (hash === '#/oauth') reloadOAuthLists(true);
  else if (hash === `#/secrets/${enc(name)}` || hash === '#/secrets') route({ keepErrors: true });
}

export async function onFlowCancel() {
  const f = state.flow;
  if (!f || f.finished) return;
  clearErrors();
  clearTimeout(f.timer);
  try {
    const status = await api('POST', `v1/oauth/authorizations/${enc(f.started.id)}/cancel`);
    if (state.flow !== f || f.finished) return;
    f.status = status;
    if (!OPEN_STATES.includes(status.state)) {
      f.cancelled = status.state === 'cancelled';
      finishFlow(f);
      return;
    }
  } catch (err) {
    if (state.flow !== f) return;
    if (err instanceof ApiFailure && err.status === 401) {
      stopFlow();
      fail(err);
      return;
    }
    showError(err);
  }
  // Exchanging already (the provider answered): it can no longer be cancelled; see it end.
  f.timer = setTimeout(() => pollFlow(f), POLL_MS);
}

export function onFlowOpen() {
  const f = state.flow;
  if (!f) return;
  // The link opens its own tab (without a way back to this page); stop pointing at the old.
  f.blocked = false;
  f.win = null;
  f.reopened = true;
  renderFlow();
}

export function renderFlow() {
  const panel = $('oauth-flow');
  const f = state.flow;
  if (!f) {
    panel.hidden = true;
    $('flow-open').setAttribute('href', '#/oauth');
    return;
  }
  const s = f.status;
  const st = f.outcome ? 'lost' : (s ? s.state : 'pending');
  const name = f.started.secret_name;
  const provider = f.started.provider;
  const again = f.kind === 'reconnect';
  const secret = s && s.secret;
  let title;
  let tone;
  let label;
  let text;
  if (st === 'pending') {
    title = `${again ? 'Re-authorizing' : 'Connecting'} ${name} at ${provider}`;
    tone = 'warn';
    label = 'waiting for you';
    if (f.blocked) {
      text = 'The browser did not open a new tab: open the authorization page with the button below, '
        + 'authorize Maestro there, and come back. This page continues on its own.';
    } else if (f.win && f.win.closed) {
      text = 'The authorization tab was closed before the provider sent you back. Open it again, or cancel.';
    } else {
      text = `Authorize Maestro in the ${f.reopened ? 'authorization' : 'new'} tab: ${provider}'s page lists the scopes `
        + 'below and asks for your consent. This page continues on its own once the provider sends you back.';
    }
    if (f.error) text += ` (The last check failed: ${f.error}. Retrying.)`;
  } else if (st === 'exchanging') {
    title = `${again ? 'Re-authorizing' : 'Connecting'} ${name} at ${provider}`;
    tone = 'info';
    label = 'exchanging the code';
    text = 'The provider sent you back; the broker is exchanging the code for tokens…';
  } else if (st === 'done') {
    title = again ? `Reconnected ${name}` : `Connected ${name}`;
    tone = 'ok';
    label = 'done';
    text = again
      ? `${name} has a new token${secret ? ` (version ${secret.version})` : ''}. Sessions where it is active got it at once.`
      : `Stored ${name}${secret ? ` (a ${secret.kind} secret, version ${secret.version})` : ''}. `
        + 'Activate it in a session to use it; the broker refreshes its token before it expires.';
  } else if (st === 'cancelled' && f.cancelled) {
    title = 'Authorization cancelled';
    tone = 'muted';
    label = 'cancelled';
    text = 'Nothing was stored, and the authorization link no longer works.';
  } else {
    title = st === 'expired' ? 'Authorization expired' : 'Authorization failed';
    tone = 'bad';
    label = st === 'lost' ? 'failed' : st;
    text = f.outcome || (s && s.message && forBrowser('oauth', s.message)) || 'The authorization ended without a secret; nothing was stored.';
    text = text.charAt(0).toUpperCase() + text.slice(1);
  }
  $('flow-title').textContent = shown(title);
  clear($('flow-badge')).appendChild(badge(label, tone));
  $('flow-text').textContent = shown(text);

  const rows = [
    ['Secret', st === 'done' ? h('a', { class: 'mono', href: `#/secrets/${enc(name)}` }, name) : h('span', { class: 'mono' }, name)],
    ['Provider', h('span', { class: 'mono' }, provider)],
    ['Scopes requested', chips(f.started.scopes, 'mono')],
  ];
  if (st === 'done' && secret && secret.oauth) {
    const granted = secret.oauth.scopes;
    const missing = f.started.scopes.filter((x) => !granted.includes(x));
    rows.push(['Scopes granted', [chips(granted, 'mono'), missing.length
      ? h('div', { class: 'sub' }, `The provider granted fewer than requested; not granted: ${missing.join(' ')}`) : null]]);
    rows.push(['Token expires', secret.oauth.expires_at
      ? [timeEl(secret.oauth.expires_at), ' ', muted(`(${relativeTime(secret.oauth.expires_at)})`)]
      : muted('does not expire')]);
  } else if (!f.finished) {
    rows.push(['Link valid until', [timeEl(f.started.expires_at), ' ', muted(`(${relativeTime(f.started.expires_at)})`)]]);
  }
  renderMeta($('flow-meta'), rows);

  const open = $('flow-open');
  open.setAttribute('href', f.started.authorization_url);
  open.hidden = f.finished || st === 'exchanging';
  const nudge = f.blocked || (f.win && f.win.closed);
  open.className = `button ${nudge ? 'primary' : 'ghost'}`;
  open.textContent = shown(nudge || !f.win ? 'Open the authorization page' : 'Open the authorization page again');
  $('flow-view').hidden = st !== 'done';
  $('flow-view').setAttribute('href', `#/secrets/${enc(name)}`);
  $('flow-cancel').hidden = f.finished || st === 'exchanging';
  $('flow-dismiss').hidden = !f.finished;
  panel.className = `card flow ${tone}`;
  panel.hidden = false;
}
