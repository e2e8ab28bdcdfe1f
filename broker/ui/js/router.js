// Views and routing: which section the address names, sign-in and sign-out.

import { viewAlerts } from './alerts.js';
import { Invalid, api, token } from './api.js';
import { viewAudit } from './audit.js';
import { SCOPED_SECRET_NAME, SESSION_ID, TEAM_NAME, TOKEN_KEY } from './constants.js';
import { clearErrors, fail, messageOf, showError } from './messages.js';
import { viewOAuth } from './oauth.js';
import { stopFlow } from './oauth-flow.js';
import { viewSecretForm, wipeValues } from './secret-form.js';
import { viewSecret, viewSecrets } from './secrets.js';
import { forgetCreated, viewSession, viewSessions } from './sessions.js';
import { state } from './state.js';
import { viewTeam, viewTeams } from './teams.js';
import { forgetNewToken, viewTokens } from './tokens.js';
import { $, enc } from './util.js';

// ---------------------------------------------------------------- views and routing

export const TITLES = {
  signin: 'Sign in', secrets: 'Secrets', 'secret-form': 'Secret', secret: 'Secret',
  sessions: 'Sessions', session: 'Session', audit: 'Usage history', oauth: 'OAuth integrations',
  alerts: 'Alerts', teams: 'Teams', team: 'Team', tokens: 'API tokens',
  loading: 'Loading',
};

export function show(view, section) {
  for (const el of document.querySelectorAll('.view')) el.hidden = el.id !== `view-${view}`;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${TITLES[view] || 'Maestro'} · Maestro Secret Manager`;
}

export function signedIn(yes) {
  $('nav').hidden = !yes;
  $('sign-out').hidden = !yes;
}

export function signOut(message) {
  // An authorization still waiting can no longer complete: the token leaves with the user.
  // (`api` reads the token before this function removes it.)
  const f = state.flow;
  if (f && !f.finished) api('POST', `v1/oauth/authorizations/${enc(f.started.id)}/cancel`).catch(() => null);
  sessionStorage.removeItem(TOKEN_KEY);
  forgetCreated();
  state.secrets = [];
  state.teams = [];
  state.team = null;
  state.whoami = null;
  state.tokenId = null;
  state.tokens = [];
  // A token shown once goes with the user.
  forgetNewToken();
  state.sessions = [];
  state.audit = [];
  state.auditPage = null;
  state.current = null;
  state.providers = [];
  state.added = null;
  stopFlow();
  // Nothing typed stays behind the sign-in form: values, names, labels, every form's inputs.
  wipeValues();
  for (const form of document.querySelectorAll('form')) form.reset();
  state.form = null;
  state.generation += 1;
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
export async function route(opts) {
  if (!(opts && opts.keepErrors)) clearErrors();
  // Values typed into a form that the user left (Cancel, another section) go now.
  wipeValues();
  const gen = ++state.generation;
  if (!token()) {
    signedIn(false);
    show('signin');
    return;
  }
  signedIn(true);
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  const stale = () => gen !== state.generation;
  // A new token's value is shown only while its section is: leaving it wipes the value.
  if (parts[0] !== 'tokens') forgetNewToken();
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
    else if (parts[0] === 'teams' && parts[1]) await viewTeam(stale, teamNameFrom(parts[1]));
    else if (parts[0] === 'teams') await viewTeams(stale);
    else if (parts[0] === 'tokens') await viewTokens(stale);
    else if (parts[0] === 'secrets' || parts.length === 0) await viewSecrets(stale);
    else {
      location.hash = '#/secrets';
    }
  } catch (err) {
    if (!stale()) fail(err);
  }
}

export function secretNameFrom(part) {
  const name = decodeURIComponent(part);
  if (!SCOPED_SECRET_NAME.test(name)) throw new Invalid(`"${name}" is not a secret name; pick one from the list`);
  return name;
}

export function teamNameFrom(part) {
  const name = decodeURIComponent(part);
  if (!TEAM_NAME.test(name)) throw new Invalid(`"${name}" is not a team name; pick one from the list`);
  return name;
}

export function sessionIdFrom(part) {
  const id = decodeURIComponent(part);
  if (!SESSION_ID.test(id)) throw new Invalid(`"${id}" is not a session id; pick one from the list`);
  return id;
}

// ---------------------------------------------------------------- sign in

export async function onSignIn(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const input = $('signin-token');
  const value = input.value.trim();
  clearErrors();
  // A refused token stays in the field, marked, so a typo can be fixed; the field is emptied
  // once the token is taken (it then lives in this tab's sessionStorage only).
  const refuse = (err) => showError(new Invalid(messageOf(err), input), form);
  if (!value) {
    refuse('paste an API token first');
    return;
  }
  if (value.length > 256 || /[^\x21-\x7e]/.test(value)) {
    refuse('that is not an API token: a token is one word of printable characters (mst_…)');
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api('GET', 'v1/secrets');
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    refuse(err);
    return;
  }
  input.value = '';
  // Straight on to where the user was going (a bookmarked #/sessions, say).
  route();
}
