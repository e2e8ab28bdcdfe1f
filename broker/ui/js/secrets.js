// Secrets: the list, one secret's page (metadata, usage, history), delete, compromised.

import { ApiFailure, Invalid, api, kindByName, loadKinds } from './api.js';
import { clearErrors, confirmAction, fail, notify } from './messages.js';
import { openReconnect, renderSecretOAuth } from './oauth.js';
import { route, show } from './router.js';
import { state } from './state.js';
import { $, actionBadge, badge, chips, clear, detailText, enc, formatSecs, formatTime, h, muted, relativeTime, renderMeta, secsUntil, sessionLink, sessionLinks, shortId, shown, timeEl } from './util.js';

// ---------------------------------------------------------------- secrets

export async function viewSecrets(stale) {
  show('secrets', 'secrets');
  const secrets = await api('GET', 'v1/secrets');
  if (stale()) return;
  state.secrets = secrets;
  const body = clear(document.querySelector('#secrets-table tbody'));
  $('secrets-empty').hidden = secrets.length > 0;
  $('secrets-table').hidden = secrets.length === 0;
  // Your own secrets first, then each team's under a heading row (the broker lists them so).
  let group;
  for (const s of secrets) {
    if ((s.team || null) !== group) {
      group = s.team || null;
      body.appendChild(h('tr', { class: 'group-row' },
        h('th', { scope: 'rowgroup', colspan: '7' },
          group ? h('a', { href: `#/teams/${enc(group)}` }, `Team ${group}`) : 'Yours')));
    }
    body.appendChild(h('tr', { 'data-team': s.team || '' },
      h('th', { scope: 'row' },
        h('a', { class: 'mono strong', href: `#/secrets/${enc(s.name)}` }, s.name),
        s.description ? h('div', { class: 'sub' }, s.description) : null,
        s.oauth && s.oauth.needs_reauth ? h('div', {}, badge('needs re-authorization', 'bad')) : null,
        s.compromised_at ? h('div', {}, compromisedBadge(s)) : null,
        s.rotation_due ? h('div', {}, rotationBadge(s)) : null,
        s.alerts > 0 ? h('div', {}, h('a', { href: `#/alerts/${enc(s.name)}`, title: 'Alerts not acknowledged' },
          badge(`${s.alerts} alert${s.alerts > 1 ? 's' : ''}`, 'bad'))) : null),
      h('td', {}, badge(s.kind, 'kind'), s.exposure === 'sealed' ? [' ', sealedBadge(s)] : null),
      h('td', { class: 'num' }, `v${s.version}`),
      h('td', {}, chips(s.tags, 'tag')),
      h('td', {}, s.last_used_at ? timeEl(s.last_used_at, true) : muted('never')),
      h('td', {}, sessionLinks(s.active_in_sessions)),
      h('td', { class: 'row-actions' },
        h('a', { class: 'button small ghost', href: `#/secrets/${enc(s.name)}`, 'aria-label': `Usage history of ${s.name}` }, 'History'),
        h('a', { class: 'button small ghost', href: `#/secrets/${enc(s.name)}/edit`, 'aria-label': `Edit ${s.name}` }, 'Edit'),
        h('button', { type: 'button', class: 'small danger-ghost', 'aria-label': `Delete ${s.name}`, onclick: () => deleteSecret(s) }, 'Delete'))));
  }
}

export async function deleteSecret(meta) {
  clearErrors();
  const active = meta.active_in_sessions.length;
  const yes = await confirmAction({
    title: `Delete ${meta.name}?`,
    text: 'Its values are destroyed and cannot be recovered.'
      + (active ? ` It is active in ${active} session${active > 1 ? 's' : ''} and is removed from `
        + `${active > 1 ? 'them' : 'it'} at once.` : '')
      + (meta.oauth ? ` Its OAuth tokens are revoked at ${meta.oauth.provider} where the provider allows it.` : ''),
    ok: 'Delete secret',
  });
  if (!yes) return;
  try {
    const deleted = await api('DELETE', `v1/secrets/${enc(meta.name)}`);
    const n = deleted.deactivated_in.length;
    notify(`Deleted ${deleted.name}${n ? `; removed from ${n} session${n > 1 ? 's' : ''}` : ''}.`
      + (deleted.revocation ? ` OAuth revocation: ${deleted.revocation}.` : ''));
    if (location.hash === '#/secrets') route();
    else location.hash = '#/secrets';
  } catch (err) {
    fail(err);
  }
}

