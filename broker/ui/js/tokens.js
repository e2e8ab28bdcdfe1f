// API tokens and service accounts: the list of the user's tokens (their own and their service
// accounts'), creating one (its value shown once), revoking one; the service accounts, creating
// and removing one. "Tokens of" switches to a team the user administers: its service accounts
// (`team/NAME`) and their tokens, which act as the team (`?team=` on the same routes). Every route needs the `admin` scope: a token without it is refused, and the
// page says so instead of showing empty lists.
//
// A new token's value is held in one read-only input only while its box is shown: it is wiped
// when the box is dismissed, when the user leaves this section and on sign-out (`forgetNewToken`).
// It is never put in the address, in storage, in `state` or in a log.

import { ApiFailure, Invalid, api, limits } from './api.js';
import { clearErrors, confirmAction, copyText, fail, findFieldsWith, notify } from './messages.js';
import { route, show, signOut } from './router.js';
import { state } from './state.js';
import { $, badge, chips, clear, enc, formatTime, h, muted, shown, timeEl } from './util.js';

// Token and service account names (`maestro_wire::tokens::is_valid_name`).
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const DAY = 86400;
// The expiry choices; any longer than the broker allows (`max_token_ttl_secs`) is dropped.
const EXPIRIES = [
  ['1 day', DAY], ['7 days', 7 * DAY], ['30 days', 30 * DAY], ['90 days', 90 * DAY],
  ['1 year', 365 * DAY], ['never', null],
];
const DEFAULT_EXPIRY = String(90 * DAY);
// The public id of the token whose value the box shows (an id, not the value): revoking that
// token takes its now useless value off the screen too.
let shownId = null;

// A refusal naming `name` or `scopes` is shown beside its input.
findFieldsWith('token-form', (field) => ({ name: $('token-name'), scopes: $('token-scope-boxes'), service_account: $('token-for') })[field] || null);
findFieldsWith('account-form', (field) => ({ name: $('account-name'), description: $('account-description') })[field] || null);

// Wipes the token shown once and hides its box.
export function forgetNewToken() {
  shownId = null;
  $('token-created-value').value = '';
  $('token-created-text').textContent = '';
  $('token-created').hidden = true;
}

export const copyNewToken = () => copyText($('token-created-value'), 'API token');

// The form's choices that come from the broker: scope checkboxes and expiries, built once so
// that what the user ticked and chose survives a re-render after a refusal.
function buildForm() {
  const boxes = $('token-scope-boxes');
  if (boxes.childElementCount === 0) {
    for (const scope of state.meta.token_scopes) {
      const id = `tscope-${scope.replace(/[^a-z]/g, '-')}`;
      boxes.appendChild(h('div', { class: 'check' },
        h('input', { type: 'checkbox', id, value: scope }),
        h('label', { for: id, class: 'mono' }, scope)));
    }
  }
  const expiry = $('token-expiry');
  if (expiry.childElementCount === 0) {
    for (const [label, secs] of EXPIRIES) {
      if (secs !== null && secs > limits().max_token_ttl_secs) continue;
      expiry.appendChild(h('option', { value: secs === null ? 'never' : String(secs) }, label));
    }
    expiry.value = DEFAULT_EXPIRY;
    // `form.reset()` (sign-out) goes back to the default too.
    for (const o of expiry.options) o.defaultSelected = o.value === DEFAULT_EXPIRY;
  }
}

// Refills "For" with the user (not for a team: its tokens belong to its service accounts) and
// the service accounts, keeping the choice when it remains.
function renderFor(accounts) {
  const select = $('token-for');
  const before = select.value;
  clear(select);
  if (!state.tokensTeam) {
    select.appendChild(h('option', { value: '' }, state.whoami ? `you (${state.whoami})` : 'you'));
  }
  for (const a of accounts) select.appendChild(h('option', { value: a.name }, `service account ${a.name}`));
  select.value = accounts.some((a) => a.name === before) ? before : (select.options[0] || {}).value || '';
}

