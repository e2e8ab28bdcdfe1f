// Small helpers: building elements, showing text safely, times, badges and chips.

import { ACTION_TONE } from './constants.js';

// ---------------------------------------------------------------- small helpers

export const $ = (id) => document.getElementById(id);

// Text shown as it is could still mislead: Unicode control (Cc) and format (Cf) characters
// (a right-to-left override that reverses a file name, a zero-width space that hides a
// difference, an escape sequence) are shown escaped, as `\u{202e}`, like the CLI does.
export const HIDDEN = /[\p{Cc}\p{Cf}]/gu;
export function shown(text) {
  return String(text).replace(HIDDEN, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
}

// What an audit record's detail cell says: the detail, the executable the kernel reported
// and the name the process claimed; and for a coalesced record, how many uses.
export function detailText(e) {
  const parts = [];
  if (e.detail) parts.push(e.detail);
  if (e.exe) parts.push(`exe ${e.exe}`);
  if (e.claimed_command) parts.push(`claimed ${e.claimed_command}`);
  if (e.count && e.count > 1) {
    parts.push(`${e.count} uses${e.last_at ? ` until ${formatTime(e.last_at)}` : ''}`);
  }
  return parts.join('; ');
}

export function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(shown(child)));
  }
  return parent;
}

// Makes an element: props are attributes, except `class`, `text` and `on<event>` handlers.
export function h(tag, props, ...children) {
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

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const enc = encodeURIComponent;
export const pad = (n) => String(n).padStart(2, '0');
export const shortId = (id) => (id.length > 10 ? `${id.slice(0, 8)}…` : id);

// The browser's time zone as a short name (UTC, CET, GMT+2), shown after every time: the
// broker records UTC, the page shows local time, and a time without its zone is ambiguous.
export function zoneOf(d) {
  try {
    const part = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' })
      .formatToParts(d).find((p) => p.type === 'timeZoneName');
    if (part) return part.value;
  } catch (_) {
    // No Intl: the offset, below.
  }
  const offset = -d.getTimezoneOffset();
  const sign = offset < 0 ? '-' : '+';
  return `UTC${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
}

export function formatTime(rfc) {
  const d = new Date(rfc);
  if (Number.isNaN(d.getTime())) return rfc;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneOf(d)}`;
}

// Whole seconds as at most two units (`1h30m`, `90d`), as the CLI prints them.
export function formatSecs(secs) {
  const units = [[86400, 'd'], [3600, 'h'], [60, 'm'], [1, 's']];
  let left = Math.max(0, Math.floor(secs));
  if (left === 0) return '0s';
  let out = '';
  let shown = 0;
  for (const [size, unit] of units) {
    if (left >= size && shown < 2) {
      out += `${Math.floor(left / size)}${unit}`;
      left %= size;
      shown += 1;
    } else if (shown > 0) {
      shown = 2;
    }
  }
  return out;
}

// Seconds until an RFC 3339 time (0 once it has passed). The broker answers times, not
// ticking ages, so a page computes what is left itself.
export function secsUntil(at) {
  return Math.max(0, (Date.parse(at) - Date.now()) / 1000);
}

export function relativeTime(rfc) {
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
export function timeEl(rfc, relative) {
  if (!rfc) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: rfc, title: `${formatTime(rfc)} (${rfc})` },
    relative ? relativeTime(rfc) : formatTime(rfc));
}

export const muted = (text) => h('span', { class: 'muted' }, text);
export const badge = (text, tone) => h('span', { class: `badge ${tone || ''}` }, text);
export const chips = (items, cls) => (items.length
  ? h('span', { class: 'chips' }, items.map((t) => h('span', { class: `chip ${cls || ''}` }, t)))
  : muted('—'));

export function sessionLinks(ids) {
  if (!ids || ids.length === 0) return muted('—');
  return h('span', { class: 'chips' }, ids.map((id) => h('a', {
    class: 'chip mono', href: `#/sessions/${enc(id)}`, title: id,
  }, shortId(id))));
}

export function secretLinks(names) {
  if (!names || names.length === 0) return muted('none');
  return h('span', { class: 'chips' }, names.map((n) => h('a', {
    class: 'chip mono', href: `#/secrets/${enc(n)}`,
  }, n)));
}

export function actionBadge(action) {
  return badge(action.replace(/_/g, ' '), ACTION_TONE[action] || '');
}

export function utf8Bytes(text) {
  return new TextEncoder().encode(text).length;
}

export function sizeText(bytes) {
  return bytes < 1024 ? `${bytes} bytes` : `${(bytes / 1024).toFixed(1)} KiB`;
}

export function renderMeta(dl, rows) {
  clear(dl);
  for (const [term, value] of rows) {
    dl.appendChild(h('div', { class: 'meta-row' }, h('dt', {}, term), h('dd', {}, value)));
  }
}

export function lowerCase(ev) {
  const el = ev.target;
  const lower = el.value.toLowerCase();
  if (lower !== el.value) {
    const [start, end] = [el.selectionStart, el.selectionEnd];
    el.value = lower;
    el.setSelectionRange(start, end);
  }
}

// A secret name as typed: a team's prefix (`infra/`) in lower case, the name in upper case.
export function scopedCase(ev) {
  const el = ev.target;
  const slash = el.value.indexOf('/');
  const cased = slash < 0 ? el.value.toUpperCase()
    : el.value.slice(0, slash).toLowerCase() + el.value.slice(slash).toUpperCase();
  if (cased !== el.value) {
    const [start, end] = [el.selectionStart, el.selectionEnd];
    el.value = cased;
    el.setSelectionRange(start, end);
  }
}

export function upperCase(ev) {
  const el = ev.target;
  const upper = el.value.toUpperCase();
  if (upper !== el.value) {
    const [start, end] = [el.selectionStart, el.selectionEnd];
    el.value = upper;
    el.setSelectionRange(start, end);
  }
}

export function parseTags(text) {
  return text.split(',').map((t) => t.trim()).filter((t) => t.length > 0);
}

export function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// A session by its label when it has one (the id on hover), else by its short id.
export function sessionLink(id, label) {
  return h('a', { class: 'chip mono', href: `#/sessions/${enc(id)}`, title: id },
    label || shortId(id));
}