// The marker of a compromised secret, saying since when and what clears it.
export function compromisedBadge(meta) {
  const b = badge('compromised', 'bad');
  b.title = shown(`marked compromised at ${meta.compromised_at}: edit it with a new value before activating it again`);
  return b;
}

// How long ago a secret's value last changed, in seconds.
function ageOf(meta) {
  return meta.value_changed_at ? Math.max(0, (Date.now() - Date.parse(meta.value_changed_at)) / 1000) : 0;
}

// The marker of a secret past its rotation period (`--rotate-every`).
function rotationBadge(meta) {
  const b = badge('rotate', 'bad');
  b.title = `its value is ${formatSecs(ageOf(meta))} old, past its rotation period of ${formatSecs(meta.rotate_every_seconds || 0)}: rotate it at the provider, then edit it with the new value`;
  return b;
}

// The leak response: deactivate everywhere, mark, revoke where the kind allows, and say how to
// rotate the value at the provider (the catalog's steps, as the broker answers them).
export async function markCompromised(meta) {
  clearErrors();
  const active = meta.active_in_sessions.length;
  const yes = await confirmAction({
    title: `Mark ${meta.name} compromised?`,
    text: 'Use this when its value leaked (committed, pasted, logged).'
      + (active ? ` It is deactivated at once in the ${active} session${active > 1 ? 's' : ''} where it is active.` : '')
      + ' It cannot be activated again until you edit it with a new value.'
      + (meta.oauth ? ` Its OAuth tokens are revoked at ${meta.oauth.provider} where the provider allows it.` : '')
      + ' You then rotate it at the provider, following the steps shown.',
    ok: 'Mark compromised',
  });
  if (!yes) return;
  try {
    const c = await api('POST', `v1/secrets/${enc(meta.name)}/compromised`);
    const n = c.deactivated_in.length;
    notify(`Marked ${c.name} compromised${n ? `; removed from ${n} session${n > 1 ? 's' : ''}` : ''}. `
      + `Revocation: ${c.revocation}. Rotate it at the provider: ${c.rotation.steps}`
      + (c.rotation.link ? ` (${c.rotation.link})` : '') + '. Then edit it with the new value.');
    route();
  } catch (err) {
    fail(err);
  }
}

