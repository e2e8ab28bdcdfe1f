// Adding and editing a secret: the kind's fields, generic variables, files, the submit.

import { actionsText, parseActions } from './alerts.js';
import { Invalid, api, kindByName, limits, loadKinds } from './api.js';
import { MULTI_LINE_CHECKS, SCOPED_SECRET_NAME, VARIABLE_NAME } from './constants.js';
import { clearErrors, fail, findFieldsWith, messageOf, notify, showError } from './messages.js';
import { show } from './router.js';
import { checkExposure, parseHosts, renderExposure } from './secrets.js';
import { state } from './state.js';
import { $, clear, enc, h, parseTags, sameList, shown, sizeText, upperCase, utf8Bytes } from './util.js';

// ---------------------------------------------------------------- add and edit

let rowCounter = 0;

// Where a refusal of the broker naming a field is shown: the input of that field.
const FORM_INPUTS = {
  name: 'secret-name', kind: 'secret-kind', tags: 'secret-tags', description: 'secret-description',
  hosts: 'secret-hosts', exposure: 'secret-exposure', alerts_off: 'secret-alerts-off', on_alert: 'secret-on-alert',
};
findFieldsWith('secret-form', (field) => {
  if (Object.hasOwn(FORM_INPUTS, field)) return $(FORM_INPUTS[field]);
  for (const row of document.querySelectorAll('#secret-fields .kfield')) {
    if (row.dataset.key === field) return row.querySelector('.value-input');
  }
  for (const row of document.querySelectorAll('#secret-fields .generic-row')) {
    if (row.querySelector('.gname').value.trim() === field) return row.querySelector('.gval');
  }
  return null;
});

export async function viewSecretForm(stale, name) {
  show('loading', 'secrets');
  const kinds = await loadKinds();
  const meta = name ? await api('GET', `v1/secrets/${enc(name)}`) : null;
  if (stale()) return;
  state.form = { mode: name ? 'edit' : 'add', meta, files: new Map() };
  const form = $('secret-form');
  form.reset();
  const select = clear($('secret-kind'));
  for (const k of kinds) {
    select.appendChild(h('option', { value: k.name }, `${k.name} — ${k.title}`));
  }
  if (meta) {
    $('secret-form-title').textContent = shown(`Edit ${meta.name}`);
    $('secret-form-lead').textContent = `Saving makes version ${meta.version + 1}. Only what you `
      + 'type is changed: a value left empty keeps its current value.';
    $('secret-name-row').hidden = true;
    select.value = meta.kind;
    $('secret-description').value = meta.description || '';
    $('secret-tags').value = meta.tags.join(', ');
    $('secret-exposure').value = meta.exposure || 'plain';
    $('secret-hosts').value = (meta.user_hosts || []).join(', ');
    $('secret-alerts-off').value = (meta.alerts_off || []).join(', ');
    $('secret-on-alert').value = actionsText(meta.on_alert);
    $('secret-submit').textContent = 'Save new version';
  } else {
    $('secret-form-title').textContent = 'Add a secret';
    $('secret-form-lead').textContent = 'Pick a kind: the form shows its fields. Values are '
      + 'encrypted as soon as they are saved and are never shown again.';
    $('secret-name-row').hidden = false;
    select.value = 'generic';
    $('secret-exposure').value = 'plain';
    $('secret-hosts').value = '';
    $('secret-alerts-off').value = '';
    $('secret-on-alert').value = '';
    $('secret-submit').textContent = 'Save secret';
  }
  renderKindFields();
  renderExposure();
  show('secret-form', 'secrets');
  (meta ? select : $('secret-name')).focus();
}

export function onKindChange() {
  renderKindFields();
  renderExposure();
}

