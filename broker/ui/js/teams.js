// Teams: the list of the user's teams, creating one, and a team's page with its members
// (owners add members, change roles and remove them). A team's secrets are ordinary secrets
// named `team/NAME`: they are listed, grouped by team, under Secrets. What each role may do is
// the broker's to decide (docs/teams.md); this page only offers what the user's role allows and
// shows the broker's refusal otherwise.

import { Invalid, api } from './api.js';
import { TEAM_NAME } from './constants.js';
import { clearErrors, confirmAction, fail, notify, showError } from './messages.js';
import { route, show } from './router.js';
import { state } from './state.js';
import { $, badge, clear, enc, h, muted, shown, timeEl } from './util.js';

export const ROLES = ['owner', 'admin', 'member', 'viewer'];
const ROLE_HELP = {
  owner: 'manages members and everything below',
  admin: 'adds, edits and deletes the team\'s secrets',
  member: 'activates the team\'s secrets in their own sessions',
  viewer: 'sees metadata and usage only',
};

export async function viewTeams(stale) {
  show('teams', 'teams');
  const teams = await api('GET', 'v1/teams');
  if (stale()) return;
  state.teams = teams;
  const body = clear(document.querySelector('#teams-table tbody'));
  $('teams-empty').hidden = teams.length > 0;
  $('teams-table').hidden = teams.length === 0;
  for (const t of teams) {
    body.appendChild(h('tr', {},
      h('th', { scope: 'row' }, h('a', { class: 'mono strong', href: `#/teams/${enc(t.name)}` }, t.name)),
      h('td', {}, badge(t.role, t.role === 'owner' ? 'ok' : 'kind')),
      h('td', { class: 'num' }, String(t.secrets)),
      h('td', {}, timeEl(t.created_at, true))));
  }
}

export async function onTeamCreate(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const name = $('team-name').value.trim();
  try {
    if (!TEAM_NAME.test(name)) {
      throw new Invalid(`"${name}" is not a team name: 1 to 32 of a-z, 0-9 and -, starting with a letter (infra)`, 'team-name');
    }
    await api('POST', 'v1/teams', { name });
    form.reset();
    notify(`Team ${name} created, with you as its owner. Add members below; add its secrets as ${name}/NAME.`);
    location.hash = `#/teams/${enc(name)}`;
  } catch (err) {
    showError(err, form);
  }
}

function roleSelect(id, value) {
  const select = h('select', { id });
  for (const r of ROLES) select.appendChild(h('option', { value: r, title: ROLE_HELP[r] }, r));
  select.value = value;
  return select;
}

export async function viewTeam(stale, name) {
  show('team', 'teams');
  $('team-title').textContent = shown(`Team ${name}`);
  const [team, secrets, who] = await Promise.all([
    api('GET', `v1/teams/${enc(name)}`), api('GET', 'v1/secrets'),
    state.whoami ? null : api('GET', 'v1/whoami')]);
  if (stale()) return;
  if (who) state.whoami = who.user;
  state.team = team;
  const owner = team.role === 'owner';
  $('team-role').textContent = shown(`Your role: ${team.role} (${ROLE_HELP[team.role]}).`);
  $('member-form').hidden = !owner;
  $('team-delete').hidden = !owner;
  const body = clear(document.querySelector('#members-table tbody'));
  for (const m of team.members) {
    const cells = [
      h('th', { scope: 'row', class: 'mono' }, m.user),
      h('td', {}, owner ? roleSelect(`role-${m.user}`, m.role) : badge(m.role, 'kind')),
      h('td', {}, timeEl(m.added_at, true)),
    ];
    const actions = h('td', { class: 'row-actions' });
    if (owner) {
      actions.appendChild(h('button', {
        type: 'button', class: 'small ghost', 'aria-label': `Save the role of ${m.user}`,
        onclick: () => setRole(team.name, m.user, $(`role-${m.user}`).value),
      }, 'Save role'));
    }
    if (owner || m.user === state.whoami) {
      actions.appendChild(h('button', {
        type: 'button', class: 'small danger-ghost', 'aria-label': `Remove ${m.user} from ${team.name}`,
        onclick: () => removeMember(team.name, m.user),
      }, 'Remove'));
    }
    cells.push(actions);
    body.appendChild(h('tr', {}, ...cells));
  }
  const list = clear($('team-secrets'));
  const mine = secrets.filter((s) => s.team === team.name);
  if (mine.length === 0) list.appendChild(muted(`No secrets yet; add one named ${team.name}/NAME under Secrets.`));
  for (const s of mine) {
    list.appendChild(h('li', {}, h('a', { class: 'mono', href: `#/secrets/${enc(s.name)}` }, s.name), ' ',
      badge(s.kind, 'kind')));
  }
}

async function setRole(team, user, role) {
  clearErrors();
  try {
    const c = await api('PUT', `v1/teams/${enc(team)}/members/${enc(user)}`, { role });
    const n = c.deactivated.length;
    notify(`${user} is now ${c.role} in ${team}${n ? `; the team's secrets left ${n} of their activation${n > 1 ? 's' : ''}` : ''}.`);
    route({ keepErrors: true });
  } catch (err) {
    fail(err);
  }
}

export async function onMemberAdd(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  clearErrors();
  const team = state.team && state.team.name;
  const user = $('member-user').value.trim();
  const role = $('member-role').value;
  try {
    if (!team) throw new Invalid('open a team first');
    if (!user || user.length > 64) throw new Invalid('give the user\'s name (as the operator made it)', 'member-user');
    const c = await api('PUT', `v1/teams/${enc(team)}/members/${enc(user)}`, { role });
    form.reset();
    notify(c.before ? `${user}'s role changed from ${c.before} to ${c.role}.` : `${user} added to ${team} as ${c.role}.`);
    route({ keepErrors: true });
  } catch (err) {
    showError(err, form);
  }
}

async function removeMember(team, user) {
  clearErrors();
  const yes = await confirmAction({
    title: `Remove ${user} from ${team}?`,
    text: `The team's secrets are deactivated at once in every live session of ${user}'s, and ${user} can no longer see or activate them.`,
    ok: 'Remove member',
  });
  if (!yes) return;
  try {
    const c = await api('DELETE', `v1/teams/${enc(team)}/members/${enc(user)}`);
    const n = c.deactivated.length;
    notify(`${user} removed from ${team}${n ? `; deactivated in ${n} of their activation${n > 1 ? 's' : ''}` : ''}.`);
    if (user === state.whoami) location.hash = '#/teams';
    else route({ keepErrors: true });
  } catch (err) {
    fail(err);
  }
}

export async function onTeamDelete() {
  clearErrors();
  const team = state.team && state.team.name;
  if (!team) return;
  const yes = await confirmAction({
    title: `Delete team ${team}?`,
    text: 'Only a team that owns no secrets any more can be deleted. Its members lose it.',
    ok: 'Delete team',
  });
  if (!yes) return;
  try {
    await api('DELETE', `v1/teams/${enc(team)}`);
    notify(`Team ${team} deleted.`);
    location.hash = '#/teams';
  } catch (err) {
    fail(err);
  }
}