export async function viewSecret(stale, name, opts) {
  // The same secret drawn again (after a refresh, a reconnect): its page stays until the new
  // answers replace it, rather than blinking.
  const again = !$('view-secret').hidden && state.current && state.current.name === name;
  show('secret', 'secrets');
  $('secret-title').textContent = shown(name);
  $('reconnect-form').hidden = true;
  if (!again) {
    $('secret-body').hidden = true;
    $('secret-actions').hidden = true;
    $('secret-oauth').hidden = true;
    clear($('secret-meta'));
    clear(document.querySelector('#history-table tbody'));
    $('history-empty').hidden = true;
    $('usage-card').hidden = true;
  }
  const [meta, history, usage] = await Promise.all([
    api('GET', `v1/secrets/${enc(name)}`),
    api('GET', `v1/secrets/${enc(name)}/history`),
    api('GET', `v1/secrets/${enc(name)}/usage`),
  ]);
  if (stale()) return;
  state.current = meta;
  await loadKinds().catch(() => null);
  if (stale()) return;
  if (meta.oauth) {
    // The provider's allowed scopes, for Reconnect; the page works without them.
    try {
      state.providers = await api('GET', 'v1/oauth/providers');
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 401) throw err;
    }
    if (stale()) return;
  }
  $('secret-edit').setAttribute('href', `#/secrets/${enc(name)}/edit`);
  const kind = kindByName(meta.kind);
  const rows = [
    ...(meta.compromised_at ? [['Compromised', [compromisedBadge(meta), ' ', timeEl(meta.compromised_at),
      h('div', { class: 'sub' }, 'edit it with a new value before activating it again'),
      kind && kind.rotation ? h('div', { class: 'sub' }, `Rotate it at the provider: ${kind.rotation.steps}`,
        kind.rotation.link ? [' ', h('a', { href: kind.rotation.link, rel: 'noreferrer noopener', target: '_blank' }, 'documentation')] : null) : null]]] : []),
    ['Kind', [badge(meta.kind, 'kind'), kind ? ` ${kind.title}` : '']],
    ['Exposure', meta.exposure === 'sealed'
      ? [sealedBadge(meta), h('div', { class: 'sub' }, 'the sandbox sees placeholders; the agent puts the values into requests to the hosts below only')]
      : [badge('plain', 'muted'), h('div', { class: 'sub' }, 'the sandbox sees the values')]],
    ['Hosts', meta.exposure === 'sealed' ? hostsView(meta) : muted('—')],
    ['Version', `v${meta.version}`],
    ['Description', meta.description || muted('—')],
    ['Tags', chips(meta.tags, 'tag')],
    ['Fields', chips(meta.field_names.map((n) => (Object.hasOwn(meta.shown_fields || {}, n) ? `${n}=${meta.shown_fields[n]}` : n)), 'mono')],
    ['Variables', chips(meta.variables, 'mono')],
    ['Files', meta.files.length
      ? [chips(meta.files, 'mono'), h('div', { class: 'sub' }, 'under the mount, /run/secrets by default')]
      : muted('—')],
    ['Created', timeEl(meta.created_at)],
    ['Updated', timeEl(meta.updated_at)],
    ['Last used', meta.last_used_at ? [timeEl(meta.last_used_at), ' ', muted(`(${relativeTime(meta.last_used_at)})`)] : muted('never')],
    ['Used by sessions', sessionLinks(meta.used_by_sessions)],
    ['Active in sessions', [sessionLinks(meta.active_in_sessions),
      (meta.activations || []).filter((a) => a.expires_at).map((a) =>
        h('div', { class: 'sub' }, shown(`${shortId(a.session)}${a.session_label ? ` (${a.session_label})` : ''}: ${formatSecs(secsUntil(a.expires_at))} left`)))]],
    ['Value changed', meta.value_changed_at
      ? [timeEl(meta.value_changed_at), ' ', muted(`(${formatSecs(ageOf(meta))} ago${meta.rotate_every_seconds ? `; rotate every ${formatSecs(meta.rotate_every_seconds)}` : ''})`),
        meta.rotation_due ? [' ', rotationBadge(meta)] : null]
      : muted('—')],
  ];
  renderMeta($('secret-meta'), rows);
  renderSecretOAuth(meta);
  renderUsage(usage);
  renderHistory(history);
  $('secret-body').hidden = false;
  $('secret-actions').hidden = false;
  if (meta.oauth && opts && opts.reconnect) openReconnect();
}

// The list's and the view's marker of a sealed secret, naming its hosts on hover.
export function sealedBadge(meta) {
  const b = badge('sealed', 'info');
  b.title = shown(`values sent only to ${(meta.hosts || []).join(', ') || 'no host'}`);
  return b;
}

export function hostsView(meta) {
  const hosts = meta.hosts || [];
  if (hosts.length === 0) return h('span', { class: 'badge bad' }, 'none: set them with Edit');
  const own = meta.user_hosts || [];
  return [chips(hosts, 'mono'), own.length ? null : h('div', { class: 'sub' }, "the kind's defaults")];
}

// What the catalog says of sealing a kind: `null` when it cannot be sealed.
export function sealOf(kind) {
  const s = kind && kind.sealing;
  if (!s || s.sealing === 'unsupported') return null;
  return s;
}

// Shows or hides the hosts input and says what sealing the selected kind means.
export function renderExposure() {
  const kind = kindByName($('secret-kind').value);
  const select = $('secret-exposure');
  const seal = sealOf(kind);
  const sealedOption = select.querySelector('option[value="sealed"]');
  sealedOption.disabled = !seal;
  if (!seal && select.value === 'sealed') select.value = 'plain';
  let help;
  if (!kind) help = '';
  else if (!seal) help = `A ${kind.name} secret cannot be sealed: ${kind.sealing.why}`;
  else if (select.value === 'plain') help = 'Tools read the values as they are. Sealed keeps them out of the sandbox.';
  else if (seal.sealing === 'agent') help = `The agent serves ${seal.served}.`;
  else help = `Substituted in: ${seal.substituted_in}.`;
  $('secret-exposure-help').textContent = shown(help);
  // An agent-served kind (ssh) takes its hosts from a field, not from this list.
  const sealed = select.value === 'sealed' && !!seal && seal.sealing !== 'agent';
  $('secret-hosts-row').hidden = !sealed;
  if (seal && seal.sealing !== 'agent') {
    let defaults;
    if (seal.host_field) defaults = `the host of its ${seal.host_field} field`;
    else if (seal.hosts.length) defaults = seal.hosts.join(', ');
    else defaults = null;
    $('secret-hosts-help').textContent = shown(defaults
      ? `Empty: the kind's defaults (${defaults}). To narrow them, name hosts among these, separated by commas.`
      : 'Required: the hosts its values may be sent to, separated by commas (api.example.com, *.example.com).');
  }
}

