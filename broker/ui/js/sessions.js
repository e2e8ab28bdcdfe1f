// Sessions: the list, creating one (its enrollment token and bundle), one session's secrets.

import { ApiFailure, Invalid, api, limits } from './api.js';
import { BASE } from './constants.js';
import { clearErrors, confirmAction, fail, findFieldsWith, notify, showError } from './messages.js';
import { route, show } from './router.js';
import { state } from './state.js';
import { $, badge, clear, enc, formatSecs, formatTime, h, muted, relativeTime, renderMeta, secretLinks, secsUntil, shortId, shown, timeEl } from './util.js';

// ---------------------------------------------------------------- sessions

findFieldsWith('session-form', (field) => (field === 'label' ? $('session-label') : null));

// The time an activation has left, when it ends before its session does.
function timeLeft(activations, session, secret) {
  const a = (activations || []).find((x) => x.session === session && x.secret === secret);
  return a && a.expires_at ? muted(` ${formatSecs(secsUntil(a.expires_at))} left`) : null;
}

export function sortSessions(list) {
  return [...list].sort((a, b) => {
    if (a.state !== b.state) return a.state === 'live' ? -1 : 1;
    return b.created_at.localeCompare(a.created_at);
  });
}

export function agentBadge(s) {
  if (s.agent_connected) return badge('connected', 'ok');
  if (s.enrolled) return badge('enrolled, not connected', 'warn');
  return badge('not enrolled', '');
}

export function stateBadge(s) {
  if (s.state === 'live') return badge('live', 'ok');
  return badge(`ended${s.ended_reason ? ` (${s.ended_reason})` : ''}`, 'muted');
}

// Live state: while the sessions list or a session's page is on screen (and the tab is
// visible), the broker is asked again every LIVE_MS; the page changes only when its answer
// did, so an agent that enrolls, connects or goes shows without a refresh, and nothing blinks
// or loses a ticked box. Moving to another view (a new generation) stops it.
const LIVE_MS = 3000;
let liveTimer = null;
let liveKey = null;

function keepLive(stale, refresh) {
  clearTimeout(liveTimer);
  liveTimer = setTimeout(async () => {
    if (stale()) return;
    if (document.visibilityState === 'visible') {
      try {
        await refresh();
      } catch (err) {
        if (stale()) return;
        if (err instanceof ApiFailure && err.status === 401) {
          fail(err);
          return;
        }
        // Another failure (the broker restarting, the network): asked again at the next tick.
      }
    }
    if (!stale()) keepLive(stale, refresh);
  }, LIVE_MS);
}

export async function viewSessions(stale) {
  show('sessions', 'sessions');
  renderCreated();
  liveKey = null;
  await loadSessions(stale);
  keepLive(stale, () => loadSessions(stale));
}

async function loadSessions(stale) {
  const sessions = await api('GET', 'v1/sessions');
  if (stale()) return;
  const key = JSON.stringify(sessions);
  if (key === liveKey) return;
  liveKey = key;
  state.sessions = sortSessions(sessions);
  const body = clear(document.querySelector('#sessions-table tbody'));
  $('sessions-empty').hidden = sessions.length > 0;
  $('sessions-table').hidden = sessions.length === 0;
  for (const s of state.sessions) {
    const live = s.state === 'live';
    body.appendChild(h('tr', { class: live ? '' : 'ended' },
      h('th', { scope: 'row' },
        h('a', { href: `#/sessions/${enc(s.id)}`, class: 'strong' }, s.label || 'unlabelled'),
        h('div', { class: 'sub mono', title: s.id }, s.id.length > 16 ? `${s.id.slice(0, 16)}…` : s.id)),
      h('td', {}, stateBadge(s)),
      h('td', {}, live ? agentBadge(s) : muted('—')),
      h('td', {}, secretLinks(s.active)),
      h('td', { class: 'nowrap' }, timeEl(s.created_at)),
      h('td', { class: 'nowrap' }, live ? timeEl(s.expires_at, true) : ['ended ', timeEl(s.ended_at || s.expires_at, true)]),
      h('td', { class: 'row-actions' },
        h('a', { class: 'button small ghost', href: `#/sessions/${enc(s.id)}`, 'aria-label': `Secrets of session ${s.label || s.id}` }, live ? 'Secrets' : 'View'),
        live ? h('button', { type: 'button', class: 'small danger-ghost', 'aria-label': `End session ${s.label || s.id}`, onclick: () => endSession(s) }, 'End') : null)));
  }
}

