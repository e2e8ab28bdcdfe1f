// OAuth integrations: presets, providers, connecting and reconnecting accounts.

import { ApiFailure, Invalid, api, limits } from './api.js';
import { PRESET_LABELS, PROVIDER_NAME, SCOPED_SECRET_NAME, VARIABLE_NAME } from './constants.js';
import { clearErrors, confirmAction, fail, findFieldsWith, notify } from './messages.js';
import { beginFlow } from './oauth-flow.js';
import { route, show } from './router.js';
import { wipeValues } from './secret-form.js';
import { state } from './state.js';
import { $, badge, chips, clear, enc, h, muted, relativeTime, renderMeta, shown, timeEl, utf8Bytes } from './util.js';

// ---------------------------------------------------------------- OAuth: presets and providers

// The presets (`maestro_wire::oauth::PRESETS`) are data the broker serves beside this script:
// endpoints, the scopes each accepts, its defaults and the scopes it always asks for.
export async function loadPresets() {
  if (!state.presets) {
    let response;
    try {
      response = await fetch(new URL('oauth-presets.json', document.baseURI), {
        cache: 'no-store', credentials: 'omit', redirect: 'error',
      });
    } catch (err) {
      throw new ApiFailure(0, 'network',
        `cannot reach the broker (${err.message}); check that it is running, then retry`);
    }
    if (!response.ok) {
      throw new ApiFailure(response.status, 'http',
        `the broker answered ${response.status} for the OAuth presets; reload the page (the broker may have been upgraded)`);
    }
    state.presets = await response.json();
  }
  return state.presets;
}

export const presetByName = (name) => (state.presets || []).find((p) => p.name === name);
export const presetLabel = (name) => PRESET_LABELS[name] || (presetByName(name) || {}).title || name;
export const providerByName = (name) => state.providers.find((p) => p.name === name);
// The scopes a provider's preset always asks for (Microsoft: offline_access).
export const impliedScopes = (provider) => ((provider && presetByName(provider.preset)) || {}).implied_scopes || [];

// Where a refusal of the broker naming a field is shown.
const PROVIDER_INPUTS = {
  name: 'provider-name', client_id: 'provider-client-id', client_secret: 'provider-client-secret',
  auth_url: 'provider-auth-url', token_url: 'provider-token-url', revoke_url: 'provider-revoke-url',
  variable: 'provider-variable', preset: 'provider-preset',
};
// Scopes are ticked (a preset's) or typed (a custom provider's): the one shown carries the message.
const visibleScopes = (boxes, text) => ($(text) && $(text).getClientRects().length ? $(text) : $(boxes));
findFieldsWith('provider-form', (field) => {
  if (field === 'scopes') return visibleScopes('provider-scope-boxes', 'provider-scope-text');
  return Object.hasOwn(PROVIDER_INPUTS, field) ? $(PROVIDER_INPUTS[field]) : null;
});
findFieldsWith('connect-form', (field) => ({ name: $('connect-name'), provider: $('connect-provider'), scopes: $('connect-scope-boxes') })[field] || null);

// The redirect URI of every provider of this broker (`GET /v1/meta`), or a provider's.
export function redirectUri() {
  return state.meta.oauth_redirect_uri || (state.providers[0] || {}).redirect_uri || '';
}

export function hostOf(url) {
  try {
    return new URL(url).host;
  } catch (_) {
    return url;
  }
}

export function isLoopback(hostname) {
  const bare = hostname.replace(/^\[|\]$/g, '');
  return bare === 'localhost' || bare === '::1' || /^127\.\d+\.\d+\.\d+$/.test(bare);
}

// RFC 6749 scope tokens: printable ASCII without space, `"` and `\`.
export function isValidScope(scope) {
  return scope.length > 0 && scope.length <= limits().oauth_max_scope_bytes && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(scope);
}

