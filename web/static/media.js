// The media page: a paged table of the library's media; edit metadata (PATCH) or delete (with a confirm).

import { api, enc } from './api.js';
import { onLangChange, t } from './i18n.js';
import { openPlayer } from './player.js';
import { currentLibrary, on, state } from './state.js';
import {
  basename, confirmDialog, errorMessage, fmtBytes, fmtDate, fmtDuration, h, icon, shortPath, toast,
} from './ui.js';

let offset = 0;
let limit = 25;
let page = null; // {items, total, offset, limit}
let visible = false;
let editing = null; // the medium in the edit dialog
let loading = 0;

export function initMedia() {
  document.getElementById('media-prev').addEventListener('click', () => load(Math.max(0, offset - limit)));
  document.getElementById('media-next').addEventListener('click', () => load(offset + limit));
  document.getElementById('media-refresh').addEventListener('click', () => load(offset));
  document.getElementById('media-page-size').addEventListener('change', (event) => {
    limit = Number(event.target.value) || 25;
    load(0);
  });
  document.getElementById('edit-form').addEventListener('submit', (event) => {
    event.preventDefault();
    save();
  });
  document.getElementById('edit-cancel').addEventListener('click', () => document.getElementById('edit-dialog').close());
  document.getElementById('edit-add-field').addEventListener('click', () => {
    const row = fieldRow('', '');
    document.getElementById('edit-fields').append(row);
    renumberFields();
    row.querySelector('input').focus();
  });
  on('library', () => {
    offset = 0;
    if (visible) load(0);
    else page = null;
  });
  on('media-changed', () => {
    if (visible) load(offset);
    else page = null;
  });
  onLangChange(() => {
    if (page) render();
  });
}

export function showMedia() {
  visible = true;
  load(page ? offset : 0);
}

export function hideMedia() {
  visible = false;
}

async function load(from) {
  const library = currentLibrary();
  const body = document.getElementById('media-body');
  if (!library) {
    page = null;
    body.replaceChildren();
    document.getElementById('media-count').textContent = t('lib.none');
    document.getElementById('media-empty').hidden = true;
    document.getElementById('delete-library').hidden = true;
    return;
  }
  const ticket = ++loading;
  document.getElementById('media-table').setAttribute('aria-busy', 'true');
  try {
    const result = await api(`/libraries/${enc(library.name)}/media`, { query: { offset: from, limit } });
    if (ticket !== loading) return;
    if (result.items.length === 0 && from > 0 && result.total > 0) {
      load(Math.max(0, Math.floor((result.total - 1) / limit) * limit));
      return;
    }
    page = result;
    offset = from;
    render();
  } catch (error) {
    if (ticket === loading) toast(errorMessage(error));
  } finally {
    if (ticket === loading) document.getElementById('media-table').removeAttribute('aria-busy');
  }
}

function render() {
  const body = document.getElementById('media-body');
  const { items, total } = page;
  document.getElementById('media-count').textContent = t('media.count', { total, library: state.library });
  document.getElementById('media-empty').hidden = total > 0;
  document.getElementById('media-table').hidden = total === 0;
  document.getElementById('delete-library').hidden = false;
  const from = total ? offset + 1 : 0;
  const to = Math.min(offset + items.length, total);
  document.getElementById('media-range').textContent = t('media.page', { from, to, total });
  document.getElementById('media-prev').disabled = offset <= 0;
  document.getElementById('media-next').disabled = offset + items.length >= total;
  document.getElementById('media-pager').hidden = total === 0;
  const focused = document.activeElement?.closest?.('tr')?.dataset.id;
  const focusedAction = document.activeElement?.dataset?.action;
  body.replaceChildren(...items.map(row));
  if (focused && focusedAction) body.querySelector(`tr[data-id="${focused}"] [data-action="${focusedAction}"]`)?.focus();
}

