// Alerts: the list, acknowledging, and what happens on an alert.

import { Invalid, api } from './api.js';
import { clearErrors, fail, notify } from './messages.js';
import { route, show } from './router.js';
import { state } from './state.js';
import { $, badge, chips, clear, enc, h, muted, parseTags, sessionLinks, timeEl } from './util.js';

// ---------------------------------------------------------------- alerts


// A secret's or the user's actions as typed: `default` (empty) is null, `none` is [].
export function parseActions(text, field) {
  const t = text.trim();
  if (t === '' || t === 'default') return null;
  if (t === 'none') return [];
  const list = parseTags(t);
  const known = state.meta.alert_actions;
  const bad = list.find((a) => !known.includes(a));
  if (bad) throw new Invalid(`"${bad}" is not an action: use ${known.join(', ')}, none or default`, field);
  return list;
}

export function actionsText(actions) {
  if (!actions) return '';
  return actions.length ? actions.join(', ') : 'none';
}

export async function viewAlerts(stale, secret) {
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

export function renderAlerts() {
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

export async function ackAlert(alert) {
  clearErrors();
  try {
    await api('POST', 'v1/alerts/ack', { ids: [alert.id] });
    notify(`Acknowledged alert ${alert.id}.`);
    await route();
  } catch (err) {
    fail(err);
  }
}

export async function onAlertsConfig(ev) {
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