export async function onSessionCreate(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const amount = Number($('session-ttl').value);
  const unit = Number($('session-ttl-unit').value);
  const label = $('session-label').value.trim();
  if (!Number.isInteger(amount) || amount < 1) {
    showError(new Invalid('the lifetime is a whole number, 1 or more', 'session-ttl'), form);
    return;
  }
  const ttl = amount * unit;
  if (ttl > limits().max_session_ttl_secs) {
    const days = Math.floor(limits().max_session_ttl_secs / 86400);
    showError(new Invalid(`a session lives at most ${days} days; pick a shorter lifetime`, 'session-ttl'), form);
    return;
  }
  const body = { ttl_seconds: ttl };
  if (label) body.label = label;
  if ($('session-decoys').checked) body.decoys = true;
  try {
    state.created = await api('POST', 'v1/sessions', body);
    $('session-label').value = '';
    renderCreated();
    notify(`Created session ${state.created.session.label || state.created.session.id}.`);
    liveKey = null;
    await loadSessions(() => false);
    $('created-copy').focus();
  } catch (err) {
    fail(err, form);
  }
}

export function renderCreated() {
  const card = $('session-created');
  const c = state.created;
  if (!c) {
    card.hidden = true;
    $('created-token').value = '';
    return;
  }
  const s = c.session;
  clear($('created-text')).append(
    'Session ', h('a', { href: `#/sessions/${enc(s.id)}`, class: 'mono' }, s.id),
    s.label ? ` (${s.label})` : '', ` lives until ${formatTime(s.expires_at)}. `,
    h('a', { href: `#/sessions/${enc(s.id)}` }, 'Activate secrets in it'), '.');
  $('created-token').value = c.enrollment_token;
  $('created-expiry').textContent = `The token works once and expires at ${formatTime(c.enrollment_expires_at)} `
    + `(${relativeTime(c.enrollment_expires_at)}). It is not shown again.`;
  card.hidden = false;
}

export function forgetCreated() {
  state.created = null;
  $('created-token').value = '';
  $('session-created').hidden = true;
}

export async function onCopyToken() {
  const c = state.created;
  if (!c) return;
  try {
    await navigator.clipboard.writeText(c.enrollment_token);
    notify('Enrollment token copied.');
  } catch (_) {
    const input = $('created-token');
    input.focus();
    input.select();
    notify('Press Ctrl+C (or ⌘C) to copy the selected token.');
  }
}

export function onDownloadBundle() {
  const c = state.created;
  if (!c) return;
  // The fields of `maestro_wire::agent_api::Bundle`, which `maestro-agent run --bundle` reads.
  // The broker's --public-url when it has one: the page's own address (often 127.0.0.1) may
  // not be reachable from a sandbox.
  const bundle = {
    broker_url: c.broker_url || BASE.href.replace(/\/$/, ''),
    ca_pem: c.ca_pem,
    session_id: c.session.id,
    enrollment_token: c.enrollment_token,
    enrollment_expires_at: c.enrollment_expires_at,
  };
  const blob = new Blob([`${JSON.stringify(bundle, null, 2)}\n`], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: `maestro-bundle-${c.session.id}.json`, hidden: true });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  // A browser cannot set a downloaded file's mode: say what `--bundle-out` does by itself.
  notify(`Saved maestro-bundle-${c.session.id}.json. It holds a one-time enrollment token: `
    + 'keep it private (chmod 600 it), hand it only to the sandbox, delete it once enrolled.');
}

