// Errors, notices and the confirmation dialog.

import { ApiFailure, token } from './api.js';
import { signOut } from './router.js';
import { $, shown } from './util.js';

// ---------------------------------------------------------------- messages

let noticeTimer = null;

export function messageOf(err) {
  return (err && err.message) || String(err);
}

export function showError(err, form) {
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