// `field`: the input (or its id) the scopes came from, where a refusal is shown.
export function checkScopes(scopes, field) {
  if (scopes.length > limits().oauth_max_scopes) throw new Invalid(`at most ${limits().oauth_max_scopes} scopes; ${scopes.length} were given`, field);
  for (const s of scopes) {
    if (!isValidScope(s)) {
      throw new Invalid(`"${s.slice(0, 80)}" is not a valid scope: 1 to ${limits().oauth_max_scope_bytes} printable characters without spaces, quotes or backslashes`, field);
    }
  }
  return scopes;
}

// Scopes typed as text: separated by spaces or commas, repeats dropped.
export function parseScopeText(text, field) {
  const out = [];
  for (const s of text.split(/[\s,]+/)) if (s && !out.includes(s)) out.push(s);
  return checkScopes(out, field);
}

export function checkUrl(label, text, field) {
  if (utf8Bytes(text) > limits().oauth_max_url_bytes) throw new Invalid(`the ${label} is longer than ${limits().oauth_max_url_bytes} bytes`, field);
  let url;
  try {
    url = new URL(text);
  } catch (_) {
    throw new Invalid(`the ${label} "${text.slice(0, 80)}" is not a URL; copy it from the provider's documentation`, field);
  }
  const https = url.protocol === 'https:';
  if (!https && !(url.protocol === 'http:' && isLoopback(url.hostname))) {
    throw new Invalid(`the ${label} must be an HTTPS address (plain HTTP only on 127.0.0.1, ::1 or localhost)`, field);
  }
  return text;
}

// Checkboxes for scopes, all in `checked` ticked; the implied ones ticked and fixed.
export function renderScopeBoxes(container, prefix, scopes, checked, implied) {
  clear(container);
  scopes.forEach((scope, i) => {
    const id = `${prefix}-${i}`;
    const fixed = implied.includes(scope);
    container.appendChild(h('div', { class: 'check scope' },
      h('input', {
        type: 'checkbox', id, value: scope, class: 'scope-box',
        checked: fixed || checked.includes(scope), disabled: fixed,
      }),
      h('label', { for: id }, h('span', { class: 'mono' }, scope),
        fixed ? h('span', { class: 'muted' }, ' (always asked for)') : null)));
  });
}

export const pickedScopes = (container) => [...container.querySelectorAll('.scope-box:checked')].map((b) => b.value);

export async function viewOAuth(stale) {
  show('oauth', 'oauth');
  closeOAuthForms();
  clear(document.querySelector('#providers-table tbody'));
  clear(document.querySelector('#oauth-table tbody'));
  const [providers, secrets] = await Promise.all([
    api('GET', 'v1/oauth/providers'),
    api('GET', 'v1/secrets'),
    loadPresets(),
  ]);
  if (stale()) return;
  state.providers = providers;
  state.secrets = secrets;
  renderProviders();
  renderOAuthSecrets();
  renderAdded();
}

// Reloads the lists only: a form being filled in stays as it is.
export async function reloadOAuthLists(keepErrors) {
  if (keepErrors !== true) clearErrors();
  try {
    const [providers, secrets] = await Promise.all([api('GET', 'v1/oauth/providers'), api('GET', 'v1/secrets')]);
    state.providers = providers;
    state.secrets = secrets;
    renderProviders();
    renderOAuthSecrets();
  } catch (err) {
    fail(err);
  }
}

export function closeOAuthForms() {
  $('provider-form').hidden = true;
  $('connect-form').hidden = true;
  wipeValues();
}