export async function endSession(s) {
  clearErrors();
  const yes = await confirmAction({
    title: `End session ${s.label || shortId(s.id)}?`,
    text: 'Its agent drops every secret and unmounts them at once, and its certificate is '
      + 'refused from then on. Ending is final.',
    ok: 'End session',
  });
  if (!yes) return;
  try {
    const ended = await api('POST', `v1/sessions/${enc(s.id)}/end`);
    if (state.created && state.created.session.id === ended.id) forgetCreated();
    notify(`Ended session ${ended.label || ended.id}.`);
    route();
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------- one session: /secrets

export async function viewSession(stale, id) {
  show('session', 'sessions');
  $('session-title').textContent = shown(`Session ${shortId(id)}`);
  $('session-body').hidden = true;
  $('session-actions').hidden = true;
  clear($('session-meta'));
  clear($('active-list'));
  clear($('available-list'));
  const [info, secrets] = await Promise.all([
    api('GET', `v1/sessions/${enc(id)}`),
    api('GET', 'v1/secrets'),
  ]);
  if (stale()) return;
  state.secrets = secrets;
  renderSession(info);
  liveKey = JSON.stringify([info, secrets]);
  $('session-body').hidden = false;
  $('session-actions').hidden = false;
  keepLive(stale, () => reloadSession(stale, id));
}

// The live refresh of one session's page: the boxes the user ticked stay ticked.
async function reloadSession(stale, id) {
  const [info, secrets] = await Promise.all([
    api('GET', `v1/sessions/${enc(id)}`),
    api('GET', 'v1/secrets'),
  ]);
  if (stale()) return;
  const key = JSON.stringify([info, secrets]);
  if (key === liveKey) return;
  liveKey = key;
  const ticked = new Set([...document.querySelectorAll('#available-list .activate-box:checked')].map((b) => b.value));
  state.secrets = secrets;
  renderSession(info);
  for (const box of document.querySelectorAll('#available-list .activate-box')) box.checked = ticked.has(box.value);
}

export function renderSession(info) {
  state.current = info;
  const live = info.state === 'live';
  $('session-title').textContent = shown(info.label ? `Session ${info.label}` : `Session ${shortId(info.id)}`);
  renderMeta($('session-meta'), [
    ['ID', h('span', { class: 'mono' }, info.id)],
    ['State', stateBadge(info)],
    ['Agent', live ? agentBadge(info) : muted('—')],
    ['Created', timeEl(info.created_at)],
    [live ? 'Expires' : 'Ended', live
      ? [timeEl(info.expires_at), ' ', muted(`(${relativeTime(info.expires_at)})`)]
      : timeEl(info.ended_at || info.expires_at)],
  ]);
  $('session-end').hidden = !live;
  $('activate-form').hidden = !live;
  $('deactivate-all').hidden = !live || info.active.length === 0;

  const byName = new Map(state.secrets.map((s) => [s.name, s]));
  const activeList = clear($('active-list'));
  $('active-empty').hidden = info.active.length > 0;
  for (const name of info.active) {
    const s = byName.get(name);
    activeList.appendChild(h('li', {},
      h('div', { class: 'pick-main' },
        h('a', { class: 'mono strong', href: `#/secrets/${enc(name)}` }, name),
        s ? [' ', badge(s.kind, 'kind')] : null,
        timeLeft(info.activations, info.id, name),
        s ? h('div', { class: 'sub' }, s.variables.join(', ')) : null),
      live ? h('button', {
        type: 'button', class: 'small ghost', 'aria-label': `Deactivate ${name}`,
        onclick: () => changeActivation('deactivate', [name]),
      }, 'Deactivate') : null));
  }

  const available = state.secrets.filter((s) => !info.active.includes(s.name));
  const list = clear($('available-list'));
  $('available-empty').hidden = available.length > 0;
  $('activate-submit').hidden = available.length === 0;
  for (const s of available) {
    const boxId = `activate-${s.name}`;
    list.appendChild(h('li', {},
      h('input', { type: 'checkbox', id: boxId, value: s.name, class: 'activate-box' }),
      h('label', { for: boxId, class: 'pick-main' },
        h('span', { class: 'mono strong' }, s.name), ' ', badge(s.kind, 'kind'),
        h('span', { class: 'sub block' }, s.variables.join(', ') || 'no variables'))));
  }
}

export async function changeActivation(verb, names) {
  clearErrors();
  const info = state.current;
  if (!info || !info.id) return;
  try {
    const updated = await api('POST', `v1/sessions/${enc(info.id)}/${verb}`, { names });
    notify(`${verb === 'activate' ? 'Activated' : 'Deactivated'} ${names.join(', ')}.`);
    state.secrets = await api('GET', 'v1/secrets');
    renderSession(updated);
  } catch (err) {
    fail(err, verb === 'activate' ? $('activate-form') : null);
  }
}

export async function onActivateSubmit(ev) {
  ev.preventDefault();
  const names = [...document.querySelectorAll('#available-list .activate-box:checked')].map((b) => b.value);
  if (names.length === 0) {
    clearErrors();
    showError('tick at least one secret to activate', ev.currentTarget);
    return;
  }
  await changeActivation('activate', names);
}

export async function onDeactivateAll() {
  const info = state.current;
  if (info && info.active && info.active.length) await changeActivation('deactivate', [...info.active]);
}

export async function onEndCurrent() {
  if (state.current && state.current.id) await endSession(state.current);
}
