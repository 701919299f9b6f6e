// The editors' UI: sign-in, sections (search, ingest, media), library switcher, language, global keys,
// drag and drop, paste.

import { api, ApiError, enc, keyStore, onUnauthorized, takeKeyFromUrl } from './api.js';
import { applyI18n, getLang, onLangChange, setLang, t } from './i18n.js';
import { hideIngest, initIngest, resetIngest, showIngest, startJobs, uploadFiles } from './ingest.js';
import { hideMedia, initMedia, showMedia } from './media.js';
import { initPlayer } from './player.js';
import { focusSearch, initSearch, resetSearch, ROUTES, useImage } from './search.js';
import { on, selectLibrary, setLibraries, state } from './state.js';
import { confirmDialog, errorMessage, h, toast } from './ui.js';

const VIEWS = ['search', 'ingest', 'media'];
let view = '';

function boot() {
  applyI18n();
  initPlayer();
  initSearch();
  initIngest();
  initMedia();
  initChrome();
  initSignIn();
  initLibraryDialog();
  initGlobalKeys();
  initDropAndPaste();
  onUnauthorized(() => {
    if (!document.getElementById('signin').open) signIn(t('auth.expired'));
  });
  takeKeyFromUrl();
  route();
  window.addEventListener('hashchange', route);
  start();
}

async function start() {
  const key = keyStore.get();
  if (!key) {
    signIn('');
    return;
  }
  try {
    state.me = await api('/me', { quiet401: true });
  } catch (error) {
    signIn(error instanceof ApiError && error.status === 401 ? t('auth.refused', { message: error.message }) : errorMessage(error));
    return;
  }
  renderMe();
  await loadLibraries();
  startJobs();
}

async function loadLibraries() {
  try {
    setLibraries(await api('/libraries'));
  } catch (error) {
    toast(errorMessage(error));
  }
}

// -- sections --------------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, '').split('?')[0];
  if (hash.startsWith('key=')) return;
  const next = VIEWS.includes(hash) ? hash : (view || 'search');
  if (!VIEWS.includes(hash) && hash) return; // e.g. the skip link's #main: stay where we are
  show(next);
}

function show(next) {
  if (next === view) return;
  view = next;
  for (const name of VIEWS) {
    document.getElementById(`view-${name}`).hidden = name !== next;
    const link = document.querySelector(`.tabs a[data-view="${name}"]`);
    if (name === next) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.body.dataset.view = next;
  if (next === 'ingest') showIngest();
  else hideIngest();
  if (next === 'media') showMedia();
  else hideMedia();
}

export function go(next) {
  if (location.hash !== `#/${next}`) location.hash = `#/${next}`;
  else show(next);
}

// -- top bar ---------------------------------------------------------------------------------------

function initChrome() {
  document.querySelector('.skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    const target = view === 'search' ? document.getElementById('q') : document.getElementById('main');
    target.focus();
  });
  const select = document.getElementById('library-select');
  select.addEventListener('change', () => selectLibrary(select.value));
  on('libraries', renderLibraries);
  renderLibraries();
  document.getElementById('lang-toggle').addEventListener('click', () => setLang(getLang() === 'zh' ? 'en' : 'zh'));
  document.getElementById('sign-out').addEventListener('click', signOut);
  document.getElementById('delete-library').addEventListener('click', deleteLibrary);
  on('jobs', ({ active }) => {
    const badge = document.getElementById('jobs-badge');
    badge.hidden = !active;
    badge.textContent = String(active);
    badge.setAttribute('aria-label', t('nav.active_jobs', { n: active }));
  });
  onLangChange(() => {
    renderMe();
    renderLibraries();
  });
}

function renderLibraries() {
  const select = document.getElementById('library-select');
  const options = state.libraries.map((lib) => h('option', { value: lib.name, selected: lib.name === state.library }, lib.name));
  if (!options.length) options.push(h('option', { value: '' }, t('lib.none_option')));
  select.replaceChildren(...options);
  select.value = state.library;
  select.disabled = !state.libraries.length;
}

function renderMe() {
  const badge = document.getElementById('tenant');
  if (!state.me) {
    badge.hidden = true;
    return;
  }
  badge.hidden = false;
  badge.textContent = state.me.tenant;
  badge.title = t('auth.tenant', { tenant: state.me.tenant }) + (state.me.admin ? ` (${t('auth.admin')})` : '');
  badge.classList.toggle('is-admin', Boolean(state.me.admin));
}

// -- sign in and out -------------------------------------------------------------------------------

function initSignIn() {
  const dialog = document.getElementById('signin');
  dialog.addEventListener('cancel', (event) => {
    if (!state.me) event.preventDefault(); // nothing works without a key
  });
  dialog.addEventListener('close', () => {
    if (!state.me) setTimeout(() => signIn(document.getElementById('signin-error').textContent), 0);
  });
  document.getElementById('signin-show').addEventListener('change', (event) => {
    document.getElementById('signin-key').type = event.target.checked ? 'text' : 'password';
  });
  document.getElementById('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const field = document.getElementById('signin-key');
    const key = field.value.trim();
    const status = document.getElementById('signin-error');
    if (!key) {
      field.focus();
      return;
    }
    status.textContent = t('auth.checking');
    const button = document.getElementById('signin-submit');
    button.disabled = true;
    try {
      const me = await api('/me', { key, quiet401: true });
      keyStore.set(key);
      state.me = me;
      status.textContent = '';
      field.value = '';
      dialog.close();
      renderMe();
      await loadLibraries();
      startJobs();
    } catch (error) {
      status.textContent = error instanceof ApiError && error.status === 401
        ? t('auth.refused', { message: error.message }) : errorMessage(error);
      field.focus();
      field.select();
    } finally {
      button.disabled = false;
    }
  });
}

