// Constants of the client: where the API is, names' shapes, polling pace, labels.

export const TOKEN_KEY = 'maestro.token';
// The page lives at <broker>/ui/, so the API is one level up (also behind a path prefix).
export const BASE = new URL('../', document.baseURI);
// The shapes of names (`maestro_wire::names`), checked here so a mistake is named before
// anything is sent. Size limits and action names come from the broker (`limits()` in api.js).
export const SECRET_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;
// A secret as users name it: their own `NAME`, or a team's `team/NAME` (docs/teams.md).
export const SCOPED_SECRET_NAME = /^(?:[a-z][a-z0-9-]{0,31}\/)?[A-Z][A-Z0-9_]{0,63}$/;
export const TEAM_NAME = /^[a-z][a-z0-9-]{0,31}$/;
export const VARIABLE_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
export const SESSION_ID = /^[A-Za-z0-9_-]{1,128}$/;
export const AUDIT_PAGE = 100; // records a history page shows
export const MULTI_LINE_CHECKS = ['text', 'gcp_service_account'];
// A provider as users name it: their own, or a team's `team/name` (docs/teams.md).
export const PROVIDER_NAME = /^(?:[a-z][a-z0-9-]{0,31}\/)?[a-z][a-z0-9_-]{0,31}$/;
// An authorization is asked about this often while it waits; the page gives up on its own
// this long after the authorization expired (the broker normally says so first).
export const POLL_MS = 1500;
export const POLL_GRACE_MS = 30000;
export const OPEN_STATES = ['pending', 'exchanging'];
// How the provider form names the presets (their data comes from oauth-presets.json).
export const PRESET_LABELS = {
  github: 'GitHub', gitlab: 'GitLab', microsoft: 'Microsoft (Entra ID, Microsoft Graph)',
  google: 'Google (Google Cloud, Workspace)',
  custom: 'Custom OAuth 2.0 provider',
};
export const ACTION_TONE = {
  created: 'ok', activated: 'ok', enrolled: 'ok', session_created: 'ok', refreshed: 'ok',
  fetched: 'info', injected: 'info', file_read: 'info', edited: 'info',
  deleted: 'muted', deactivated: 'muted', session_ended: 'muted',
  denied: 'bad', refresh_failed: 'bad',
  substituted: 'info', leak_attempt: 'bad', decoy_read: 'bad', scan_finding: 'bad',
  compromised: 'bad', expired: 'muted', team_changed: 'info', token_changed: 'info',
};