export function renderProviders() {
  const list = state.providers;
  const body = clear(document.querySelector('#providers-table tbody'));
  $('providers-empty').hidden = list.length > 0;
  $('providers-wrap').hidden = list.length === 0;
  $('providers-redirect').hidden = !redirectUri();
  $('providers-redirect-uri').value = redirectUri();
  for (const p of list) {
    body.appendChild(h('tr', {},
      h('th', { scope: 'row' }, h('span', { class: 'mono strong' }, p.name),
        h('div', { class: 'sub' }, `${presetLabel(p.preset)} · ${hostOf(p.auth_url)}`)),
      h('td', {}, badge(p.kind, 'kind'), h('div', { class: 'sub' }, ['access token in ', h('span', { class: 'mono' }, p.token_field)])),
      h('td', { class: 'mono wrap' }, p.client_id),
      h('td', {}, chips(p.scopes, 'mono')),
      h('td', { class: 'detail' }, p.revocation),
      h('td', { class: 'row-actions' }, h('button', {
        type: 'button', class: 'small', 'aria-label': `Connect an account with ${p.name}`,
        onclick: () => openConnect(p.name),
      }, 'Connect'), h('button', {
        type: 'button', class: 'small ghost', 'aria-label': `Edit the scopes of ${p.name}`,
        onclick: (ev) => editProviderScopes(p, ev.currentTarget),
      }, 'Edit scopes'), h('button', {
        type: 'button', class: 'small ghost', 'aria-label': `Remove ${p.name}`,
        onclick: (ev) => removeProvider(p, ev.currentTarget),
      }, 'Remove'))));
  }
}

