// Maestro Secret Manager: the client's entry module. Plain JS in ES modules, no framework, no
// build step: the broker serves each file of ui/js/ as it is.
//
// It talks to the broker's user API on the origin that served it (the routes of
// `maestro_wire::api`), with the API token the user pasted, kept in this tab's sessionStorage.
// The API never returns a secret value, so none can be shown. Every element is built with
// textContent (never innerHTML), so nothing the broker returns is parsed as markup.
// OAuth: the page registers providers, starts authorizations (the provider's page opens in a
// new tab), and polls the broker until the callback stored the secret; it never sees a token.
//
// This module wires the page's controls to the section modules and starts the router. A new
// section: a module exporting its view, a line in router.js's `route`, its controls wired here.

import { onAlertsConfig, renderAlerts } from './alerts.js';
import { limits, loadMeta } from './api.js';
import { auditPageFrom, loadAuditPage } from './audit.js';
import { clearErrors, copyText, fail, messageOf, showError } from './messages.js';
import { closeOAuthForms, onConnectSubmit, onProviderSubmit, onReconnectSubmit, openConnect, openProviderForm, openReconnect, refreshNow, reloadOAuthLists, renderAdded, renderConnectProvider, renderProviderPreset, stripLineBreak } from './oauth.js';
import { onFlowCancel, onFlowOpen, stopFlow } from './oauth-flow.js';
import { onSignIn, route, signOut } from './router.js';
import { fileButton, onAddGenericRow, onKindChange, onSecretSubmit, wipeValues } from './secret-form.js';
import { onCompromisedCurrent, onDeleteCurrent, renderExposure } from './secrets.js';
import { forgetCreated, onActivateSubmit, onCopyToken, onDeactivateAll, onDownloadBundle, onEndCurrent, onSessionCreate } from './sessions.js';
import { state } from './state.js';
import { onMemberAdd, onTeamCreate, onTeamDelete } from './teams.js';
import { copyNewToken, forgetNewToken, onAccountCreate, onTokenCreate, onTokensOwner } from './tokens.js';
import { $, h, lowerCase, scopedCase } from './util.js';

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
  $('secret-name').addEventListener('input', scopedCase);
  $('teams-refresh').addEventListener('click', route);
  $('team-refresh').addEventListener('click', route);
  $('team-form').addEventListener('submit', onTeamCreate);
  $('team-name').addEventListener('input', lowerCase);
  $('member-form').addEventListener('submit', onMemberAdd);
  $('team-delete').addEventListener('click', onTeamDelete);
  $('tokens-refresh').addEventListener('click', route);
  $('tokens-owner').addEventListener('change', onTokensOwner);
  $('token-form').addEventListener('submit', onTokenCreate);
  $('token-name').addEventListener('input', lowerCase);
  $('token-created-copy').addEventListener('click', copyNewToken);
  $('token-created-done').addEventListener('click', forgetNewToken);
  $('account-form').addEventListener('submit', onAccountCreate);
  $('account-name').addEventListener('input', lowerCase);
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
    files: () => state.oauthFiles, form: () => $('provider-form'), limit: limits().oauth_max_client_secret_bytes,
    transform: stripLineBreak,
  }));
  $('provider-name').addEventListener('input', lowerCase);
  $('added-copy').addEventListener('click', () => copyText($('added-redirect'), 'Redirect URI'));
  $('providers-redirect-copy').addEventListener('click', () => copyText($('providers-redirect-uri'), 'Redirect URI'));
  $('provider-redirect-copy').addEventListener('click', () => copyText($('provider-redirect'), 'Redirect URI'));
  $('added-connect').addEventListener('click', () => {
    const name = state.added && state.added.name;
    state.added = null;
    renderAdded();
    openConnect(name);
  });
  $('added-done').addEventListener('click', () => { state.added = null; renderAdded(); });
  $('connect-provider').addEventListener('change', renderConnectProvider);
  $('connect-name').addEventListener('input', scopedCase);
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
  for (const a of state.meta.audit_actions) actions.appendChild(h('option', { value: a }, a.replace(/_/g, ' ')));
  window.addEventListener('hashchange', route);
  // Whatever was typed into a value input must not survive the page (bfcache, reload).
  window.addEventListener('pagehide', wipeValues);
  window.addEventListener('pagehide', forgetNewToken);
  if (!location.hash) history.replaceState(null, '', '#/secrets');
  route();
}

// The broker's limits and names come first: the forms check against them.
async function start() {
  try {
    await loadMeta();
  } catch (err) {
    showError(`cannot load the broker's settings (${messageOf(err)}); check that it is running, then reload the page`);
    return;
  }
  init();
}

start();
