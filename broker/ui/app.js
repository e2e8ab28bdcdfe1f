// Maestro Secret Manager: the whole client, plain JS, no framework, no build step.
//
// It talks to the broker's user API on the origin that served it (the routes of
// `maestro_wire::api`), with the API token the user pasted, kept in this tab's sessionStorage.
// The API never returns a secret value, so none can be shown; values typed or loaded from a
// file go out in one request and the inputs are emptied right after. Every element is built
// with textContent (never innerHTML), so nothing the broker returns is parsed as markup.
// OAuth: the page registers providers, starts authorizations (the provider's page opens in a
// new tab), and polls the broker until the callback stored the secret; it never sees a token.
'use strict';

(() => {
  const TOKEN_KEY = 'maestro.token';
  // The page lives at <broker>/ui/, so the API is one level up (also behind a path prefix).
  const BASE = new URL('../', document.baseURI);
  // Limits of `maestro_wire::limits`, checked here too so a mistake is named before upload.
  const MAX_FIELD_BYTES = 64 * 1024;
  const MAX_FIELDS = 32;
  const MAX_TAGS = 32;
  const MAX_TTL_SECONDS = 30 * 24 * 3600;
  const SECRET_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;
  const VARIABLE_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
  const SESSION_ID = /^[A-Za-z0-9_-]{1,128}$/;
  const AUDIT_PAGE = 100; // records a history page shows
  const MULTI_LINE_CHECKS = ['text', 'gcp_service_account'];
  // Limits of `maestro_wire::oauth`.
  const PROVIDER_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
  const MAX_CLIENT_ID_BYTES = 256;
  const MAX_CLIENT_SECRET_BYTES = 4096;
  const MAX_SCOPES = 64;
  const MAX_SCOPE_BYTES = 256;
  const MAX_URL_BYTES = 2048;
  // An authorization is asked about this often while it waits; the page gives up on its own
  // this long after the authorization expired (the broker normally says so first).
  const POLL_MS = 1500;
  const POLL_GRACE_MS = 30000;
  const OPEN_STATES = ['pending', 'exchanging'];
  // How the provider form names the presets (their data comes from oauth-presets.json).
  const PRESET_LABELS = {
    github: 'GitHub', gitlab: 'GitLab', microsoft: 'Microsoft (Entra ID, Microsoft Graph)',
    google: 'Google (Google Cloud, Workspace)',
    custom: 'Custom OAuth 2.0 provider',
  };
  const AUDIT_ACTIONS = [
    'created', 'edited', 'deleted', 'activated', 'deactivated', 'fetched', 'injected',
    'file_read', 'denied', 'session_created', 'session_ended', 'enrolled', 'refreshed',
    'refresh_failed', 'substituted', 'leak_attempt', 'decoy_read', 'scan_finding', 'compromised',
  ];
  const ACTION_TONE = {
    created: 'ok', activated: 'ok', enrolled: 'ok', session_created: 'ok', refreshed: 'ok',
    fetched: 'info', injected: 'info', file_read: 'info', edited: 'info',
    deleted: 'muted', deactivated: 'muted', session_ended: 'muted',
    denied: 'bad', refresh_failed: 'bad',
    substituted: 'info', leak_attempt: 'bad', decoy_read: 'bad', scan_finding: 'bad',
    compromised: 'bad',
  };

  const state = {
    kinds: null, // the catalog, loaded once
    secrets: [],
    sessions: [],
    audit: [],
    auditPage: null, // whether older and newer pages exist
    current: null, // the secret or session a detail view shows
    created: null, // the answer to the last session creation, until "Done"
    form: null, // the secret form's mode and loaded files
    presets: null, // the OAuth provider presets, loaded once
    providers: [], // the user's OAuth providers
    added: null, // the provider registered last, until "Done" (its redirect URI)
    oauthFiles: new Map(), // the provider form's client secret loaded from a file
    flow: null, // the OAuth authorization in progress, across views
  };
  let generation = 0; // a view's answers that arrive after the user moved on are dropped
  let noticeTimer = null;
  let rowCounter = 0;

  // ---------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);

  // Text shown as it is could still mislead: Unicode control (Cc) and format (Cf) characters
  // (a right-to-left override that reverses a file name, a zero-width space that hides a
  // difference, an escape sequence) are shown escaped, as `\u{202e}`, like the CLI does.
  const HIDDEN = /[\p{Cc}\p{Cf}]/gu;
  function shown(text) {
    return String(text).replace(HIDDEN, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
  }

  // What an audit record's detail cell says: the detail, the executable the kernel reported
  // and the name the process claimed; and for a coalesced record, how many uses.
  function detailText(e) {
    const parts = [];
    if (e.detail) parts.push(e.detail);
    if (e.exe) parts.push(`exe ${e.exe}`);
    if (e.claimed_command) parts.push(`claimed ${e.claimed_command}`);
    if (e.count && e.count > 1) {
      parts.push(`${e.count} uses${e.last_at ? ` until ${formatTime(e.last_at)}` : ''}`);
    }
    return parts.join('; ');
  }

  function append(parent, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(parent, child);
      else if (child instanceof Node) parent.appendChild(child);
      else parent.appendChild(document.createTextNode(shown(child)));
    }
    return parent;
  }

  // Makes an element: props are attributes, except `class`, `text` and `on<event>` handlers.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = shown(value);
      else if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else el.setAttribute(key, value === true ? '' : String(value));
    }
    return append(el, children);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const enc = encodeURIComponent;
  const pad = (n) => String(n).padStart(2, '0');
  const shortId = (id) => (id.length > 10 ? `${id.slice(0, 8)}…` : id);

  function formatTime(rfc) {
    const d = new Date(rfc);
    if (Number.isNaN(d.getTime())) return rfc;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
      + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function relativeTime(rfc) {
    const d = new Date(rfc);
    if (Number.isNaN(d.getTime())) return rfc;
    const seconds = Math.round((d.getTime() - Date.now()) / 1000);
    const abs = Math.abs(seconds);
    let text;
    if (abs < 45) return seconds > 0 ? 'in a few seconds' : 'just now';
    if (abs < 3600) text = `${Math.round(abs / 60)} min`;
    else if (abs < 86400 * 2) text = `${Math.round(abs / 3600)} h`;
    else text = `${Math.round(abs / 86400)} days`;
    return seconds > 0 ? `in ${text}` : `${text} ago`;
  }

  // A <time> showing a local date (or a relative one), the exact RFC 3339 time as its title.
  function timeEl(rfc, relative) {
    if (!rfc) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: rfc, title: `${formatTime(rfc)} (${rfc})` },
      relative ? relativeTime(rfc) : formatTime(rfc));
  }

  const muted = (text) => h('span', { class: 'muted' }, text);
  const badge = (text, tone) => h('span', { class: `badge ${tone || ''}` }, text);
  const chips = (items, cls) => (items.length
    ? h('span', { class: 'chips' }, items.map((t) => h('span', { class: `chip ${cls || ''}` }, t)))
    : muted('—'));

  function sessionLinks(ids) {
    if (!ids || ids.length === 0) return muted('—');
    return h('span', { class: 'chips' }, ids.map((id) => h('a', {
      class: 'chip mono', href: `#/sessions/${enc(id)}`, title: id,
    }, shortId(id))));
  }

  function secretLinks(names) {
    if (!names || names.length === 0) return muted('none');
    return h('span', { class: 'chips' }, names.map((n) => h('a', {
      class: 'chip mono', href: `#/secrets/${enc(n)}`,
    }, n)));
  }

  function actionBadge(action) {
    return badge(action.replace(/_/g, ' '), ACTION_TONE[action] || '');
  }

  function utf8Bytes(text) {
    return new TextEncoder().encode(text).length;
  }

  function sizeText(bytes) {
    return bytes < 1024 ? `${bytes} bytes` : `${(bytes / 1024).toFixed(1)} KiB`;
  }

  // ---------------------------------------------------------------- the API

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // A mistake in a form, found before anything is sent.
  class Invalid extends Error {}

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, body) {
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

  async function loadKinds() {
    if (!state.kinds) {
      const view = await api('GET', 'v1/kinds');
      state.kinds = view.kinds;
    }
    return state.kinds;
  }

  const kindByName = (name) => (state.kinds || []).find((k) => k.name === name);

  // ---------------------------------------------------------------- messages

  function messageOf(err) {
    return (err && err.message) || String(err);
  }

  function showError(err, form) {
    const message = messageOf(err);
    const slot = form && form.querySelector('.form-error');
    if (slot) {
      slot.textContent = shown(message);
      slot.hidden = false;
    } else {
      $('error-text').textContent = shown(message);
      $('error-banner').hidden = false;
    }
  }

  // An error of any request: an expired or revoked token sends the user back to sign in.
  function fail(err, form) {
    if (err instanceof ApiFailure && err.status === 401) {
      signOut(err.message);
      return;
    }
    showError(err, form);
  }

  function clearErrors() {
    $('error-banner').hidden = true;
    for (const slot of document.querySelectorAll('.form-error')) {
      slot.hidden = true;
      slot.textContent = '';
    }
  }

  function notify(text) {
    const notice = $('notice');
    notice.textContent = shown(text);
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
  }

  function confirmAction({ title, text, ok }) {
    const dialog = $('confirm-dialog');
    $('confirm-title').textContent = shown(title);
    $('confirm-text').textContent = shown(text);
    $('confirm-ok').textContent = shown(ok);
    return new Promise((resolve) => {
      const done = (answer) => {
        $('confirm-ok').removeEventListener('click', onOk);
        $('confirm-cancel').removeEventListener('click', onCancel);
        dialog.removeEventListener('cancel', onCancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const onOk = () => done(true);
      const onCancel = (ev) => { if (ev) ev.preventDefault(); done(false); };
      $('confirm-ok').addEventListener('click', onOk);
      $('confirm-cancel').addEventListener('click', onCancel);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---------------------------------------------------------------- views and routing

  const TITLES = {
    signin: 'Sign in', secrets: 'Secrets', 'secret-form': 'Secret', secret: 'Secret',
    sessions: 'Sessions', session: 'Session', audit: 'Usage history', oauth: 'OAuth integrations',
    alerts: 'Alerts',
    loading: 'Loading',
  };

  function show(view, section) {
    for (const el of document.querySelectorAll('.view')) el.hidden = el.id !== `view-${view}`;
    for (const link of document.querySelectorAll('#nav a')) {
      if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = `${TITLES[view] || 'Maestro'} · Maestro Secret Manager`;
  }

  function signedIn(yes) {
    $('nav').hidden = !yes;
    $('sign-out').hidden = !yes;
  }

  function signOut(message) {
    // An authorization still waiting can no longer complete: the token leaves with the user.
    // (`api` reads the token before this function removes it.)
    const f = state.flow;
    if (f && !f.finished) api('POST', `v1/oauth/authorizations/${enc(f.started.id)}/cancel`).catch(() => null);
    sessionStorage.removeItem(TOKEN_KEY);
    forgetCreated();
    state.secrets = [];
    state.sessions = [];
    state.audit = [];
    state.auditPage = null;
    state.current = null;
    state.providers = [];
    state.added = null;
    stopFlow();
    generation += 1;
    signedIn(false);
    clearErrors();
    show('signin');
    if (message) showError(message, $('signin-form'));
    if (location.hash !== '' && location.hash !== '#/secrets') {
      history.replaceState(null, '', '#/secrets');
    }
    $('signin-token').focus();
  }

  // Shows the view the address names. `opts.keepErrors`: a re-render after an action whose
  // error (or notice) must stay on screen.
  async function route(opts) {
    if (!(opts && opts.keepErrors)) clearErrors();
    // Values typed into a form that the user left (Cancel, another section) go now.
    wipeValues();
    const gen = ++generation;
    if (!token()) {
      signedIn(false);
      show('signin');
      return;
    }
    signedIn(true);
    const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
    const stale = () => gen !== generation;
    try {
      if (parts[0] === 'secrets' && parts[1] === 'new') await viewSecretForm(stale, null);
      else if (parts[0] === 'secrets' && parts[1] && parts[2] === 'edit') {
        await viewSecretForm(stale, secretNameFrom(parts[1]));
      } else if (parts[0] === 'secrets' && parts[1] && parts[2] === 'reconnect') {
        await viewSecret(stale, secretNameFrom(parts[1]), { reconnect: true });
      } else if (parts[0] === 'secrets' && parts[1]) await viewSecret(stale, secretNameFrom(parts[1]));
      else if (parts[0] === 'sessions' && parts[1]) await viewSession(stale, sessionIdFrom(parts[1]));
      else if (parts[0] === 'sessions') await viewSessions(stale);
      else if (parts[0] === 'audit') await viewAudit(stale);
      else if (parts[0] === 'alerts') await viewAlerts(stale, parts[1] ? secretNameFrom(parts[1]) : '');
      else if (parts[0] === 'oauth') await viewOAuth(stale);
      else if (parts[0] === 'secrets' || parts.length === 0) await viewSecrets(stale);
      else {
        location.hash = '#/secrets';
      }
    } catch (err) {
      if (!stale()) fail(err);
    }
  }

  function secretNameFrom(part) {
    const name = decodeURIComponent(part);
    if (!SECRET_NAME.test(name)) throw new Invalid(`"${name}" is not a secret name; pick one from the list`);
    return name;
  }

  function sessionIdFrom(part) {
    const id = decodeURIComponent(part);
    if (!SESSION_ID.test(id)) throw new Invalid(`"${id}" is not a session id; pick one from the list`);
    return id;
  }

  // ---------------------------------------------------------------- sign in

  async function onSignIn(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    const input = $('signin-token');
    const value = input.value.trim();
    input.value = '';
    clearErrors();
    if (!value) {
      showError('paste an API token first', form);
      return;
    }
    if (value.length > 256 || /[^\x21-\x7e]/.test(value)) {
      showError('that is not an API token: a token is one word of printable characters (mst_…)', form);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      await api('GET', 'v1/secrets');
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err, form);
      return;
    }
    // Straight on to where the user was going (a bookmarked #/sessions, say).
    route();
  }

  // ---------------------------------------------------------------- secrets

  async function viewSecrets(stale) {
    show('secrets', 'secrets');
    const secrets = await api('GET', 'v1/secrets');
    if (stale()) return;
    state.secrets = secrets;
    const body = clear(document.querySelector('#secrets-table tbody'));
    $('secrets-empty').hidden = secrets.length > 0;
    $('secrets-table').hidden = secrets.length === 0;
    for (const s of secrets) {
      body.appendChild(h('tr', {},
        h('th', { scope: 'row' },
          h('a', { class: 'mono strong', href: `#/secrets/${enc(s.name)}` }, s.name),
          s.description ? h('div', { class: 'sub' }, s.description) : null,
          s.oauth && s.oauth.needs_reauth ? h('div', {}, badge('needs re-authorization', 'bad')) : null,
          s.compromised_at ? h('div', {}, compromisedBadge(s)) : null,
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

  async function deleteSecret(meta) {
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
  function compromisedBadge(meta) {
    const b = badge('compromised', 'bad');
    b.title = shown(`marked compromised at ${meta.compromised_at}: edit it with a new value before activating it again`);
    return b;
  }

  // The leak response: deactivate everywhere, mark, revoke where the kind allows, and say how to
  // rotate the value at the provider (the catalog's steps, as the broker answers them).
  async function markCompromised(meta) {
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

  async function viewSecret(stale, name, opts) {
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
      ['Active in sessions', sessionLinks(meta.active_in_sessions)],
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
  function sealedBadge(meta) {
    const b = badge('sealed', 'info');
    b.title = shown(`values sent only to ${(meta.hosts || []).join(', ') || 'no host'}`);
    return b;
  }

  function hostsView(meta) {
    const hosts = meta.hosts || [];
    if (hosts.length === 0) return h('span', { class: 'badge bad' }, 'none: set them with Edit');
    const own = meta.user_hosts || [];
    return [chips(hosts, 'mono'), own.length ? null : h('div', { class: 'sub' }, "the kind's defaults")];
  }

  // What the catalog says of sealing a kind: `null` when it cannot be sealed.
  function sealOf(kind) {
    const s = kind && kind.sealing;
    if (!s || s.sealing === 'unsupported') return null;
    return s;
  }

  // Shows or hides the hosts input and says what sealing the selected kind means.
  function renderExposure() {
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
  function checkExposure(kind, exposure, hosts) {
    if (exposure !== 'sealed') return;
    const seal = sealOf(kind);
    if (!seal) throw new Invalid(`a ${kind.name} secret cannot be sealed: ${kind.sealing.why}`);
    if (seal.sealing === 'agent') {
      if (hosts.length) throw new Invalid(`a sealed ${kind.name} secret takes its hosts from its ${seal.hosts} field, not from the hosts list`);
      return;
    }
    if (seal.hosts.length === 0 && !seal.host_field && hosts.length === 0) {
      throw new Invalid('a sealed generic secret needs the hosts its values may be sent to: name them, separated by commas (api.example.com, *.example.com)');
    }
  }

  function parseHosts(text) {
    return text.split(/[\s,]+/).map((t) => t.trim()).filter((t) => t.length > 0);
  }

  function renderMeta(dl, rows) {
    clear(dl);
    for (const [term, value] of rows) {
      dl.appendChild(h('div', { class: 'meta-row' }, h('dt', {}, term), h('dd', {}, value)));
    }
  }

  function renderHistory(events) {
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

  async function onCompromisedCurrent() {
    if (state.current && state.current.name) await markCompromised(state.current);
  }

  async function onDeleteCurrent() {
    if (state.current && state.current.name) await deleteSecret(state.current);
  }

  // ---------------------------------------------------------------- add and edit

  async function viewSecretForm(stale, name) {
    show('loading', 'secrets');
    const kinds = await loadKinds();
    const meta = name ? await api('GET', `v1/secrets/${enc(name)}`) : null;
    if (stale()) return;
    state.form = { mode: name ? 'edit' : 'add', meta, files: new Map() };
    const form = $('secret-form');
    form.reset();
    const select = clear($('secret-kind'));
    for (const k of kinds) {
      select.appendChild(h('option', { value: k.name }, `${k.name} — ${k.title}`));
    }
    if (meta) {
      $('secret-form-title').textContent = shown(`Edit ${meta.name}`);
      $('secret-form-lead').textContent = `Saving makes version ${meta.version + 1}. Only what you `
        + 'type is changed: a value left empty keeps its current value.';
      $('secret-name-row').hidden = true;
      select.value = meta.kind;
      $('secret-description').value = meta.description || '';
      $('secret-tags').value = meta.tags.join(', ');
      $('secret-exposure').value = meta.exposure || 'plain';
      $('secret-hosts').value = (meta.user_hosts || []).join(', ');
      $('secret-alerts-off').value = (meta.alerts_off || []).join(', ');
      $('secret-on-alert').value = actionsText(meta.on_alert);
      $('secret-submit').textContent = 'Save new version';
    } else {
      $('secret-form-title').textContent = 'Add a secret';
      $('secret-form-lead').textContent = 'Pick a kind: the form shows its fields. Values are '
        + 'encrypted as soon as they are saved and are never shown again.';
      $('secret-name-row').hidden = false;
      select.value = 'generic';
      $('secret-exposure').value = 'plain';
      $('secret-hosts').value = '';
      $('secret-alerts-off').value = '';
      $('secret-on-alert').value = '';
      $('secret-submit').textContent = 'Save secret';
    }
    renderKindFields();
    renderExposure();
    show('secret-form', 'secrets');
    (meta ? select : $('secret-name')).focus();
  }

  function onKindChange() {
    renderKindFields();
    renderExposure();
  }

  // Draws the value inputs of the selected kind. In edit mode with the kind unchanged, the
  // secret's current fields are marked and may be removed; a value typed replaces one.
  function renderKindFields() {
    const f = state.form;
    if (!f) return;
    f.files.clear();
    const kind = kindByName($('secret-kind').value);
    const container = clear($('secret-fields'));
    if (!kind) return;
    const editing = f.mode === 'edit';
    const sameKind = editing && f.meta.kind === kind.name;
    const existing = sameKind ? f.meta.field_names : [];
    const outputs = kind.free_fields
      ? 'each variable you add here, and a file of the same name under the mount'
      : [kind.variables.map((v) => v.name).join(', '),
        kind.files.length ? `; files ${kind.files.map((x) => x.path).join(', ')}` : ''].join('');
    $('secret-kind-help').textContent = shown(`Provides ${outputs}.${kind.setup ? ` Setup: ${kind.setup}` : ''}`);
    let help;
    if (editing && !sameKind) {
      help = `Changing the kind replaces every field: give all the values of ${kind.name}; fields marked * are required.`;
    } else if (editing) {
      help = kind.free_fields
        ? 'Leave a value empty to keep it; add a row for a new variable.'
        : 'Leave a value empty to keep it.';
    } else {
      help = kind.free_fields
        ? 'Each row is one variable: its name (capital letters, digits, _) and its value.'
        : 'Fields marked * are required.';
    }
    $('secret-values-help').textContent = shown(help);
    $('generic-tools').hidden = !kind.free_fields;
    if (kind.free_fields) {
      for (const name of existing) container.appendChild(genericRow(name));
      if (existing.length === 0) container.appendChild(genericRow(null));
    } else {
      for (const field of kind.fields) {
        // Fields that are not secret (region, host, port) come back filled in when editing.
        const current = sameKind ? (f.meta.shown_fields || {})[field.name] : undefined;
        container.appendChild(kindFieldRow(field, existing.includes(field.name), editing, !sameKind, current));
      }
    }
  }

  function inputKind(field) {
    const check = field.check;
    if (check && typeof check === 'object' && Array.isArray(check.one_of)) return 'select';
    if (field.shown || check === 'host' || check === 'port' || field.default) return 'plain';
    return 'secret';
  }

  function kindFieldRow(field, present, editing, fullSet, current) {
    const id = `f-${field.name}`;
    const how = inputKind(field);
    const multiLine = typeof field.check === 'string' && MULTI_LINE_CHECKS.includes(field.check);
    const required = field.required && (!editing || fullSet);
    let input;
    if (how === 'select') {
      input = h('select', { id, class: 'value-input', 'data-key': field.name, 'aria-describedby': `${id}-help` },
        h('option', { value: '' }, editing && !fullSet ? '(unchanged)' : '(not set)'),
        field.check.one_of.map((v) => h('option', { value: v }, v)));
    } else {
      let placeholder = null;
      if (editing && present) placeholder = 'unchanged';
      else if (field.default) placeholder = `default: ${field.default}`;
      else if (multiLine) placeholder = 'paste it on one line, or load the file';
      input = h('input', {
        id,
        type: how === 'plain' ? 'text' : 'password',
        class: 'value-input',
        'data-key': field.name,
        autocomplete: how === 'plain' ? 'off' : 'new-password',
        spellcheck: 'false',
        placeholder,
        inputmode: field.check === 'port' ? 'numeric' : null,
        'aria-required': required ? 'true' : null,
        'aria-describedby': `${id}-help`,
      });
      if (how === 'plain' && field.default && !editing) input.value = field.default;
    }
    if (current !== undefined) {
      input.value = current;
      // Sent again only if changed, so an edit of other fields leaves it as it is.
      input.dataset.original = current;
    }
    const helpParts = [field.help];
    if (field.default) helpParts.push(`${field.default} when left empty`);
    if (multiLine) helpParts.push('multi-line: load the file');
    const row = h('div', { class: 'field kfield', 'data-key': field.name },
      h('label', { for: id },
        h('span', { class: 'mono' }, field.name),
        required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null,
        required ? h('span', { class: 'sr-only' }, ' (required)') : null,
        present ? h('span', { class: 'badge ok mini' }, 'set') : null),
      h('div', { class: 'input-row' }, input, multiLine ? fileButton(field.name, input) : null),
      h('p', { class: 'help', id: `${id}-help` }, helpParts.join(' · ')));
    if (editing && present && !field.required) {
      const removeId = `${id}-remove`;
      row.appendChild(h('div', { class: 'check' },
        h('input', { type: 'checkbox', id: removeId, class: 'remove-field', 'data-key': field.name }),
        h('label', { for: removeId }, `Remove ${field.name}`)));
    }
    return row;
  }

  // A button that loads a file's text as a field's value (a GCP key, a PEM): the text is held
  // in memory until the form is sent, and never shown. `opts` serves other forms than the
  // secret form: where the text goes, the form that shows errors, a limit, a transformation.
  function fileButton(key, input, opts) {
    const o = opts || {};
    const files = () => (o.files ? o.files() : state.form.files);
    const formOf = () => (o.form ? o.form() : $('secret-form'));
    const limit = o.limit || MAX_FIELD_BYTES;
    const picker = h('input', { type: 'file', class: 'file-picker', hidden: true, tabindex: '-1', 'aria-hidden': 'true' });
    const status = h('span', { class: 'file-status', 'aria-live': 'polite' });
    const clearButton = h('button', { type: 'button', class: 'small ghost file-clear', hidden: true }, 'Clear file');
    const forget = () => {
      files().delete(key);
      picker.value = '';
      status.textContent = '';
      clearButton.hidden = true;
      input.disabled = false;
    };
    picker.addEventListener('change', async () => {
      const file = picker.files && picker.files[0];
      if (!file) return;
      // A line break or two more than the limit may still fit once a transformation drops it.
      if (file.size > limit + 2) {
        forget();
        showError(`${file.name} is ${sizeText(file.size)}; a value holds at most ${sizeText(limit)}`, formOf());
        return;
      }
      try {
        const text = o.transform ? o.transform(await file.text()) : await file.text();
        if (utf8Bytes(text) > limit) {
          forget();
          showError(`${file.name} is ${sizeText(file.size)}; a value holds at most ${sizeText(limit)}`, formOf());
          return;
        }
        files().set(key, text);
        input.value = '';
        input.disabled = true;
        status.textContent = shown(`${file.name} loaded (${sizeText(file.size)})`);
        clearButton.hidden = false;
      } catch (err) {
        forget();
        showError(`cannot read ${file.name}: ${messageOf(err)}`, formOf());
      }
    });
    clearButton.addEventListener('click', forget);
    return h('span', { class: 'file-tools' },
      h('button', { type: 'button', class: 'small ghost', 'aria-label': `Load ${key} from a file`, onclick: () => picker.click() }, 'Load from file…'),
      picker, status, clearButton);
  }

  // One variable of a generic secret: an existing one (name fixed, may be removed) or a new one.
  function genericRow(existingName) {
    rowCounter += 1;
    const n = rowCounter;
    const key = `generic-${n}`;
    const nameInput = h('input', {
      id: `gname-${n}`, type: 'text', class: 'mono gname', maxlength: '128', spellcheck: 'false',
      autocomplete: 'off', placeholder: 'API_TOKEN', readonly: existingName ? true : null,
    });
    if (existingName) nameInput.value = existingName;
    else nameInput.addEventListener('input', upperCase);
    const valueInput = h('input', {
      id: `gval-${n}`, type: 'password', class: 'gval', autocomplete: 'new-password', spellcheck: 'false',
      'data-file-key': key, placeholder: existingName ? 'unchanged' : null,
    });
    const row = h('div', { class: 'generic-row', 'data-file-key': key },
      h('div', { class: 'field' }, h('label', { for: `gname-${n}` }, 'Variable'), nameInput),
      h('div', { class: 'field grow' }, h('label', { for: `gval-${n}` }, 'Value'),
        h('div', { class: 'input-row' }, valueInput, fileButton(key, valueInput))));
    if (existingName) {
      row.appendChild(h('div', { class: 'check end' },
        h('input', { type: 'checkbox', id: `gremove-${n}`, class: 'remove-field', 'data-key': existingName }),
        h('label', { for: `gremove-${n}` }, 'Remove')));
    } else {
      row.appendChild(h('div', { class: 'end' }, h('button', {
        type: 'button', class: 'small ghost', 'aria-label': 'Remove this variable row',
        onclick: () => { state.form.files.delete(key); row.remove(); },
      }, 'Remove row')));
    }
    return row;
  }

  function lowerCase(ev) {
    const el = ev.target;
    const lower = el.value.toLowerCase();
    if (lower !== el.value) {
      const [start, end] = [el.selectionStart, el.selectionEnd];
      el.value = lower;
      el.setSelectionRange(start, end);
    }
  }

  function upperCase(ev) {
    const el = ev.target;
    const upper = el.value.toUpperCase();
    if (upper !== el.value) {
      const [start, end] = [el.selectionStart, el.selectionEnd];
      el.value = upper;
      el.setSelectionRange(start, end);
    }
  }

  function parseTags(text) {
    return text.split(',').map((t) => t.trim()).filter((t) => t.length > 0);
  }

  function sameList(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  // Reads the values typed or loaded: { fields, remove }. Throws Invalid on a mistake.
  function collectValues(kind, needAllRequired) {
    const f = state.form;
    const fields = {};
    const remove = [];
    const put = (key, value) => {
      if (utf8Bytes(value) > MAX_FIELD_BYTES) {
        throw new Invalid(`the value of ${key} is ${sizeText(utf8Bytes(value))}; the limit is ${sizeText(MAX_FIELD_BYTES)}`);
      }
      fields[key] = value;
    };
    for (const box of document.querySelectorAll('#secret-fields .remove-field')) {
      if (box.checked) remove.push(box.dataset.key);
    }
    if (kind.free_fields) {
      for (const row of document.querySelectorAll('#secret-fields .generic-row')) {
        const name = row.querySelector('.gname').value.trim();
        const fileKey = row.dataset.fileKey;
        const value = f.files.has(fileKey) ? f.files.get(fileKey) : row.querySelector('.gval').value;
        if (!name && !value) continue;
        if (!VARIABLE_NAME.test(name)) {
          throw new Invalid(`"${name}" is not a variable name: use capital letters, digits and _, not starting with a digit`);
        }
        if (Object.hasOwn(fields, name)) throw new Invalid(`the variable ${name} is given twice`);
        if (value) {
          if (remove.includes(name)) throw new Invalid(`${name} is both given a value and removed; pick one`);
          put(name, value);
        } else if (!row.querySelector('.gname').readOnly) {
          throw new Invalid(`give ${name} a value, or remove its row`);
        }
      }
    } else {
      for (const row of document.querySelectorAll('#secret-fields .kfield')) {
        const key = row.dataset.key;
        const input = row.querySelector('.value-input');
        const value = f.files.has(key) ? f.files.get(key) : input.value;
        const unchanged = !f.files.has(key) && input.dataset.original !== undefined && value === input.dataset.original;
        if (value !== '' && !unchanged) {
          if (remove.includes(key)) throw new Invalid(`${key} is both given a value and removed; pick one`);
          put(key, value);
        }
      }
      if (needAllRequired) {
        for (const field of kind.fields) {
          if (field.required && !Object.hasOwn(fields, field.name)) {
            throw new Invalid(`kind ${kind.name} requires ${field.name}; give it a value`);
          }
        }
      }
    }
    if (Object.keys(fields).length > MAX_FIELDS) {
      throw new Invalid(`a secret has at most ${MAX_FIELDS} fields; this one has ${Object.keys(fields).length}`);
    }
    return { fields, remove };
  }

  // Empties every value input (secret values, an OAuth client secret) and drops loaded files,
  // whatever the outcome of a submit.
  function wipeValues() {
    const forms = ['#secret-form', '#provider-form'];
    const inputs = forms.map((f) => `${f} input[type=password], ${f} input[type=file]`).join(', ');
    for (const el of document.querySelectorAll(inputs)) {
      el.value = '';
      el.disabled = false;
    }
    for (const el of document.querySelectorAll(forms.map((f) => `${f} .file-status`).join(', '))) el.textContent = '';
    for (const el of document.querySelectorAll(forms.map((f) => `${f} .file-clear`).join(', '))) el.hidden = true;
    if (state.form) state.form.files.clear();
    state.oauthFiles.clear();
  }

  async function onSecretSubmit(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    const f = state.form;
    if (!f) return;
    clearErrors();
    const submit = $('secret-submit');
    submit.disabled = true;
    let typed = false;
    try {
      const kind = kindByName($('secret-kind').value);
      if (!kind) throw new Invalid('pick a kind');
      const description = $('secret-description').value.trim();
      const tags = parseTags($('secret-tags').value);
      if (tags.length > MAX_TAGS) throw new Invalid(`a secret has at most ${MAX_TAGS} tags; this has ${tags.length}`);
      const exposure = $('secret-exposure').value === 'sealed' ? 'sealed' : 'plain';
      // Plain secrets name no hosts; the broker checks the rest against the kind.
      const hosts = exposure === 'sealed' ? parseHosts($('secret-hosts').value) : [];
      let meta;
      if (f.mode === 'add') {
        const name = $('secret-name').value.trim();
        if (!SECRET_NAME.test(name)) {
          throw new Invalid(`"${name}" is not a secret name: 1 to 64 capital letters, digits and _, starting with a letter (AWS_PROD)`);
        }
        const { fields } = collectValues(kind, true);
        typed = Object.keys(fields).length > 0;
        if (kind.free_fields && !typed) throw new Invalid('add at least one variable with its value');
        checkExposure(kind, exposure, hosts);
        const body = { name, kind: kind.name, fields, tags, exposure };
        if (hosts.length) body.hosts = hosts;
        const alertsOff = parseTags($('secret-alerts-off').value);
        if (alertsOff.length) body.alerts_off = alertsOff;
        const onAlert = parseActions($('secret-on-alert').value);
        if (onAlert) body.on_alert = onAlert;
        if (description) body.description = description;
        meta = await api('POST', 'v1/secrets', body);
        notify(`Saved ${meta.name} (version ${meta.version}). It provides ${meta.variables.join(', ') || 'no variables'}.`);
      } else {
        const kindChanged = kind.name !== f.meta.kind;
        const { fields, remove } = collectValues(kind, kindChanged);
        typed = Object.keys(fields).length > 0;
        checkExposure(kind, exposure, hosts);
        const body = {};
        if (kindChanged) body.kind = kind.name;
        if (typed || kindChanged) body.fields = fields;
        if (remove.length) body.remove_fields = remove;
        if (description !== (f.meta.description || '')) body.description = description;
        if (!sameList(tags, f.meta.tags)) body.tags = tags;
        if (exposure !== (f.meta.exposure || 'plain')) body.exposure = exposure;
        if (exposure === 'sealed' && !sameList(hosts, f.meta.user_hosts || [])) body.hosts = hosts;
        const alertsOff = parseTags($('secret-alerts-off').value);
        if (!sameList(alertsOff, f.meta.alerts_off || [])) body.alerts_off = alertsOff;
        const onAlertText = $('secret-on-alert').value.trim();
        if (onAlertText !== actionsText(f.meta.on_alert)) {
          const onAlert = parseActions(onAlertText);
          if (onAlert) body.on_alert = onAlert;
          else body.clear_on_alert = true;
        }
        if (Object.keys(body).length === 0) {
          throw new Invalid('nothing to change: type a value, remove a field, or change the description, tags, exposure or hosts');
        }
        meta = await api('PATCH', `v1/secrets/${enc(f.meta.name)}`, body);
        notify(`Saved ${meta.name}: now version ${meta.version}.`);
      }
      state.form = null;
      location.hash = `#/secrets/${enc(meta.name)}`;
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 401) {
        fail(err);
        return;
      }
      const again = typed ? ' (the values were cleared: type them again)' : '';
      showError(`${messageOf(err)}${again}`, form);
    } finally {
      wipeValues();
      submit.disabled = false;
    }
  }

  function onAddGenericRow() {
    const row = genericRow(null);
    $('secret-fields').appendChild(row);
    row.querySelector('.gname').focus();
  }

  // ---------------------------------------------------------------- sessions

  function sortSessions(list) {
    return [...list].sort((a, b) => {
      if (a.state !== b.state) return a.state === 'live' ? -1 : 1;
      return b.created_at.localeCompare(a.created_at);
    });
  }

  function agentBadge(s) {
    if (s.agent_connected) return badge('connected', 'ok');
    if (s.enrolled) return badge('enrolled, not connected', 'warn');
    return badge('not enrolled', '');
  }

  function stateBadge(s) {
    if (s.state === 'live') return badge('live', 'ok');
    return badge(`ended${s.ended_reason ? ` (${s.ended_reason})` : ''}`, 'muted');
  }

  async function viewSessions(stale) {
    show('sessions', 'sessions');
    renderCreated();
    const sessions = await api('GET', 'v1/sessions');
    if (stale()) return;
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

  async function onSessionCreate(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    clearErrors();
    const amount = Number($('session-ttl').value);
    const unit = Number($('session-ttl-unit').value);
    const label = $('session-label').value.trim();
    if (!Number.isInteger(amount) || amount < 1) {
      showError('the lifetime is a whole number, 1 or more', form);
      return;
    }
    const ttl = amount * unit;
    if (ttl > MAX_TTL_SECONDS) {
      showError('a session lives at most 30 days; pick a shorter lifetime', form);
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
      await viewSessions(() => false);
      $('created-copy').focus();
    } catch (err) {
      fail(err, form);
    }
  }

  function renderCreated() {
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

  function forgetCreated() {
    state.created = null;
    $('created-token').value = '';
    $('session-created').hidden = true;
  }

  async function onCopyToken() {
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

  function onDownloadBundle() {
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

  async function endSession(s) {
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

  async function viewSession(stale, id) {
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
    $('session-body').hidden = false;
    $('session-actions').hidden = false;
  }

  function renderSession(info) {
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

  async function changeActivation(verb, names) {
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

  async function onActivateSubmit(ev) {
    ev.preventDefault();
    const names = [...document.querySelectorAll('#available-list .activate-box:checked')].map((b) => b.value);
    if (names.length === 0) {
      clearErrors();
      showError('tick at least one secret to activate', ev.currentTarget);
      return;
    }
    await changeActivation('activate', names);
  }

  async function onDeactivateAll() {
    const info = state.current;
    if (info && info.active && info.active.length) await changeActivation('deactivate', [...info.active]);
  }

  async function onEndCurrent() {
    if (state.current && state.current.id) await endSession(state.current);
  }

  // ---------------------------------------------------------------- audit

  // The broker filters and pages (`GET /v1/audit`, docs/broker.md "History and export"): a
  // page is AUDIT_PAGE records; Older asks for those before the page's oldest `seq`, Newer for
  // those after its newest, so paging never skips or repeats a record while the trail grows.
  async function viewAudit(stale) {
    show('audit', 'audit');
    await loadAuditPage(stale, null);
  }

  function auditQuery(position) {
    const q = new URLSearchParams();
    const secret = $('audit-secret').value.trim().toUpperCase();
    const fields = [['secret', secret], ['session', $('audit-session').value.trim()],
      ['action', $('audit-action').value], ['command', $('audit-command').value.trim()],
      ['since', $('audit-since').value]];
    for (const [key, value] of fields) if (value) q.set(key, value);
    q.set('limit', String(AUDIT_PAGE));
    if (position) q.set(position[0], String(position[1]));
    return q.toString();
  }

  // Loads the newest page (`position` null), or `['before', seq]` / `['after', seq]`.
  async function loadAuditPage(stale, position) {
    clearErrors();
    let events;
    try {
      events = await api('GET', `v1/audit?${auditQuery(position)}`);
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 400) {
        showError(err, $('audit-filter'));
        return;
      }
      throw err;
    }
    if (stale && stale()) return;
    const full = events.length >= AUDIT_PAGE;
    const direction = position ? position[0] : 'newest';
    // A page past the end keeps the page shown (its button goes grey).
    if (events.length === 0 && direction !== 'newest') {
      if (direction === 'before') state.auditPage.older = false;
      else state.auditPage.newer = false;
      renderAudit();
      return;
    }
    state.auditPage = {
      older: direction === 'after' ? true : full,
      newer: direction === 'newest' ? false : (direction === 'before' ? true : full),
    };
    state.audit = [...events].sort((a, b) => b.seq - a.seq);
    renderAudit();
  }

  function auditPageFrom(edge) {
    if (state.audit.length === 0) return;
    const seqs = state.audit.map((e) => e.seq);
    const position = edge === 'older' ? ['before', Math.min(...seqs)] : ['after', Math.max(...seqs)];
    loadAuditPage(null, position).catch((err) => fail(err));
  }

  function renderAudit() {
    const page = state.auditPage || { older: false, newer: false };
    const body = clear(document.querySelector('#audit-table tbody'));
    const n = state.audit.length;
    $('audit-count').textContent = n === 0
      ? 'No records match.'
      : `${n} record${n === 1 ? '' : 's'}, ${page.newer ? 'not the newest' : 'the newest'}${page.older ? '; older ones exist' : ''}.`;
    $('audit-older').disabled = !page.older;
    $('audit-newer').disabled = !page.newer;
    $('audit-newest').disabled = !page.newer;
    for (const e of state.audit) {
      body.appendChild(h('tr', {},
        h('td', { class: 'nowrap' }, timeEl(e.at)),
        h('td', {}, actionBadge(e.action)),
        h('td', {}, e.secret ? h('a', { class: 'mono', href: `#/secrets/${enc(e.secret)}` }, e.secret) : muted('—')),
        h('td', {}, e.session ? sessionLink(e.session, e.session_label) : muted('—')),
        h('td', { class: 'num' }, e.pid ?? muted('—')),
        h('td', { class: 'num' }, e.uid ?? muted('—')),
        h('td', { class: 'mono' }, e.command ?? muted('—')),
        h('td', { class: 'detail' }, detailText(e))));
    }
  }

  // ---------------------------------------------------------------- alerts

  const ALERT_ACTIONS = ['notify', 'deactivate', 'end-session'];

  // A secret's or the user's actions as typed: `default` (empty) is null, `none` is [].
  function parseActions(text) {
    const t = text.trim();
    if (t === '' || t === 'default') return null;
    if (t === 'none') return [];
    const list = parseTags(t);
    const bad = list.find((a) => !ALERT_ACTIONS.includes(a));
    if (bad) throw new Invalid(`"${bad}" is not an action: use ${ALERT_ACTIONS.join(', ')}, none or default`);
    return list;
  }

  function actionsText(actions) {
    if (!actions) return '';
    return actions.length ? actions.join(', ') : 'none';
  }

  async function viewAlerts(stale, secret) {
    show('alerts', 'alerts');
    if (secret) $('alerts-secret').value = secret;
    const [alerts, config] = await Promise.all([api('GET', 'v1/alerts?limit=1000'), api('GET', 'v1/alerts/config')]);
    if (stale()) return;
    state.alerts = alerts;
    renderAlerts();
    $('alerts-webhook').value = config.webhook_url || '';
    $('alerts-webhook-secret').value = '';
    $('alerts-webhook-secret').placeholder = config.webhook_secret_set ? 'set' : '';
    $('alerts-on-alert').value = actionsText(config.on_alert);
  }

  function renderAlerts() {
    const secret = $('alerts-secret').value.trim().toUpperCase();
    const unacked = $('alerts-unacked').checked;
    const shown = (state.alerts || []).filter((a) => (!secret || (a.secret || '').toUpperCase().includes(secret))
      && (!unacked || !a.acked_at));
    const body = clear(document.querySelector('#alerts-table tbody'));
    $('alerts-empty').hidden = shown.length > 0;
    $('alerts-table').hidden = shown.length === 0;
    for (const a of shown) {
      body.appendChild(h('tr', {},
        h('td', { class: 'nowrap' }, timeEl(a.at)),
        h('td', {}, badge(a.rule.replace(/_/g, ' '), 'bad')),
        h('td', {}, a.secret ? h('a', { class: 'mono', href: `#/secrets/${enc(a.secret)}` }, a.secret) : muted('—')),
        h('td', {}, a.session_id ? sessionLinks([a.session_id]) : muted('—')),
        h('td', { class: 'detail' }, a.reason),
        h('td', {}, a.actions.length ? chips(a.actions) : muted('none')),
        h('td', { class: 'row-actions' }, a.acked_at ? muted('acknowledged')
          : h('button', { type: 'button', class: 'small ghost', 'aria-label': `Acknowledge alert ${a.id}`, onclick: () => ackAlert(a) }, 'Acknowledge'))));
    }
  }

  async function ackAlert(alert) {
    clearErrors();
    try {
      await api('POST', 'v1/alerts/ack', { ids: [alert.id] });
      notify(`Acknowledged alert ${alert.id}.`);
      await route();
    } catch (err) {
      fail(err);
    }
  }

  async function onAlertsConfig(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    clearErrors();
    try {
      const body = {};
      const url = $('alerts-webhook').value.trim();
      const secret = $('alerts-webhook-secret').value;
      body.webhook_url = url;
      if (secret) body.webhook_secret = secret;
      body.on_alert = parseActions($('alerts-on-alert').value) || [];
      await api('PUT', 'v1/alerts/config', body);
      $('alerts-webhook-secret').value = '';
      notify('Saved the alert settings.');
      await route();
    } catch (err) {
      fail(err, form);
    }
  }

  // A session by its label when it has one (the id on hover), else by its short id.
  function sessionLink(id, label) {
    return h('a', { class: 'chip mono', href: `#/sessions/${enc(id)}`, title: id },
      label || shortId(id));
  }

  // A secret's usage summary (`GET /v1/secrets/{name}/usage`): totals, then uses per
  // session, per command and per UTC day, each with a bar against the largest.
  function renderUsage(u) {
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

  // ---------------------------------------------------------------- OAuth: presets and providers

  // The presets (`maestro_wire::oauth::PRESETS`) are data the broker serves beside this script:
  // endpoints, the scopes each accepts, its defaults and the scopes it always asks for.
  async function loadPresets() {
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

  const presetByName = (name) => (state.presets || []).find((p) => p.name === name);
  const presetLabel = (name) => PRESET_LABELS[name] || (presetByName(name) || {}).title || name;
  const providerByName = (name) => state.providers.find((p) => p.name === name);
  // The scopes a provider's preset always asks for (Microsoft: offline_access).
  const impliedScopes = (provider) => ((provider && presetByName(provider.preset)) || {}).implied_scopes || [];

  function hostOf(url) {
    try {
      return new URL(url).host;
    } catch (_) {
      return url;
    }
  }

  function isLoopback(hostname) {
    const bare = hostname.replace(/^\[|\]$/g, '');
    return bare === 'localhost' || bare === '::1' || /^127\.\d+\.\d+\.\d+$/.test(bare);
  }

  // RFC 6749 scope tokens: printable ASCII without space, `"` and `\`.
  function isValidScope(scope) {
    return scope.length > 0 && scope.length <= MAX_SCOPE_BYTES && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(scope);
  }

  function checkScopes(scopes) {
    if (scopes.length > MAX_SCOPES) throw new Invalid(`at most ${MAX_SCOPES} scopes; ${scopes.length} were given`);
    for (const s of scopes) {
      if (!isValidScope(s)) {
        throw new Invalid(`"${s.slice(0, 80)}" is not a valid scope: 1 to ${MAX_SCOPE_BYTES} printable characters without spaces, quotes or backslashes`);
      }
    }
    return scopes;
  }

  // Scopes typed as text: separated by spaces or commas, repeats dropped.
  function parseScopeText(text) {
    const out = [];
    for (const s of text.split(/[\s,]+/)) if (s && !out.includes(s)) out.push(s);
    return checkScopes(out);
  }

  function checkUrl(label, text) {
    if (utf8Bytes(text) > MAX_URL_BYTES) throw new Invalid(`the ${label} is longer than ${MAX_URL_BYTES} bytes`);
    let url;
    try {
      url = new URL(text);
    } catch (_) {
      throw new Invalid(`the ${label} "${text.slice(0, 80)}" is not a URL; copy it from the provider's documentation`);
    }
    const https = url.protocol === 'https:';
    if (!https && !(url.protocol === 'http:' && isLoopback(url.hostname))) {
      throw new Invalid(`the ${label} must be an HTTPS address (plain HTTP only on 127.0.0.1, ::1 or localhost)`);
    }
    return text;
  }

  // Checkboxes for scopes, all in `checked` ticked; the implied ones ticked and fixed.
  function renderScopeBoxes(container, prefix, scopes, checked, implied) {
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

  const pickedScopes = (container) => [...container.querySelectorAll('.scope-box:checked')].map((b) => b.value);

  async function viewOAuth(stale) {
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
  async function reloadOAuthLists(keepErrors) {
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

  function closeOAuthForms() {
    $('provider-form').hidden = true;
    $('connect-form').hidden = true;
    wipeValues();
  }

  function renderProviders() {
    const list = state.providers;
    const body = clear(document.querySelector('#providers-table tbody'));
    $('providers-empty').hidden = list.length > 0;
    $('providers-wrap').hidden = list.length === 0;
    $('providers-redirect').hidden = list.length === 0;
    if (list.length) $('providers-redirect-uri').value = list[0].redirect_uri;
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

  function oauthStatus(o) {
    if (o.needs_reauth) return badge('needs re-authorization', 'bad');
    if (o.expires_at && Date.parse(o.expires_at) < Date.now()) return badge('expired', 'warn');
    return badge('valid', 'ok');
  }

  function renderOAuthSecrets() {
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

  function openProviderForm(hint) {
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
    const known = state.providers[0];
    $('provider-redirect-known').textContent = known
      ? ` (the same for every provider of this broker: ${known.redirect_uri})` : '';
    renderProviderPreset();
    form.hidden = false;
    $('provider-name').focus();
  }

  // Shapes the provider form after its preset: endpoints, kind, variable and scopes.
  function renderProviderPreset() {
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

  const stripLineBreak = (text) => text.replace(/\r?\n$/, '');

  async function onProviderSubmit(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    clearErrors();
    const submit = $('provider-submit');
    submit.disabled = true;
    try {
      const preset = presetByName($('provider-preset').value);
      if (!preset) throw new Invalid('pick a provider');
      const custom = !preset.auth_url;
      const name = $('provider-name').value.trim();
      if (!PROVIDER_NAME.test(name)) {
        throw new Invalid(`"${name}" is not a provider name: 1 to 32 of a-z, 0-9, - and _, starting with a letter (github-work)`);
      }
      const clientId = $('provider-client-id').value.trim();
      if (!clientId || clientId.length > MAX_CLIENT_ID_BYTES || /[^\x21-\x7e]/.test(clientId)) {
        throw new Invalid(`the client id is 1 to ${MAX_CLIENT_ID_BYTES} printable characters without spaces; copy it from the OAuth app's settings`);
      }
      const secret = state.oauthFiles.has('client_secret')
        ? state.oauthFiles.get('client_secret') : $('provider-client-secret').value;
      if (!secret) throw new Invalid('give the OAuth app\'s client secret: type it, or load it from a file');
      if (utf8Bytes(secret) > MAX_CLIENT_SECRET_BYTES) {
        throw new Invalid(`the client secret is longer than ${MAX_CLIENT_SECRET_BYTES} bytes`);
      }
      if (/[\x00-\x1f\x7f]/.test(secret)) {
        throw new Invalid('the client secret holds control characters (a line break?); it is one line');
      }
      const body = { name, preset: preset.name, client_id: clientId };
      if (custom || $('provider-override').checked) {
        const auth = $('provider-auth-url').value.trim();
        const token = $('provider-token-url').value.trim();
        if (!auth || !token) {
          throw new Invalid(custom
            ? 'a custom provider needs its authorization and token endpoints'
            : 'give both endpoints of the other server, or untick "Use other endpoints"');
        }
        body.auth_url = checkUrl('authorization endpoint', auth);
        body.token_url = checkUrl('token endpoint', token);
        const revoke = $('provider-revoke-url').value.trim();
        if (revoke) body.revoke_url = checkUrl('revocation endpoint', revoke);
      }
      const kind = custom ? $('provider-kind').value : preset.kind;
      if (custom) body.kind = kind;
      const variable = $('provider-variable').value.trim();
      if (kind === 'generic' && variable) {
        if (!VARIABLE_NAME.test(variable)) {
          throw new Invalid(`"${variable}" is not a variable name: use capital letters, digits and _, not starting with a digit`);
        }
        body.variable = variable;
      }
      if (preset.accepted_scopes) {
        body.scopes = checkScopes(pickedScopes($('provider-scope-boxes')));
        if (body.scopes.length === 0) throw new Invalid('tick at least one scope that connections may ask for');
      } else {
        body.scopes = parseScopeText($('provider-scope-text').value);
      }
      body.client_secret = secret;
      const info = await api('POST', 'v1/oauth/providers', body);
      delete body.client_secret;
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
      wipeValues();
      submit.disabled = false;
    }
  }

  function renderAdded() {
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

  async function copyText(input, what) {
    try {
      await navigator.clipboard.writeText(input.value);
      notify(`${what} copied.`);
    } catch (_) {
      input.focus();
      input.select();
      notify(`Press Ctrl+C (or ⌘C) to copy the selected ${what.toLowerCase()}.`);
    }
  }

  // ---------------------------------------------------------------- OAuth: connect, reconnect

  function openConnect(providerName) {
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

  function renderConnectProvider() {
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
  function openBlankTab() {
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

  function closeTab(win) {
    try {
      if (win && !win.closed) win.close();
    } catch (_) {
      // A tab the browser no longer lets this page close stays open.
    }
  }

  // POSTs a connect or reconnect, then follows the authorization. Returns whether it started.
  async function startAuthorization(kind, body, form, submit) {
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

  async function onConnectSubmit(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    clearErrors();
    try {
      const p = providerByName($('connect-provider').value);
      if (!p) throw new Invalid('pick a provider');
      const name = $('connect-name').value.trim();
      if (!SECRET_NAME.test(name)) {
        throw new Invalid(`"${name}" is not a secret name: 1 to 64 capital letters, digits and _, starting with a letter (GITHUB)`);
      }
      const scopes = pickedScopes($('connect-scope-boxes'));
      if (p.scopes.length && scopes.length === 0) throw new Invalid('tick at least one scope to ask for');
      if (await startAuthorization('connect', { provider: p.name, name, scopes }, form, $('connect-submit'))) {
        form.reset();
        form.hidden = true;
      }
    } catch (err) {
      fail(err, form);
    }
  }

  // The secret page's OAuth card: provider, granted scopes, expiry, re-authorization.
  function renderSecretOAuth(meta) {
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

  function openReconnect() {
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

  async function onReconnectSubmit(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    clearErrors();
    const meta = state.current;
    if (!meta || !meta.oauth) return;
    try {
      const boxes = $('reconnect-scope-boxes');
      const scopes = pickedScopes(boxes);
      if (boxes.querySelector('.scope-box') && scopes.length === 0) throw new Invalid('tick at least one scope to ask for');
      if (await startAuthorization('reconnect', { name: meta.name, scopes }, form, $('reconnect-submit'))) {
        form.hidden = true;
      }
    } catch (err) {
      fail(err, form);
    }
  }

  async function refreshNow(name, button) {
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

  // ---------------------------------------------------------------- OAuth: an authorization

  // The authorization in progress (`state.flow`): what the broker answered when it started,
  // the tab sent to the provider, and what the last poll said.
  function beginFlow(kind, started, win) {
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

  function stopFlow() {
    const f = state.flow;
    if (f) clearTimeout(f.timer);
    state.flow = null;
    renderFlow();
  }

  async function pollFlow(f) {
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

  function finishFlow(f) {
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

  async function onFlowCancel() {
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

  function onFlowOpen() {
    const f = state.flow;
    if (!f) return;
    // The link opens its own tab (without a way back to this page); stop pointing at the old.
    f.blocked = false;
    f.win = null;
    f.reopened = true;
    renderFlow();
  }

  function renderFlow() {
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
      text = f.outcome || (s && s.message) || 'The authorization ended without a secret; nothing was stored.';
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

  // ---------------------------------------------------------------- start

  function init() {
    $('signin-form').addEventListener('submit', onSignIn);
    $('sign-out').addEventListener('click', () => signOut('Signed out. The token was removed from this tab.'));
    $('error-close').addEventListener('click', () => { $('error-banner').hidden = true; });
    $('secrets-refresh').addEventListener('click', route);
    $('history-refresh').addEventListener('click', route);
    $('sessions-refresh').addEventListener('click', route);
    $('session-refresh').addEventListener('click', route);
    $('audit-refresh').addEventListener('click', route);
    $('alerts-refresh').addEventListener('click', route);
    $('alerts-filter').addEventListener('submit', (ev) => ev.preventDefault());
    $('alerts-filter').addEventListener('input', renderAlerts);
    $('alerts-config').addEventListener('submit', onAlertsConfig);
    $('secret-delete').addEventListener('click', onDeleteCurrent);
    $('secret-compromised').addEventListener('click', onCompromisedCurrent);
    $('secret-kind').addEventListener('change', onKindChange);
    $('secret-exposure').addEventListener('change', renderExposure);
    $('secret-name').addEventListener('input', upperCase);
    $('secret-form').addEventListener('submit', onSecretSubmit);
    $('generic-add-row').addEventListener('click', onAddGenericRow);
    $('session-form').addEventListener('submit', onSessionCreate);
    $('created-copy').addEventListener('click', onCopyToken);
    $('created-download').addEventListener('click', onDownloadBundle);
    $('created-done').addEventListener('click', forgetCreated);
    $('activate-form').addEventListener('submit', onActivateSubmit);
    $('deactivate-all').addEventListener('click', onDeactivateAll);
    $('session-end').addEventListener('click', onEndCurrent);
    $('audit-filter').addEventListener('submit', (ev) => {
      ev.preventDefault();
      loadAuditPage(null, null).catch((err) => fail(err));
    });
    for (const id of ['audit-action', 'audit-since']) {
      $(id).addEventListener('change', () => loadAuditPage(null, null).catch((err) => fail(err)));
    }
    $('audit-newest').addEventListener('click', () => loadAuditPage(null, null).catch((err) => fail(err)));
    $('audit-older').addEventListener('click', () => auditPageFrom('older'));
    $('audit-newer').addEventListener('click', () => auditPageFrom('newer'));
    $('oauth-refresh').addEventListener('click', () => reloadOAuthLists());
    $('provider-open').addEventListener('click', () => openProviderForm());
    $('connect-open').addEventListener('click', () => openConnect(null));
    $('provider-preset').addEventListener('change', renderProviderPreset);
    $('provider-override').addEventListener('change', renderProviderPreset);
    $('provider-kind').addEventListener('change', renderProviderPreset);
    $('provider-form').addEventListener('submit', onProviderSubmit);
    $('provider-cancel').addEventListener('click', () => { clearErrors(); closeOAuthForms(); });
    $('provider-secret-row').appendChild(fileButton('client_secret', $('provider-client-secret'), {
      files: () => state.oauthFiles, form: () => $('provider-form'), limit: MAX_CLIENT_SECRET_BYTES,
      transform: stripLineBreak,
    }));
    $('provider-name').addEventListener('input', lowerCase);
    $('added-copy').addEventListener('click', () => copyText($('added-redirect'), 'Redirect URI'));
    $('providers-redirect-copy').addEventListener('click', () => copyText($('providers-redirect-uri'), 'Redirect URI'));
    $('added-connect').addEventListener('click', () => {
      const name = state.added && state.added.name;
      state.added = null;
      renderAdded();
      openConnect(name);
    });
    $('added-done').addEventListener('click', () => { state.added = null; renderAdded(); });
    $('connect-provider').addEventListener('change', renderConnectProvider);
    $('connect-name').addEventListener('input', upperCase);
    $('connect-form').addEventListener('submit', onConnectSubmit);
    $('connect-cancel').addEventListener('click', () => { clearErrors(); closeOAuthForms(); });
    $('reconnect-open').addEventListener('click', openReconnect);
    $('reconnect-cancel').addEventListener('click', () => { clearErrors(); $('reconnect-form').hidden = true; });
    $('reconnect-form').addEventListener('submit', onReconnectSubmit);
    $('oauth-refresh-now').addEventListener('click', (ev) => {
      if (state.current && state.current.oauth) refreshNow(state.current.name, ev.currentTarget);
    });
    $('flow-open').addEventListener('click', onFlowOpen);
    $('flow-cancel').addEventListener('click', onFlowCancel);
    $('flow-dismiss').addEventListener('click', stopFlow);
    // Following the link to the new secret is the end of the story: the panel goes.
    $('flow-view').addEventListener('click', stopFlow);
    const actions = $('audit-action');
    for (const a of AUDIT_ACTIONS) actions.appendChild(h('option', { value: a }, a.replace(/_/g, ' ')));
    window.addEventListener('hashchange', route);
    // Whatever was typed into a value input must not survive the page (bfcache, reload).
    window.addEventListener('pagehide', wipeValues);
    if (!location.hash) history.replaceState(null, '', '#/secrets');
    route();
  }

  init();
})();