// Edits a provider's allowed scopes (the client secret and endpoints: `maestro oauth
// providers edit`, so that a client secret is never typed into a prompt).
async function editProviderScopes(p, button) {
  clearErrors();
  const text = window.prompt(`Scopes connections through ${p.name} may ask for (space-separated; empty: the preset's defaults)`, p.scopes.join(' '));
  if (text === null) return;
  button.disabled = true;
  try {
    const scopes = text.split(/\s+/).filter((s) => s);
    const edited = await api('PATCH', `v1/oauth/providers/${enc(p.name)}`, { scopes });
    notify(`Edited ${edited.name}: scopes ${edited.scopes.join(' ') || 'none'}.`);
    await reloadOAuthLists(true);
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

// Removes a provider; the broker refuses, naming them, while secrets use it.
async function removeProvider(p, button) {
  clearErrors();
  const ok = await confirmAction({
    title: `Remove ${p.name}?`,
    text: `The OAuth provider ${p.name} and its client secret are deleted. This is refused while secrets hold its tokens.`,
    ok: 'Remove',
  });
  if (!ok) return;
  button.disabled = true;
  try {
    await api('DELETE', `v1/oauth/providers/${enc(p.name)}`);
    notify(`Removed the OAuth provider ${p.name}.`);
    await reloadOAuthLists(true);
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

export function oauthStatus(o) {
  if (o.needs_reauth) return badge('needs re-authorization', 'bad');
  if (o.expires_at && Date.parse(o.expires_at) < Date.now()) return badge('expired', 'warn');
  return badge('valid', 'ok');
}

export function renderOAuthSecrets() {
  const oauth = state.secrets.filter((s) => s.oauth);
  const body = clear(document.querySelector('#oauth-table tbody'));
  $('oauth-empty').hidden = oauth.length > 0;
  $('oauth-wrap').hidden = oauth.length === 0;
  for (const s of oauth) {
    const o = s.oauth;
    body.appendChild(h('tr', {},
      h('th', { scope: 'row' }, h('a', { class: 'mono strong', href: `#/secrets/${enc(s.name)}` }, s.name),
        h('div', { class: 'sub' }, [badge(s.kind, 'kind'), ` v${s.version}`])),
      h('td', { class: 'mono' }, o.provider),
      h('td', {}, chips(o.scopes, 'mono')),
      h('td', { class: 'nowrap' }, o.expires_at ? timeEl(o.expires_at, true) : muted('does not expire')),
      h('td', { class: 'nowrap' }, o.last_refresh_at ? timeEl(o.last_refresh_at, true) : muted('never')),
      h('td', {}, oauthStatus(o)),
      h('td', { class: 'row-actions' },
        h('button', {
          type: 'button', class: 'small ghost', 'aria-label': `Refresh the token of ${s.name} now`,
          onclick: (ev) => refreshNow(s.name, ev.currentTarget),
        }, 'Refresh now'),
        h('a', {
          class: `button small ${o.needs_reauth ? 'primary' : 'ghost'}`, href: `#/secrets/${enc(s.name)}/reconnect`,
          'aria-label': `Reconnect ${s.name}`,
        }, 'Reconnect'))));
  }
}

// ---------------------------------------------------------------- OAuth: registering a provider

export function openProviderForm(hint) {
  clearErrors();
  $('provider-form-hint').hidden = hint !== true;
  $('connect-form').hidden = true;
  $('provider-added').hidden = true;
  state.added = null;
  const form = $('provider-form');
  form.reset();
  wipeValues();
  const select = clear($('provider-preset'));
  for (const p of state.presets || []) select.appendChild(h('option', { value: p.name }, presetLabel(p.name)));
  select.value = 'github';
  $('provider-override').checked = false;
  // Known before any provider is registered: the provider's form asks for it first.
  $('provider-redirect').value = redirectUri();
  renderProviderPreset();
  form.hidden = false;
  $('provider-name').focus();
}

// Shapes the provider form after its preset: endpoints, kind, variable and scopes.
export function renderProviderPreset() {
  const preset = presetByName($('provider-preset').value);
  if (!preset) return;
  const custom = !preset.auth_url;
  const override = !custom && $('provider-override').checked;
  const kind = custom ? $('provider-kind').value : preset.kind;
  $('provider-preset-help').textContent = custom
    ? 'Any OAuth 2.0 server with the authorization code flow: give its endpoints below.'
    : `Authorization at ${hostOf(preset.auth_url)}; tokens become ${preset.kind} secrets.`;

  $('provider-override-row').hidden = custom;
  $('provider-urls').hidden = !(custom || override);
  $('provider-auth-url').placeholder = preset.auth_url || 'the authorization endpoint';
  $('provider-token-url').placeholder = preset.token_url || 'the token endpoint';
  $('provider-revoke-url').placeholder = 'optional';
  let endpoints;
  if (custom) {
    endpoints = 'The provider\'s authorization and token endpoints.';
  } else if (override) {
    endpoints = 'Both endpoints of the other server. The preset\'s revocation endpoint is not '
      + 'carried over: give that server\'s, if it has one.';
  } else {
    endpoints = `The preset's endpoints at ${hostOf(preset.auth_url)}. On deletion of a secret: `
      + `${preset.revoke_url ? `its tokens are revoked at ${hostOf(preset.revoke_url)}` : preset.no_revocation}.`;
  }
  $('provider-endpoints-help').textContent = `${endpoints} Endpoints use HTTPS; plain HTTP is `
    + 'accepted only on loopback addresses (127.0.0.1, ::1, localhost).';

  $('provider-kind-field').hidden = !custom;
  $('provider-variable-field').hidden = kind !== 'generic';
  $('provider-kind-row').hidden = !custom && kind !== 'generic';

  const boxes = $('provider-scope-boxes');
  const text = $('provider-scope-text');
  const implied = preset.implied_scopes || [];
  if (preset.accepted_scopes) {
    renderScopeBoxes(boxes, 'pscope', preset.accepted_scopes, preset.default_scopes, implied);
    boxes.hidden = false;
    $('provider-scope-text-field').hidden = true;
    $('provider-scopes-help').textContent = `The scopes connections may ask for: ${presetLabel(preset.name)}'s `
      + 'defaults are ticked. Each connection picks among these; ask for the least that works.';
  } else {
    clear(boxes);
    boxes.hidden = true;
    $('provider-scope-text-field').hidden = false;
    text.value = preset.default_scopes.join(' ');
    text.placeholder = preset.default_scopes.length ? preset.default_scopes.join(' ') : 'none; for example: read write';
    const always = implied.length ? ` ${implied.join(' ')} is always asked for: without it the provider gives no refresh token.` : '';
    const empty = preset.default_scopes.length ? `Empty: ${preset.default_scopes.join(' ')}.` : 'Empty: connections ask for no scope.';
    $('provider-scopes-help').textContent = 'The scopes connections may ask for, separated by spaces, '
      + `as the provider names them. ${empty}${always}`;
  }
}

export const stripLineBreak = (text) => text.replace(/\r?\n$/, '');

export async function onProviderSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const submit = $('provider-submit');
  submit.disabled = true;
  try {
    const preset = presetByName($('provider-preset').value);
    if (!preset) throw new Invalid('pick a provider', 'provider-preset');
    const custom = !preset.auth_url;
    const name = $('provider-name').value.trim();
    if (!PROVIDER_NAME.test(name)) {
      throw new Invalid(`"${name}" is not a provider name: 1 to 32 of a-z, 0-9, - and _, starting with a letter (github-work), or team/name for a team's`, 'provider-name');
    }
    const clientId = $('provider-client-id').value.trim();
    if (!clientId || clientId.length > limits().oauth_max_client_id_bytes || /[^\x21-\x7e]/.test(clientId)) {
      throw new Invalid(`the client id is 1 to ${limits().oauth_max_client_id_bytes} printable characters without spaces; copy it from the OAuth app's settings`, 'provider-client-id');
    }
    const secret = state.oauthFiles.has('client_secret')
      ? state.oauthFiles.get('client_secret') : $('provider-client-secret').value;
    if (!secret) throw new Invalid('give the OAuth app\'s client secret: type it, or load it from a file', 'provider-client-secret');
    if (utf8Bytes(secret) > limits().oauth_max_client_secret_bytes) {
      throw new Invalid(`the client secret is longer than ${limits().oauth_max_client_secret_bytes} bytes`, 'provider-client-secret');
    }
    if (/[\x00-\x1f\x7f]/.test(secret)) {
      throw new Invalid('the client secret holds control characters (a line break?); it is one line', 'provider-client-secret');
    }
    const body = { name, preset: preset.name, client_id: clientId };
    if (custom || $('provider-override').checked) {
      const auth = $('provider-auth-url').value.trim();
      const token = $('provider-token-url').value.trim();
      if (!auth || !token) {
        throw new Invalid(custom
          ? 'a custom provider needs its authorization and token endpoints'
          : 'give both endpoints of the other server, or untick "Use other endpoints"', auth ? 'provider-token-url' : 'provider-auth-url');
      }
      body.auth_url = checkUrl('authorization endpoint', auth, 'provider-auth-url');
      body.token_url = checkUrl('token endpoint', token, 'provider-token-url');
      const revoke = $('provider-revoke-url').value.trim();
      if (revoke) body.revoke_url = checkUrl('revocation endpoint', revoke, 'provider-revoke-url');
    }
    const kind = custom ? $('provider-kind').value : preset.kind;
    if (custom) body.kind = kind;
    const variable = $('provider-variable').value.trim();
    if (kind === 'generic' && variable) {
      if (!VARIABLE_NAME.test(variable)) {
        throw new Invalid(`"${variable}" is not a variable name: use capital letters, digits and _, not starting with a digit`, 'provider-variable');
      }
      body.variable = variable;
    }
    if (preset.accepted_scopes) {
      body.scopes = checkScopes(pickedScopes($('provider-scope-boxes')), 'provider-scope-boxes');
      if (body.scopes.length === 0) throw new Invalid('tick at least one scope that connections may ask for', 'provider-scope-boxes');
    } else {
      body.scopes = parseScopeText($('provider-scope-text').value, 'provider-scope-text');
    }
    body.client_secret = secret;
    const info = await api('POST', 'v1/oauth/providers', body);
    delete body.client_secret;
    // Registered: the client secret goes now; a refusal keeps what was typed.
    wipeValues();
    form.reset();
    form.hidden = true;
    state.added = info;
    renderAdded();
    notify(`Registered the OAuth provider ${info.name}.`);
    await reloadOAuthLists();
    $('added-copy').focus();
  } catch (err) {
    fail(err, form);
  } finally {
    submit.disabled = false;
  }
}

export function renderAdded() {
  const p = state.added;
  $('provider-added').hidden = !p;
  if (!p) {
    $('added-redirect').value = '';
    return;
  }
  $('added-title').textContent = shown(`Provider ${p.name} registered`);
  clear($('added-text')).append(
    `${presetLabel(p.preset)}: its connections make `, badge(p.kind, 'kind'),
    ' secrets, with the access token in ', h('span', { class: 'mono' }, p.token_field), '. Allowed scopes: ',
    chips(p.scopes, 'mono'), '.');
  $('added-redirect').value = p.redirect_uri;
  $('added-revocation').textContent = shown(`On deletion of its secrets: ${p.revocation}.`);
}

// ---------------------------------------------------------------- OAuth: connect, reconnect

export function openConnect(providerName) {
  clearErrors();
  $('provider-form').hidden = true;
  wipeValues();
  if (state.providers.length === 0) {
    openProviderForm(true);
    return;
  }
  const form = $('connect-form');
  form.reset();
  const select = clear($('connect-provider'));
  for (const p of state.providers) {
    select.appendChild(h('option', { value: p.name }, `${p.name} (${presetLabel(p.preset)})`));
  }
  select.value = providerName && providerByName(providerName) ? providerName : state.providers[0].name;
  renderConnectProvider();
  form.hidden = false;
  form.scrollIntoView({ block: 'nearest' });
  $('connect-name').focus();
}

export function renderConnectProvider() {
  const p = providerByName($('connect-provider').value);
  if (!p) return;
  $('connect-provider-help').textContent = `Authorization at ${hostOf(p.auth_url)}; makes a ${p.kind} secret `
    + `with the access token in ${p.token_field}.`;
  $('connect-name').placeholder = p.kind === 'generic' ? p.name.toUpperCase().replace(/-/g, '_') : p.kind.toUpperCase();
  renderScopeBoxes($('connect-scope-boxes'), 'cscope', p.scopes, p.scopes, impliedScopes(p));
  $('connect-scopes-help').textContent = p.scopes.length
    ? `The scopes ${p.name} allows, all ticked: untick what this secret does not need. The provider `
      + 'shows them when you authorize, and may grant fewer.'
    : `${p.name} allows no scope: the authorization asks for none.`;
}

// Opens an empty tab now, while the click still counts as the user's: a tab opened once the
// broker has answered would be blocked as a pop-up. It is sent to the provider later.
export function openBlankTab() {
  let win = null;
  try {
    win = window.open('', '_blank');
  } catch (_) {
    win = null;
  }
  if (!win) return null;
  try {
    // The provider's page must not reach back into this one.
    win.opener = null;
    win.document.title = 'Maestro: opening the provider…';
    win.document.body.textContent = shown('Opening the provider\'s authorization page…');
  } catch (_) {
    // Not fatal: the tab is still ours to send on.
  }
  return win;
}

export function closeTab(win) {
  try {
    if (win && !win.closed) win.close();
  } catch (_) {
    // A tab the browser no longer lets this page close stays open.
  }
}

// POSTs a connect or reconnect, then follows the authorization. Returns whether it started.
export async function startAuthorization(kind, body, form, submit) {
  if (state.flow && !state.flow.finished) {
    throw new Invalid(`the authorization of ${state.flow.started.secret_name} is still waiting: finish or cancel it first`);
  }
  const win = openBlankTab();
  submit.disabled = true;
  try {
    const started = kind === 'reconnect'
      ? await api('POST', 'v1/oauth/reconnect', body)
      : await api('POST', 'v1/oauth/connect', body);
    beginFlow(kind, started, win);
    return true;
  } catch (err) {
    closeTab(win);
    fail(err, form);
    return false;
  } finally {
    submit.disabled = false;
  }
}

export async function onConnectSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  try {
    const p = providerByName($('connect-provider').value);
    if (!p) throw new Invalid('pick a provider', 'connect-provider');
    const name = $('connect-name').value.trim();
    if (!SCOPED_SECRET_NAME.test(name)) {
      throw new Invalid(`"${name}" is not a secret name: 1 to 64 capital letters, digits and _, starting with a letter (GITHUB), or team/NAME for a team's shared account`, 'connect-name');
    }
    const scopes = pickedScopes($('connect-scope-boxes'));
    if (p.scopes.length && scopes.length === 0) throw new Invalid('tick at least one scope to ask for', 'connect-scope-boxes');
    if (await startAuthorization('connect', { provider: p.name, name, scopes }, form, $('connect-submit'))) {
      form.reset();
      form.hidden = true;
    }
  } catch (err) {
    fail(err, form);
  }
}

// The secret page's OAuth card: provider, granted scopes, expiry, re-authorization.
export function renderSecretOAuth(meta) {
  const card = $('secret-oauth');
  card.hidden = !meta.oauth;
  if (!meta.oauth) return;
  const o = meta.oauth;
  const p = providerByName(o.provider);
  card.classList.toggle('attention', o.needs_reauth);
  $('reconnect-open').className = `small ${o.needs_reauth ? 'primary' : ''}`;
  const rows = [
    ['Provider', [h('span', { class: 'mono' }, o.provider), p ? muted(` ${presetLabel(p.preset)} · ${hostOf(p.auth_url)}`) : null]],
    ['Granted scopes', chips(o.scopes, 'mono')],
    ['Token expires', o.expires_at
      ? [timeEl(o.expires_at), ' ', muted(`(${relativeTime(o.expires_at)})`)]
      : muted('does not expire (the provider gave no expiry)')],
    ['Last refresh', o.last_refresh_at ? [timeEl(o.last_refresh_at), ' ', muted(`(${relativeTime(o.last_refresh_at)})`)] : muted('never')],
    ['Status', o.needs_reauth
      ? [badge('needs re-authorization', 'bad'), h('div', { class: 'sub' }, o.reauth_hint || ''),
        h('div', { class: 'sub' }, 'Reconnect authorizes it again; until then sessions keep its last token.')]
      : [oauthStatus(o), o.expires_at ? h('div', { class: 'sub' }, 'The broker refreshes the token before it expires; sessions get each new one at once.') : null]],
  ];
  renderMeta($('secret-oauth-meta'), rows);
}

export function openReconnect() {
  const meta = state.current;
  if (!meta || !meta.oauth) return;
  clearErrors();
  const o = meta.oauth;
  const p = providerByName(o.provider);
  const allowed = p ? p.scopes : o.scopes;
  const granted = o.scopes.filter((s) => allowed.includes(s));
  renderScopeBoxes($('reconnect-scope-boxes'), 'rscope', allowed, granted.length ? granted : allowed, impliedScopes(p));
  const dropped = o.scopes.filter((s) => !allowed.includes(s));
  $('reconnect-scopes-help').textContent = (allowed.length
    ? `The scopes ${o.provider} allows; those granted now are ticked. Tick others to ask for more.`
    : `${o.provider} allows no scope: the authorization asks for none.`)
    + (dropped.length ? ` No longer allowed, so not asked for: ${dropped.join(' ')}.` : '')
    + ' The secret keeps its name, sessions and history, and gets a new version.';
  $('reconnect-form').hidden = false;
  $('reconnect-submit').focus();
}

export async function onReconnectSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const meta = state.current;
  if (!meta || !meta.oauth) return;
  try {
    const boxes = $('reconnect-scope-boxes');
    const scopes = pickedScopes(boxes);
    if (boxes.querySelector('.scope-box') && scopes.length === 0) throw new Invalid('tick at least one scope to ask for', boxes);
    if (await startAuthorization('reconnect', { name: meta.name, scopes }, form, $('reconnect-submit'))) {
      form.hidden = true;
    }
  } catch (err) {
    fail(err, form);
  }
}

export async function refreshNow(name, button) {
  clearErrors();
  if (button) button.disabled = true;
  try {
    const meta = await api('POST', 'v1/oauth/refresh', { name });
    const o = meta.oauth;
    notify(`Refreshed ${meta.name}: now version ${meta.version}`
      + `${o && o.expires_at ? `; the new token expires ${relativeTime(o.expires_at)}` : ''}.`);
  } catch (err) {
    fail(err);
    if (err instanceof ApiFailure && err.status === 401) return;
  } finally {
    if (button) button.disabled = false;
  }
  // A refused refresh marks the secret: show its state now, beside the error.
  if (location.hash === '#/oauth') reloadOAuthLists(true);
  else route({ keepErrors: true });
}