// Draws the value inputs of the selected kind. In edit mode with the kind unchanged, the
// secret's current fields are marked and may be removed; a value typed replaces one.
export function renderKindFields() {
  const f = state.form;
  if (!f) return;
  f.files.clear();
  const kind = kindByName($('secret-kind').value);
  const container = clear($('secret-fields'));
  if (!kind) return;
  const editing = f.mode === 'edit';
  const sameKind = editing && f.meta.kind === kind.name;
  const existing = sameKind ? f.meta.field_names : [];
  const outputs = kind.free_fields
    ? 'each variable you add here, and a file of the same name under the mount'
    : [kind.variables.map((v) => v.name).join(', '),
      kind.files.length ? `; files ${kind.files.map((x) => x.path).join(', ')}` : ''].join('');
  $('secret-kind-help').textContent = shown(`Provides ${outputs}.${kind.setup ? ` Setup: ${kind.setup}` : ''}`);
  let help;
  if (editing && !sameKind) {
    help = `Changing the kind replaces every field: give all the values of ${kind.name}; fields marked * are required.`;
  } else if (editing) {
    help = kind.free_fields
      ? 'Leave a value empty to keep it; add a row for a new variable.'
      : 'Leave a value empty to keep it.';
  } else {
    help = kind.free_fields
      ? 'Each row is one variable: its name (capital letters, digits, _) and its value.'
      : 'Fields marked * are required.';
  }
  $('secret-values-help').textContent = shown(help);
  $('generic-tools').hidden = !kind.free_fields;
  if (kind.free_fields) {
    for (const name of existing) container.appendChild(genericRow(name));
    if (existing.length === 0) container.appendChild(genericRow(null));
  } else {
    for (const field of kind.fields) {
      // Fields that are not secret (region, host, port) come back filled in when editing.
      const current = sameKind ? (f.meta.shown_fields || {})[field.name] : undefined;
      container.appendChild(kindFieldRow(field, existing.includes(field.name), editing, !sameKind, current));
    }
  }
}

export function inputKind(field) {
  const check = field.check;
  if (check && typeof check === 'object' && Array.isArray(check.one_of)) return 'select';
  if (field.shown || check === 'host' || check === 'port' || field.default) return 'plain';
  return 'secret';
}

export function kindFieldRow(field, present, editing, fullSet, current) {
  const id = `f-${field.name}`;
  const how = inputKind(field);
  const multiLine = typeof field.check === 'string' && MULTI_LINE_CHECKS.includes(field.check);
  const required = field.required && (!editing || fullSet);
  let input;
  if (how === 'select') {
    input = h('select', { id, class: 'value-input', 'data-key': field.name, 'aria-describedby': `${id}-help` },
      h('option', { value: '' }, editing && !fullSet ? '(unchanged)' : '(not set)'),
      field.check.one_of.map((v) => h('option', { value: v }, v)));
  } else {
    let placeholder = null;
    if (editing && present) placeholder = 'unchanged';
    else if (field.default) placeholder = `default: ${field.default}`;
    else if (multiLine) placeholder = 'paste it on one line, or load the file';
    input = h('input', {
      id,
      type: how === 'plain' ? 'text' : 'password',
      class: 'value-input',
      'data-key': field.name,
      autocomplete: how === 'plain' ? 'off' : 'new-password',
      spellcheck: 'false',
      placeholder,
      inputmode: field.check === 'port' ? 'numeric' : null,
      'aria-required': required ? 'true' : null,
      'aria-describedby': `${id}-help`,
    });
    if (how === 'plain' && field.default && !editing) input.value = field.default;
  }
  if (current !== undefined) {
    input.value = current;
    // Sent again only if changed, so an edit of other fields leaves it as it is.
    input.dataset.original = current;
  }
  const helpParts = [field.help];
  if (field.default) helpParts.push(`${field.default} when left empty`);
  if (multiLine) helpParts.push('multi-line: load the file');
  const row = h('div', { class: 'field kfield', 'data-key': field.name },
    h('label', { for: id },
      h('span', { class: 'mono' }, field.name),
      required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null,
      required ? h('span', { class: 'sr-only' }, ' (required)') : null,
      present ? h('span', { class: 'badge ok mini' }, 'set') : null),
    h('div', { class: 'input-row' }, input, multiLine ? fileButton(field.name, input) : null),
    h('p', { class: 'help', id: `${id}-help` }, helpParts.join(' · ')));
  if (editing && present && !field.required) {
    const removeId = `${id}-remove`;
    row.appendChild(h('div', { class: 'check' },
      h('input', { type: 'checkbox', id: removeId, class: 'remove-field', 'data-key': field.name }),
      h('label', { for: removeId }, `Remove ${field.name}`)));
  }
  return row;
}

