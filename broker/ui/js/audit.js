// Usage history: the user's audit trail, filtered and paged by the broker.

import { ApiFailure, api } from './api.js';
import { AUDIT_PAGE } from './constants.js';
import { clearErrors, fail, showError } from './messages.js';
import { show } from './router.js';
import { state } from './state.js';
import { $, actionBadge, clear, detailText, enc, h, muted, sessionLink, timeEl } from './util.js';

// ---------------------------------------------------------------- audit

// The broker filters and pages (`GET /v1/audit`, docs/broker.md "History and export"): a
// page is AUDIT_PAGE records; Older asks for those before the page's oldest `seq`, Newer for
// those after its newest, so paging never skips or repeats a record while the trail grows.
export async function viewAudit(stale) {
  show('audit', 'audit');
  await loadAuditPage(stale, null);
}

export function auditQuery(position) {
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
export async function loadAuditPage(stale, position) {
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

export function auditPageFrom(edge) {
  if (state.audit.length === 0) return;
  const seqs = state.audit.map((e) => e.seq);
  const position = edge === 'older' ? ['before', Math.min(...seqs)] : ['after', Math.max(...seqs)];
  loadAuditPage(null, position).catch((err) => fail(err));
}

export function renderAudit() {
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