// "Tokens of": you, and the teams you may manage service accounts of (admin or owner).
function renderOwners(teams) {
  const select = $('tokens-owner');
  const managed = teams.filter((t) => t.role === 'admin' || t.role === 'owner');
  if (!managed.some((t) => t.name === state.tokensTeam)) state.tokensTeam = '';
  clear(select);
  select.appendChild(h('option', { value: '' }, 'you'));
  for (const t of managed) select.appendChild(h('option', { value: t.name }, `team ${t.name}`));
  select.value = state.tokensTeam;
  $('tokens-owner-field').hidden = managed.length === 0;
}

export function onTokensOwner() {
  state.tokensTeam = $('tokens-owner').value;
  forgetNewToken();
  clearErrors();
  route();
}

// The query of the lists: `team=TEAM` for the team shown, or nothing (the user's own).
const teamQuery = () => (state.tokensTeam ? `team=${enc(state.tokensTeam)}` : '');

function refused(yes, message) {
  $('tokens-refused').hidden = !yes;
  $('tokens-refused').textContent = shown(yes ? message : '');
  $('tokens-body').hidden = yes;
}

export async function viewTokens(stale) {
  show('tokens', 'tokens');
  buildForm();
  let answers;
  try {
    const teams = await api('GET', 'v1/teams');
    if (stale()) return;
    renderOwners(teams);
    answers = await Promise.all([api('GET', `v1/tokens?${teamQuery()}`),
      api('GET', `v1/service-accounts?${teamQuery()}`), api('GET', 'v1/whoami')]);
  } catch (err) {
    if (stale()) return;
    // Not an error of the page: this token may not manage tokens. Said here, worded for the
    // browser (the broker's message speaks of scopes to the CLI).
    if (err instanceof ApiFailure && err.status === 403) {
      refused(true, 'The token this tab signed in with lacks the admin scope, which managing API tokens and '
        + 'service accounts needs. Sign out and sign in with an admin token to manage them.');
      return;
    }
    throw err;
  }
  if (stale()) return;
  const [tokens, accounts, who] = answers;
  refused(false);
  state.whoami = who.user;
  state.tokenId = who.token_id;
  state.tokens = tokens;
  renderTokens(tokens);
  renderAccounts(accounts);
  renderFor(accounts);
}

function renderTokens(tokens) {
  const body = clear(document.querySelector('#tokens-table tbody'));
  $('tokens-empty').hidden = tokens.length > 0;
  $('tokens-table').hidden = tokens.length === 0;
  for (const t of tokens) {
    const current = t.id === state.tokenId;
    body.appendChild(h('tr', {},
      h('th', { scope: 'row' }, h('span', { class: 'mono strong' }, t.name),
        current ? [' ', badge('this tab', 'info')] : null),
      h('td', {}, t.service_account ? h('span', { class: 'mono' }, t.service_account) : muted('you')),
      h('td', {}, chips(t.scopes, 'mono')),
      h('td', {}, timeEl(t.created_at, true)),
      h('td', {}, t.expires_at ? timeEl(t.expires_at, true) : muted('never'),
        t.expired ? [' ', badge('expired', 'bad')] : null),
      h('td', {}, t.last_used_at ? timeEl(t.last_used_at, true) : muted('never used')),
      h('td', { class: 'row-actions' }, h('button', {
        type: 'button', class: 'small danger-ghost', 'aria-label': `Revoke token ${t.name}`,
        onclick: () => revokeToken(t),
      }, 'Revoke'))));
  }
}

