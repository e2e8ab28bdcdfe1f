// What the page holds between views: one object, shared by every module.

export const state = {
  meta: null, // the broker's limits, audit actions and redirect URI (`GET /v1/meta`), loaded first
  kinds: null, // the catalog, loaded once
  secrets: [],
  teams: [], // the user's teams with their role
  team: null, // the team a team page shows, with its members
  whoami: null, // the signed-in user's name (`GET /v1/whoami`)
  tokenId: null, // the public id of the token this tab signed in with (`GET /v1/whoami`)
  tokens: [], // the user's API tokens as listed (never a value)
  tokensTeam: '', // the team whose tokens the tokens page shows; '': the user's own
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
  // Bumped on every view change: a view's answers that arrive after the user moved on are
  // dropped.
  generation: 0,
  fieldFinders: new Map(), // form id -> the input a broker's refusal names (messages.js)
};
