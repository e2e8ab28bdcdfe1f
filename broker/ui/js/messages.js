// Errors, notices and the confirmation dialog. An error about one input is shown beside it
// (with `aria-invalid` and the message in its description); others at the foot of their form,
// or in the banner at the top of the page.

import { ApiFailure } from './api.js';
import { signOut } from './router.js';
import { state } from './state.js';
import { $, shown } from './util.js';

let noticeTimer = null;

export function messageOf(err) {
  return (err && err.message) || String(err);
}

// How each form finds the input the broker named in a refusal (`ApiError.field`): form id ->
// function(field) -> element or null. Registered by the module that owns the form when it is
// evaluated, so kept in `state` (a module with no imports, always evaluated first).
export function findFieldsWith(formId, finder) {
  state.fieldFinders.set(formId, finder);
}

function inputOf(err, form) {
  if (!err || !form) return null;
  let el = null;
  if (err instanceof ApiFailure && err.field) {
    const finder = state.fieldFinders.get(form.id);
    el = finder ? finder(err.field) : null;
  } else if (err.field) {
    el = typeof err.field === 'string' ? document.getElementById(err.field) : err.field;
  }
  // A hidden input (a row the form does not show now) cannot carry its message.
  return el && form.contains(el) && el.getClientRects().length > 0 ? el : null;
}

// Shows `message` beside `input`: an element after its field, named by its description.
export function markField(input, message) {
  const id = `${input.id || 'field'}-error`;
  let slot = document.getElementById(id);
  if (!slot) {
    slot = document.createElement('p');
    slot.id = id;
    slot.className = 'field-error';
    const field = input.closest('.field') || input.parentElement;
    field.appendChild(slot);
  }
  slot.textContent = shown(message);
  slot.hidden = false;
  input.setAttribute('aria-invalid', 'true');
  const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
  if (!described.includes(id)) input.setAttribute('aria-describedby', [id, ...described].join(' '));
}

function unmarkFields(root) {
  for (const input of root.querySelectorAll('[aria-invalid="true"]')) {
    input.removeAttribute('aria-invalid');
    const id = `${input.id || 'field'}-error`;
    const rest = (input.getAttribute('aria-describedby') || '').split(' ').filter((d) => d && d !== id);
    if (rest.length) input.setAttribute('aria-describedby', rest.join(' '));
    else input.removeAttribute('aria-describedby');
  }
  for (const slot of root.querySelectorAll('.field-error')) {
    slot.hidden = true;
    slot.textContent = '';
  }
}

export function showError(err, form) {
  const message = messageOf(err);
  const input = inputOf(err, form);
  if (input) {
    markField(input, message);
    // The input comes into view with its message; whatever was typed stays.
    input.focus({ preventScroll: true });
    input.scrollIntoView({ block: 'center' });
    return;
  }
  const slot = form && form.querySelector('.form-error');
  if (slot) {
    slot.textContent = shown(message);
    slot.hidden = false;
    // The foot of a long form may be below the screen.
    slot.scrollIntoView({ block: 'nearest' });
  } else {
    $('error-text').textContent = shown(message);
    $('error-banner').hidden = false;
  }
}

// An error of any request: an expired or revoked token sends the user back to sign in.
export function fail(err, form) {
  if (err instanceof ApiFailure && err.status === 401) {
    signOut(err.message);
    return;
  }
  showError(err, form);
}

export function clearErrors() {
  $('error-banner').hidden = true;
  for (const slot of document.querySelectorAll('.form-error')) {
    slot.hidden = true;
    slot.textContent = '';
  }
  unmarkFields(document);
}

export function notify(text) {
  const notice = $('notice');
  notice.textContent = shown(text);
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
}

export function confirmAction({ title, text, ok }) {
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

export async function copyText(input, what) {
  try {
    await navigator.clipboard.writeText(input.value);
    notify(`${what} copied.`);
  } catch (_) {
    input.focus();
    input.select();
    notify(`Press Ctrl+C (or ⌘C) to copy the selected ${what.toLowerCase()}.`);
  }
}