function renderAccounts(accounts) {
  const body = clear(document.querySelector('#accounts-table tbody'));
  $('accounts-empty').hidden = accounts.length > 0;
  $('accounts-table').hidden = accounts.length === 0;
  for (const a of accounts) {
    body.appendChild(h('tr', {},
      h('th', { scope: 'row', class: 'mono' }, a.name),
      h('td', { class: 'detail' }, a.description || muted('—')),
      h('td', { class: 'num' }, String(a.tokens)),
      h('td', {}, timeEl(a.created_at, true)),
      h('td', { class: 'row-actions' }, h('button', {
        type: 'button', class: 'small danger-ghost', 'aria-label': `Remove service account ${a.name}`,
        onclick: () => removeAccount(a),
      }, 'Remove'))));
  }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

async function revokeToken(t) {
  clearErrors();
  const current = t.id === state.tokenId;
  const holder = t.service_account ? `service account ${t.service_account}` : 'you';
  const yes = await confirmAction({
    title: `Revoke token ${t.name}?`,
    text: current
      ? 'This is the token this tab signed in with: once revoked, this tab is signed out, and every '
        + 'program using it is refused at once.'
      : `Every program using it (acting for ${holder}) is refused at once; it cannot be restored.`,
    ok: 'Revoke token',
  });
  if (!yes) return;
  try {
    await api('DELETE', `v1/tokens/${enc(t.id)}`);
    if (current) {
      signOut(`You revoked token ${t.name}, the one this tab signed in with: sign in with another token.`);
      return;
    }
    if (t.id === shownId) forgetNewToken();
    notify(`Token ${t.name} revoked.`);
    route({ keepErrors: true });
  } catch (err) {
    fail(err);
  }
}

async function removeAccount(a) {
  clearErrors();
  const n = a.tokens;
  // The tab's own token may be one of them: then the tab is signed out too, and says so first.
  const mine = state.tokens.some((t) => t.id === state.tokenId && t.service_account === a.name);
  const yes = await confirmAction({
    title: `Remove service account ${a.name}?`,
    text: (n ? `Its ${plural(n, 'token')} ${n === 1 ? 'is' : 'are'} revoked with it: every program using `
      + `${n === 1 ? 'it' : 'them'} is refused at once.` : 'It has no tokens; nothing stops working.')
      + (mine ? ' One is the token this tab signed in with: this tab is signed out.' : ''),
    ok: 'Remove service account',
  });
  if (!yes) return;
  try {
    const r = await api('DELETE', `v1/service-accounts/${enc(a.name)}`);
    if (mine) {
      signOut(`You removed service account ${a.name}, whose token this tab signed in with: sign in with another token.`);
      return;
    }
    if (state.tokens.some((t) => t.id === shownId && t.service_account === a.name)) forgetNewToken();
    notify(`Service account ${a.name} removed; ${plural(r.revoked, 'token')} revoked.`);
    route({ keepErrors: true });
  } catch (err) {
    fail(err);
  }
}

export async function onTokenCreate(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const name = $('token-name').value.trim();
  const scopes = [...$('token-scope-boxes').querySelectorAll('input:checked')].map((b) => b.value);
  const expiry = $('token-expiry').value;
  const account = $('token-for').value;
  try {
    if (!NAME.test(name)) {
      throw new Invalid(`"${name}" is not a token name: 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (ci-deploy)`, 'token-name');
    }
    if (scopes.length === 0) throw new Invalid('tick at least one scope: a token without one can do nothing', 'token-scope-boxes');
    if (state.tokensTeam && !account) {
      throw new Invalid(`a token of team ${state.tokensTeam} is a service account's: create one below first`, 'token-for');
    }
    const body = { name, scopes };
    if (expiry !== 'never') body.expires_in_secs = Number(expiry);
    if (account) body.service_account = account;
    const created = await api('POST', 'v1/tokens', body);
    // Only the typed name and ticks go: the choices stay for the next token.
    $('token-name').value = '';
    for (const b of $('token-scope-boxes').querySelectorAll('input')) b.checked = false;
    const i = created.info;
    $('token-created-text').textContent = shown(`Token ${i.name}, for ${i.service_account ? `service account ${i.service_account}` : 'you'}, `
      + `with ${i.scopes.join(', ')}; ${i.expires_at ? `it expires ${formatTime(i.expires_at)}` : 'it never expires'}.`);
    $('token-created-value').value = created.token;
    shownId = i.id;
    $('token-created').hidden = false;
    $('token-created').scrollIntoView({ block: 'nearest' });
    notify(`Token ${i.name} created.`);
    route({ keepErrors: true });
  } catch (err) {
    fail(err, form);
  }
}

export async function onAccountCreate(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const name = $('account-name').value.trim();
  const description = $('account-description').value.trim();
  try {
    if (!NAME.test(name)) {
      throw new Invalid(`"${name}" is not a service account name: 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (ci)`, 'account-name');
    }
    const body = { name: state.tokensTeam ? `${state.tokensTeam}/${name}` : name };
    if (description) body.description = description;
    await api('POST', 'v1/service-accounts', body);
    form.reset();
    notify(`Service account ${body.name} created; create its tokens above ("For").`);
    route({ keepErrors: true });
  } catch (err) {
    fail(err, form);
  }
}