// A button that loads a file's text as a field's value (a GCP key, a PEM): the text is held
// in memory until the form is sent, and never shown. `opts` serves other forms than the
// secret form: where the text goes, the form that shows errors, a limit, a transformation.
export function fileButton(key, input, opts) {
  const o = opts || {};
  const files = () => (o.files ? o.files() : state.form.files);
  const formOf = () => (o.form ? o.form() : $('secret-form'));
  const limit = o.limit || limits().max_field_bytes;
  const picker = h('input', { type: 'file', class: 'file-picker', hidden: true, tabindex: '-1', 'aria-hidden': 'true' });
  const status = h('span', { class: 'file-status', 'aria-live': 'polite' });
  const clearButton = h('button', { type: 'button', class: 'small ghost file-clear', hidden: true }, 'Clear file');
  const forget = () => {
    files().delete(key);
    picker.value = '';
    status.textContent = '';
    clearButton.hidden = true;
    input.disabled = false;
  };
  picker.addEventListener('change', async () => {
    const file = picker.files && picker.files[0];
    if (!file) return;
    // A line break or two more than the limit may still fit once a transformation drops it.
    if (file.size > limit + 2) {
      forget();
      showError(new Invalid(`${file.name} is ${sizeText(file.size)}; a value holds at most ${sizeText(limit)}`, input), formOf());
      return;
    }
    try {
      const text = o.transform ? o.transform(await file.text()) : await file.text();
      if (utf8Bytes(text) > limit) {
        forget();
        showError(new Invalid(`${file.name} is ${sizeText(file.size)}; a value holds at most ${sizeText(limit)}`, input), formOf());
        return;
      }
      files().set(key, text);
      input.value = '';
      input.disabled = true;
      status.textContent = shown(`${file.name} loaded (${sizeText(file.size)})`);
      clearButton.hidden = false;
    } catch (err) {
      forget();
      showError(new Invalid(`cannot read ${file.name}: ${messageOf(err)}`, input), formOf());
    }
  });
  clearButton.addEventListener('click', forget);
  return h('span', { class: 'file-tools' },
    h('button', { type: 'button', class: 'small ghost', 'aria-label': `Load ${key} from a file`, onclick: () => picker.click() }, 'Load from file…'),
    picker, status, clearButton);
}

// One variable of a generic secret: an existing one (name fixed, may be removed) or a new one.
export function genericRow(existingName) {
  rowCounter += 1;
  const n = rowCounter;
  const key = `generic-${n}`;
  const nameInput = h('input', {
    id: `gname-${n}`, type: 'text', class: 'mono gname', maxlength: '128', spellcheck: 'false',
    autocomplete: 'off', placeholder: 'API_TOKEN', readonly: existingName ? true : null,
  });
  if (existingName) nameInput.value = existingName;
  else nameInput.addEventListener('input', upperCase);
  const valueInput = h('input', {
    id: `gval-${n}`, type: 'password', class: 'gval', autocomplete: 'new-password', spellcheck: 'false',
    'data-file-key': key, placeholder: existingName ? 'unchanged' : null,
  });
  const row = h('div', { class: 'generic-row', 'data-file-key': key },
    h('div', { class: 'field' }, h('label', { for: `gname-${n}` }, 'Variable'), nameInput),
    h('div', { class: 'field grow' }, h('label', { for: `gval-${n}` }, 'Value'),
      h('div', { class: 'input-row' }, valueInput, fileButton(key, valueInput))));
  if (existingName) {
    row.appendChild(h('div', { class: 'check end' },
      h('input', { type: 'checkbox', id: `gremove-${n}`, class: 'remove-field', 'data-key': existingName }),
      h('label', { for: `gremove-${n}` }, 'Remove')));
  } else {
    row.appendChild(h('div', { class: 'end' }, h('button', {
      type: 'button', class: 'small ghost', 'aria-label': 'Remove this variable row',
      onclick: () => { state.form.files.delete(key); row.remove(); },
    }, 'Remove row')));
  }
  return row;
}