function row(medium) {
  const title = medium.title || basename(medium.path);
  const play = () => openPlayer({
    title, path: medium.path, url: medium.stream_url, kind: medium.kind, start: 0,
    end: medium.duration || 0, matches: [], routes: {},
  });
  return h('tr', { dataset: { id: String(medium.id) } },
    h('td', { class: 'media-thumb-cell' }, h('button', {
      type: 'button', class: 'media-thumb', 'aria-label': t('media.play_label', { title }), onclick: play,
      dataset: { action: 'play' },
    }, medium.thumbnail_url ? h('img', { src: medium.thumbnail_url, alt: '', loading: 'lazy' }) : icon('film'),
    medium.kind === 'video' ? h('span', { class: 'badge-time' }, fmtDuration(medium.duration)) : null)),
    h('td', { class: 'media-title-cell' },
      h('span', { class: 'media-title' }, title),
      h('span', { class: 'file-path', title: medium.path }, shortPath(medium.path)),
      medium.description ? h('span', { class: 'media-desc' }, medium.description) : null),
    h('td', {}, h('span', { class: `kind-pill kind-${medium.kind}` }, icon(medium.kind === 'image' ? 'image' : 'film'), t(`kind.${medium.kind}`))),
    h('td', { class: 'num' }, medium.kind === 'video' ? fmtDuration(medium.duration) : t('common.none'),
      medium.width ? h('span', { class: 'dim-line' }, `${medium.width}×${medium.height}`) : null),
    h('td', { class: 'num' }, fmtBytes(medium.size)),
    h('td', { class: 'media-tags' },
      (medium.tags || []).map((tag) => h('span', { class: 'tag' }, `#${tag}`)),
      Object.entries(medium.fields || {}).map(([k, v]) => h('span', { class: 'field-chip' }, h('b', {}, k), ` ${v}`))),
    h('td', { class: 'num nowrap' }, fmtDate(medium.recorded)),
    h('td', { class: 'row-actions' },
      h('button', { type: 'button', class: 'btn small ghost', 'aria-label': t('media.edit_label', { title }),
        dataset: { action: 'edit' }, onclick: () => edit(medium) }, icon('edit'), h('span', {}, t('media.edit'))),
      h('button', { type: 'button', class: 'btn small ghost danger-text', 'aria-label': t('media.delete_label', { title }),
        dataset: { action: 'delete' }, onclick: () => remove(medium) }, icon('trash'), h('span', {}, t('common.delete')))));
}

// -- edit ----------------------------------------------------------------------------------------------

function edit(medium) {
  editing = medium;
  const dialog = document.getElementById('edit-dialog');
  document.getElementById('edit-file').textContent = medium.path;
  document.getElementById('edit-title').value = medium.title || '';
  document.getElementById('edit-description').value = medium.description || '';
  document.getElementById('edit-tags').value = (medium.tags || []).join(', ');
  const fields = Object.entries(medium.fields || {});
  document.getElementById('edit-fields').replaceChildren(...fields.map(([k, v]) => fieldRow(k, v)));
  renumberFields();
  document.getElementById('edit-error').textContent = '';
  dialog.showModal();
  document.getElementById('edit-title').focus();
}

function fieldRow(key, value) {
  const item = h('li', { class: 'field-row' },
    h('input', { type: 'text', class: 'field-key', value: key, 'aria-label': t('edit.field_key'), placeholder: t('edit.field_key') }),
    h('input', { type: 'text', class: 'field-value', value, 'aria-label': t('edit.field_value'), placeholder: t('edit.field_value') }),
    h('button', { type: 'button', class: 'icon-btn field-remove', onclick: () => {
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      renumberFields();
      (next?.querySelector('input') || document.getElementById('edit-add-field')).focus();
    } }, icon('close')));
  return item;
}

function renumberFields() {
  [...document.querySelectorAll('#edit-fields .field-row')].forEach((item, i) => {
    item.querySelector('.field-key').setAttribute('aria-label', `${t('edit.field_key')} ${i + 1}`);
    item.querySelector('.field-value').setAttribute('aria-label', `${t('edit.field_value')} ${i + 1}`);
    item.querySelector('.field-remove').setAttribute('aria-label', t('edit.remove_field', { n: i + 1 }));
  });
}

async function save() {
  if (!editing) return;
  const library = currentLibrary();
  const tags = document.getElementById('edit-tags').value.split(/[,，、]/).map((s) => s.trim().replace(/^#/, '')).filter(Boolean);
  const fields = {};
  for (const item of document.querySelectorAll('#edit-fields .field-row')) {
    const key = item.querySelector('.field-key').value.trim();
    if (key) fields[key] = item.querySelector('.field-value').value.trim();
  }
  const patch = {
    title: document.getElementById('edit-title').value.trim(),
    description: document.getElementById('edit-description').value.trim(),
    tags: [...new Set(tags)],
    fields,
  };
  const button = document.getElementById('edit-save');
  button.disabled = true;
  try {
    const updated = await api(`/libraries/${enc(library.name)}/media/${editing.id}`, { method: 'PATCH', json: patch });
    document.getElementById('edit-dialog').close();
    toast(t('media.saved', { title: updated?.title || patch.title || basename(editing.path) }), 'success');
    const id = editing.id;
    editing = null;
    await load(offset);
    document.querySelector(`#media-body tr[data-id="${id}"] [data-action="edit"]`)?.focus();
  } catch (error) {
    document.getElementById('edit-error').textContent = errorMessage(error);
  } finally {
    button.disabled = false;
  }
}

async function remove(medium) {
  const title = medium.title || basename(medium.path);
  if (!(await confirmDialog(t('media.delete_confirm', { title })))) return;
  try {
    await api(`/libraries/${enc(state.library)}/media/${medium.id}`, { method: 'DELETE' });
    toast(t('media.deleted', { title }), 'success');
    await load(offset);
    document.querySelector('#media-body [data-action="play"]')?.focus();
  } catch (error) {
    toast(errorMessage(error));
  }
}