function signIn(message) {
  state.me = null;
  renderMe();
  const dialog = document.getElementById('signin');
  document.getElementById('signin-error').textContent = message || '';
  if (!dialog.open) dialog.showModal();
  document.getElementById('signin-key').focus();
}

function signOut() {
  keyStore.clear();
  state.me = null;
  setLibraries([]);
  resetIngest();
  resetSearch();
  toast(t('auth.signed_out'), 'info');
  signIn('');
}

// -- libraries ---------------------------------------------------------------------------------------

function initLibraryDialog() {
  const dialog = document.getElementById('library-dialog');
  const list = document.getElementById('library-modules');
  list.replaceChildren(...ROUTES.map((name) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'module', value: name, checked: true }),
    h('span', { 'data-i18n': `module.${name}` }, t(`module.${name}`)))));
  document.getElementById('new-library').addEventListener('click', () => {
    document.getElementById('library-error').textContent = '';
    document.getElementById('library-name').value = '';
    dialog.showModal();
    document.getElementById('library-name').focus();
  });
  document.getElementById('library-cancel').addEventListener('click', () => dialog.close());
  document.getElementById('library-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = document.getElementById('library-name').value.trim();
    const modules = [...list.querySelectorAll('input:checked')].map((box) => box.value);
    const status = document.getElementById('library-error');
    if (!modules.length) {
      status.textContent = t('lib.pick_module');
      return;
    }
    const button = document.getElementById('library-submit');
    button.disabled = true;
    try {
      const created = await api('/libraries', { method: 'POST', json: { name, config: { modules } } });
      dialog.close();
      toast(t('lib.created', { name: created.name }), 'success');
      state.library = created.name;
      await loadLibraries();
      selectLibrary(created.name);
    } catch (error) {
      status.textContent = errorMessage(error);
      document.getElementById('library-name').focus();
    } finally {
      button.disabled = false;
    }
  });
}

async function deleteLibrary() {
  const name = state.library;
  if (!name || !(await confirmDialog(t('lib.delete_confirm', { name }), { confirmLabel: t('lib.delete') }))) return;
  try {
    await api(`/libraries/${enc(name)}`, { method: 'DELETE' });
    toast(t('lib.deleted', { name }), 'success');
    state.library = '';
    await loadLibraries();
  } catch (error) {
    toast(errorMessage(error));
  }
}

// -- keyboard ----------------------------------------------------------------------------------------

const TEXT_INPUTS = new Set(['text', 'search', 'password', 'email', 'number', 'url', 'tel']);

/** Keys typed here are text, not shortcuts. */
function typing(target) {
  if (!target) return false;
  if (target.isContentEditable || target.tagName === 'TEXTAREA' || target.tagName === 'SELECT') return true;
  return target.tagName === 'INPUT' && TEXT_INPUTS.has(target.type);
}

function initGlobalKeys() {
  document.addEventListener('keydown', (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === '/' && !typing(event.target) && !document.querySelector('dialog[open]')) {
      event.preventDefault();
      go('search');
      focusSearch();
    }
  });
}

// -- drag and drop, paste ------------------------------------------------------------------------------

function hasFiles(event) {
  return [...(event.dataTransfer?.types || [])].includes('Files');
}

function initDropAndPaste() {
  const overlay = document.getElementById('drop-overlay');
  let depth = 0;
  const hide = () => {
    depth = 0;
    overlay.hidden = true;
  };
  document.addEventListener('dragenter', (event) => {
    if (!hasFiles(event) || !state.me) return;
    depth += 1;
    overlay.querySelector('.drop-text').textContent = view === 'ingest'
      ? t('search.drop_files_here', { library: state.library }) : t('search.drop_here');
    overlay.hidden = false;
  });
  document.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) hide();
  });
  document.addEventListener('dragover', (event) => {
    if (hasFiles(event)) event.preventDefault();
  });
  document.addEventListener('drop', (event) => {
    if (!hasFiles(event) && !event.dataTransfer?.files?.length) return;
    event.preventDefault();
    hide();
    if (!state.me) return;
    const files = [...event.dataTransfer.files];
    if (view === 'ingest') {
      uploadFiles(files);
      return;
    }
    const image = files.find((file) => file.type.startsWith('image/')) || files[0];
    go('search');
    useImage(image);
  });
  document.addEventListener('paste', (event) => {
    if (!state.me || view !== 'search' || document.querySelector('dialog[open]')) return;
    const items = [...(event.clipboardData?.items || [])];
    const item = items.find((entry) => entry.kind === 'file' && entry.type.startsWith('image/'));
    if (!item) return; // text pastes into the box as usual
    const file = item.getAsFile();
    if (!file) return;
    event.preventDefault();
    const ext = (file.type.split('/')[1] || 'png').replace('jpeg', 'jpg');
    const named = file.name && file.name !== 'image.png' ? file : new File([file], `clipboard.${ext}`, { type: file.type });
    useImage(named);
  });
}

boot();