// Reads the values typed or loaded: { fields, remove }. Throws Invalid on a mistake.
export function collectValues(kind, needAllRequired) {
  const f = state.form;
  const fields = {};
  const remove = [];
  const put = (key, value, input) => {
    if (utf8Bytes(value) > limits().max_field_bytes) {
      throw new Invalid(`the value of ${key} is ${sizeText(utf8Bytes(value))}; the limit is ${sizeText(limits().max_field_bytes)}`, input);
    }
    fields[key] = value;
  };
  for (const box of document.querySelectorAll('#secret-fields .remove-field')) {
    if (box.checked) remove.push(box.dataset.key);
  }
  if (kind.free_fields) {
    for (const row of document.querySelectorAll('#secret-fields .generic-row')) {
      const nameInput = row.querySelector('.gname');
      const valueInput = row.querySelector('.gval');
      const name = nameInput.value.trim();
      const fileKey = row.dataset.fileKey;
      const value = f.files.has(fileKey) ? f.files.get(fileKey) : valueInput.value;
      if (!name && !value) continue;
      if (!VARIABLE_NAME.test(name)) {
        throw new Invalid(`"${name}" is not a variable name: use capital letters, digits and _, not starting with a digit`, nameInput);
      }
      if (Object.hasOwn(fields, name)) throw new Invalid(`the variable ${name} is given twice`, nameInput);
      if (value) {
        if (remove.includes(name)) throw new Invalid(`${name} is both given a value and removed; pick one`, valueInput);
        put(name, value, valueInput);
      } else if (!nameInput.readOnly) {
        throw new Invalid(`give ${name} a value, or remove its row`, valueInput);
      }
    }
  } else {
    for (const row of document.querySelectorAll('#secret-fields .kfield')) {
      const key = row.dataset.key;
      const input = row.querySelector('.value-input');
      const value = f.files.has(key) ? f.files.get(key) : input.value;
      const unchanged = !f.files.has(key) && input.dataset.original !== undefined && value === input.dataset.original;
      if (value !== '' && !unchanged) {
        if (remove.includes(key)) throw new Invalid(`${key} is both given a value and removed; pick one`, input);
        put(key, value, input);
      }
    }
    if (needAllRequired) {
      for (const field of kind.fields) {
        if (field.required && !Object.hasOwn(fields, field.name)) {
          throw new Invalid(`${kind.name} requires ${field.name}; give it a value`, `f-${field.name}`);
        }
      }
    }
  }
  if (Object.keys(fields).length > limits().max_fields) {
    throw new Invalid(`a secret has at most ${limits().max_fields} fields; this one has ${Object.keys(fields).length}`);
  }
  return { fields, remove };
}

// Empties every value input (secret values, an OAuth client secret) and drops loaded files:
// after a successful save, on leaving a form, on sign-out and when the page goes. A refused
// submit keeps them, so that the user corrects one input instead of typing all again.
export function wipeValues() {
  const forms = ['#secret-form', '#provider-form'];
  const inputs = forms.map((f) => `${f} input[type=password], ${f} input[type=file]`).join(', ');
  for (const el of document.querySelectorAll(inputs)) {
    el.value = '';
    el.disabled = false;
  }
  for (const el of document.querySelectorAll(forms.map((f) => `${f} .file-status`).join(', '))) el.textContent = '';
  for (const el of document.querySelectorAll(forms.map((f) => `${f} .file-clear`).join(', '))) el.hidden = true;
  if (state.form) state.form.files.clear();
  state.oauthFiles.clear();
}