// The refusals the broker would answer, said before anything is sent.
export function checkExposure(kind, exposure, hosts) {
  if (exposure !== 'sealed') return;
  const seal = sealOf(kind);
  if (!seal) throw new Invalid(`a ${kind.name} secret cannot be sealed: ${kind.sealing.why}`, 'secret-exposure');
  if (seal.sealing === 'agent') {
    if (hosts.length) throw new Invalid(`a sealed ${kind.name} secret takes its hosts from its ${seal.hosts} field, not from the hosts list`, 'secret-hosts');
    return;
  }
  if (seal.hosts.length === 0 && !seal.host_field && hosts.length === 0) {
    throw new Invalid('a sealed generic secret needs the hosts its values may be sent to: name them, separated by commas (api.example.com, *.example.com)', 'secret-hosts');
  }
}

export function parseHosts(text) {
  return text.split(/[\s,]+/).map((t) => t.trim()).filter((t) => t.length > 0);
}

export function renderHistory(events) {
  const body = clear(document.querySelector('#history-table tbody'));
  const sorted = [...events].sort((a, b) => b.seq - a.seq);
  $('history-empty').hidden = sorted.length > 0;
  $('history-table').hidden = sorted.length === 0;
  for (const e of sorted) {
    body.appendChild(h('tr', {},
      h('td', { class: 'nowrap' }, timeEl(e.at)),
      h('td', {}, actionBadge(e.action)),
      h('td', {}, e.session ? sessionLink(e.session, e.session_label) : muted('—')),
      h('td', { class: 'num' }, e.pid ?? muted('—')),
      h('td', { class: 'num' }, e.uid ?? muted('—')),
      h('td', { class: 'mono' }, e.command ?? muted('—')),
      h('td', { class: 'detail' }, detailText(e))));
  }
}

export async function onCompromisedCurrent() {
  if (state.current && state.current.name) await markCompromised(state.current);
}

export async function onDeleteCurrent() {
  if (state.current && state.current.name) await deleteSecret(state.current);
}

// A secret's usage summary (`GET /v1/secrets/{name}/usage`): totals, then uses per
// session, per command and per UTC day, each with a bar against the largest.
export function renderUsage(u) {
  $('usage-card').hidden = false;
  $('usage-totals').textContent = u.uses === 0
    ? 'No uses recorded yet.'
    : `${u.uses} use${u.uses === 1 ? '' : 's'} in ${u.records} record${u.records === 1 ? '' : 's'}, `
      + `${u.sessions.length} session${u.sessions.length === 1 ? '' : 's'}; first ${formatTime(u.first_used_at)}, `
      + `last ${formatTime(u.last_used_at)}.`;
  const bar = (value, max) => h('meter', { min: 0, max: Math.max(max, 1), value, 'aria-hidden': 'true' });
  const most = (rows) => Math.max(0, ...rows.map((r) => r.uses));
  const sessions = clear(document.querySelector('#usage-sessions tbody'));
  const ms = most(u.sessions);
  for (const s of u.sessions) {
    sessions.appendChild(h('tr', {},
      h('td', {}, s.session ? sessionLink(s.session, s.label) : muted('none')),
      h('td', { class: 'num' }, String(s.uses), bar(s.uses, ms)),
      h('td', { class: 'nowrap' }, timeEl(s.first_used_at)),
      h('td', { class: 'nowrap' }, timeEl(s.last_used_at))));
  }
  const commands = clear(document.querySelector('#usage-commands tbody'));
  const mc = most(u.commands);
  for (const c of u.commands) {
    commands.appendChild(h('tr', {},
      h('td', { class: 'mono' }, c.command ?? muted('not reported')),
      h('td', { class: 'num' }, String(c.uses), bar(c.uses, mc)),
      h('td', { class: 'nowrap' }, timeEl(c.last_used_at))));
  }
  const days = clear(document.querySelector('#usage-days tbody'));
  const md = most(u.days);
  for (const d of [...u.days].reverse()) {
    days.appendChild(h('tr', {},
      h('td', { class: 'nowrap' }, d.day),
      h('td', { class: 'num' }, String(d.uses), bar(d.uses, md))));
  }
}