export async function onSecretSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const f = state.form;
  if (!f) return;
  clearErrors();
  const submit = $('secret-submit');
  submit.disabled = true;
  let typed = false;
  try {
    const kind = kindByName($('secret-kind').value);
    if (!kind) throw new Invalid('pick a kind', 'secret-kind');
    const description = $('secret-description').value.trim();
    const tags = parseTags($('secret-tags').value);
    if (tags.length > limits().max_tags) throw new Invalid(`a secret has at most ${limits().max_tags} tags; this has ${tags.length}`, 'secret-tags');
    const exposure = $('secret-exposure').value === 'sealed' ? 'sealed' : 'plain';
    // Plain secrets name no hosts; the broker checks the rest against the kind.
    const hosts = exposure === 'sealed' ? parseHosts($('secret-hosts').value) : [];
    let meta;
    if (f.mode === 'add') {
      const name = $('secret-name').value.trim();
      if (!SCOPED_SECRET_NAME.test(name)) {
        throw new Invalid(`"${name}" is not a secret name: 1 to 64 capital letters, digits and _, starting with a letter (AWS_PROD), or team/NAME for a team's secret`, 'secret-name');
      }
      const { fields } = collectValues(kind, true);
      typed = Object.keys(fields).length > 0;
      if (kind.free_fields && !typed) {
        throw new Invalid('add at least one variable with its value', document.querySelector('#secret-fields .gname'));
      }
      checkExposure(kind, exposure, hosts);
      const body = { name, kind: kind.name, fields, tags, exposure };
      if (hosts.length) body.hosts = hosts;
      const alertsOff = parseTags($('secret-alerts-off').value);
      if (alertsOff.length) body.alerts_off = alertsOff;
      const onAlert = parseActions($('secret-on-alert').value, 'secret-on-alert');
      if (onAlert) body.on_alert = onAlert;
      if (description) body.description = description;
      meta = await api('POST', 'v1/secrets', body);
      notify(`Saved ${meta.name} (version ${meta.version}). It provides ${meta.variables.join(', ') || 'no variables'}.`);
    } else {
      const kindChanged = kind.name !== f.meta.kind;
      const { fields, remove } = collectValues(kind, kindChanged);
      typed = Object.keys(fields).length > 0;
      checkExposure(kind, exposure, hosts);
      const body = {};
      if (kindChanged) body.kind = kind.name;
      if (typed || kindChanged) body.fields = fields;
      if (remove.length) body.remove_fields = remove;
      if (description !== (f.meta.description || '')) body.description = description;
      if (!sameList(tags, f.meta.tags)) body.tags = tags;
      if (exposure !== (f.meta.exposure || 'plain')) body.exposure = exposure;
      if (exposure === 'sealed' && !sameList(hosts, f.meta.user_hosts || [])) body.hosts = hosts;
      const alertsOff = parseTags($('secret-alerts-off').value);
      if (!sameList(alertsOff, f.meta.alerts_off || [])) body.alerts_off = alertsOff;
      const onAlertText = $('secret-on-alert').value.trim();
      if (onAlertText !== actionsText(f.meta.on_alert)) {
        const onAlert = parseActions(onAlertText, 'secret-on-alert');
        if (onAlert) body.on_alert = onAlert;
        else body.clear_on_alert = true;
      }
      if (Object.keys(body).length === 0) {
        throw new Invalid('nothing to change: type a value, remove a field, or change the description, tags, exposure or hosts');
      }
      meta = await api('PATCH', `v1/secrets/${enc(f.meta.name)}`, body);
      notify(`Saved ${meta.name}: now version ${meta.version}.`);
    }
    // Saved: the values go now, before the page moves on.
    wipeValues();
    state.form = null;
    location.hash = `#/secrets/${enc(meta.name)}`;
  } catch (err) {
    // Refused: everything typed or loaded stays, the message beside the input at fault.
    fail(err, form);
  } finally {
    submit.disabled = false;
  }
}

export function onAddGenericRow() {
  const row = genericRow(null);
  $('secret-fields').appendChild(row);
  row.querySelector('.gname').focus();
}
