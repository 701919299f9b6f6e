// The ingest page: add media by a path under the server's media root or by uploading files (one
// request per file), and follow the jobs: GET /v1/jobs every second while any is queued or running.

import { api, enc, uploadFile } from './api.js';
import { onLangChange, t } from './i18n.js';
import { currentLibrary, emit, on, state } from './state.js';
import { errorMessage, h, icon, shortPath, toast, uploadedName } from './ui.js';

const POLL_MS = 1000;
const UPLOAD_CONCURRENCY = 2;
const ACTIVE = new Set(['queued', 'running']);

let body;
let pollTimer = 0;
let polling = false;
let again = false; // a refresh was asked for while one was in flight
let visible = false;
let jobs = [];
let known = new Map(); // id -> status seen last time (to notice jobs finishing)
const rows = new Map(); // id -> <tr>
const uploads = new Map(); // token -> {name, fraction, row}
let uploadQueue = [];
let uploadsRunning = 0;

export function initIngest() {
  body = document.getElementById('jobs-body');
  document.getElementById('path-form').addEventListener('submit', (event) => {
    event.preventDefault();
    addPath();
  });
  const fileInput = document.getElementById('upload-input');
  document.getElementById('upload-button').addEventListener('click', () => fileInput.click());
  fileInput.addEventListener('change', () => {
    const files = [...fileInput.files];
    fileInput.value = '';
    uploadFiles(files);
  });
  const zone = document.getElementById('upload-zone');
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    event.stopPropagation();
    zone.classList.remove('dragging');
    uploadFiles([...(event.dataTransfer?.files || [])]);
  });
  document.getElementById('jobs-all').addEventListener('change', () => refresh());
  document.getElementById('jobs-status').addEventListener('change', () => refresh());
  document.getElementById('jobs-refresh').addEventListener('click', () => refresh());
  on('library', () => {
    renderHeading();
    if (visible) refresh();
  });
  onLangChange(() => {
    renderHeading();
    renderJobs();
    for (const upload of uploads.values()) renderUpload(upload);
  });
}

export function showIngest() {
  visible = true;
  renderHeading();
  refresh();
}

export function hideIngest() {
  visible = false;
}

/** Start following jobs (the app calls it at sign-in, so a running ingest shows on the nav badge). */
export function startJobs() {
  refresh();
}

function renderHeading() {
  document.getElementById('ingest-library').textContent = state.library
    ? t('ingest.into', { library: state.library }) : t('lib.none');
}

// -- adding media ------------------------------------------------------------------------------------

async function addPath() {
  const field = document.getElementById('path-input');
  const path = field.value.trim();
  const library = currentLibrary();
  const status = document.getElementById('path-status');
  status.textContent = '';
  status.classList.remove('error');
  if (!library) return toast(t('lib.none'));
  if (!path) {
    status.textContent = t('ingest.path_empty');
    status.classList.add('error');
    field.focus();
    return;
  }
  const button = document.querySelector('#path-form button[type=submit]');
  button.disabled = true;
  try {
    const response = await api(`/libraries/${enc(library.name)}/media`, { method: 'POST', json: { path } });
    const queued = response?.jobs || [];
    status.textContent = t('ingest.queued', { n: queued.length });
    toast(t('ingest.queued', { n: queued.length }), 'success');
    field.value = '';
    merge(queued);
    refresh();
  } catch (error) {
    status.textContent = errorMessage(error);
    status.classList.add('error');
    toast(errorMessage(error));
  } finally {
    button.disabled = false;
  }
}

export function uploadFiles(files) {
  const library = currentLibrary();
  if (!library) return toast(t('lib.none'));
  for (const file of files) {
    const upload = { token: `${Date.now()}-${Math.random()}`, name: file.name, file, fraction: 0,
      library: library.name, row: null, error: null };
    uploads.set(upload.token, upload);
    uploadQueue.push(upload);
    renderUpload(upload);
  }
  pumpUploads();
}

function pumpUploads() {
  while (uploadsRunning < UPLOAD_CONCURRENCY && uploadQueue.length) {
    const upload = uploadQueue.shift();
    uploadsRunning += 1;
    uploadFile(`/libraries/${enc(upload.library)}/media`, upload.file, {
      onProgress: (fraction) => {
        upload.fraction = fraction;
        renderUpload(upload);
      },
    }).then((response) => {
      uploads.delete(upload.token);
      upload.row?.remove();
      merge(response?.jobs || []);
      refresh();
    }, (error) => {
      upload.error = errorMessage(error);
      renderUpload(upload);
      toast(t('ingest.upload_failed', { name: upload.name, message: upload.error }));
    }).finally(() => {
      uploadsRunning -= 1;
      pumpUploads();
    });
  }
}

function renderUpload(upload) {
  const list = document.getElementById('uploads');
  if (!upload.row) {
    upload.row = h('li', { class: 'upload' });
    list.append(upload.row);
  }
  const pct = Math.round(upload.fraction * 100);
  upload.row.classList.toggle('failed', Boolean(upload.error));
  upload.row.replaceChildren(
    icon(upload.error ? 'alert' : 'upload'),
    h('span', { class: 'upload-name' }, upload.error
      ? t('ingest.upload_failed', { name: upload.name, message: upload.error })
      : t('ingest.uploading', { name: upload.name })),
    upload.error ? h('button', { type: 'button', class: 'icon-btn', 'aria-label': t('common.close'),
      onclick: () => { uploads.delete(upload.token); upload.row.remove(); } }, icon('close'))
      : bar(upload.fraction, t('ingest.uploading', { name: upload.name })),
    upload.error ? null : h('span', { class: 'pct' }, `${pct}%`));
}

// -- jobs ----------------------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(pollTimer);
  if (polling) {
    again = true;
    return;
  }
  polling = true;
  again = false;
  let next = false;
  try {
    const all = document.getElementById('jobs-all').checked;
    const status = document.getElementById('jobs-status').value;
    const page = await api('/jobs', { query: { library: all ? '' : state.library, status, limit: 100 } });
    jobs = page?.items || [];
    document.getElementById('jobs-total').textContent = page && page.total > jobs.length ? `${jobs.length} / ${page.total}` : '';
    noticeFinished(jobs);
    renderJobs();
    next = jobs.some((job) => ACTIVE.has(job.status)) || uploads.size > 0;
    if (!next && status) {
      // a status filter may hide running jobs: ask for them directly
      const running = await api('/jobs', { query: { status: 'running', limit: 1 } });
      next = (running?.total || 0) > 0;
    }
  } catch (error) {
    if (error.status !== 401) toast(errorMessage(error));
    next = false;
  } finally {
    polling = false;
    if (again) refresh();
    else if (next) pollTimer = setTimeout(refresh, POLL_MS);
  }
}

/** Jobs added just now, before the next poll brings them. */
function merge(added) {
  const ids = new Set(added.map((j) => j.id));
  jobs = [...added, ...jobs.filter((j) => !ids.has(j.id))].sort((a, b) => b.id - a.id);
  renderJobs();
}

function noticeFinished(list) {
  let finished = false;
  for (const job of list) {
    const before = known.get(job.id);
    if (before && ACTIVE.has(before) && !ACTIVE.has(job.status)) finished = true;
    known.set(job.id, job.status);
  }
  const active = list.filter((job) => ACTIVE.has(job.status)).length;
  emit('jobs', { active });
  if (finished) emit('media-changed');
}

function renderJobs() {
  const counts = { running: 0, queued: 0, done: 0, failed: 0, cancelled: 0 };
  for (const job of jobs) counts[job.status] = (counts[job.status] || 0) + 1;
  document.getElementById('jobs-summary').textContent = t('ingest.summary', counts);
  document.getElementById('jobs-empty').hidden = jobs.length > 0;
  const seen = new Set();
  let previous = null;
  for (const job of jobs) {
    seen.add(job.id);
    let row = rows.get(job.id);
    if (!row) {
      row = createRow(job);
      rows.set(job.id, row);
    }
    updateRow(row, job);
    // keep the server's order (newest first) without re-creating rows: focus stays on buttons
    const want = previous ? previous.nextSibling : body.firstChild;
    if (want !== row) body.insertBefore(row, want);
    previous = row;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
}

function createRow(job) {
  const cancel = h('button', { type: 'button', class: 'btn small ghost job-cancel', onclick: () => act(job.id, 'cancel') },
    icon('stop'), h('span', {}, ''));
  const retry = h('button', { type: 'button', class: 'btn small ghost job-retry', onclick: () => act(job.id, 'retry') },
    icon('replay'), h('span', {}, ''));
  const row = h('tr', { class: 'job', dataset: { id: String(job.id) } },
    h('td', { class: 'num job-id' }),
    h('td', { class: 'job-file' }, h('span', { class: 'file-name' }), h('span', { class: 'file-path' })),
    h('td', { class: 'job-status' }),
    h('td', { class: 'job-progress' }),
    h('td', { class: 'job-modules' }),
    h('td', { class: 'job-outcome' }),
    h('td', { class: 'job-actions' }, cancel, retry));
  row.cancel = cancel;
  row.retry = retry;
  return row;
}

function updateRow(row, job) {
  row.dataset.status = job.status;
  const cell = (cls) => row.querySelector(`.${cls}`);
  cell('job-id').textContent = String(job.id);
  cell('file-name').textContent = uploadedName(job.path);
  const where = document.getElementById('jobs-all').checked ? `${job.library} · ${shortPath(job.path)}` : shortPath(job.path);
  cell('file-path').textContent = where;
  cell('file-path').title = job.path;
  cell('job-status').replaceChildren(h('span', { class: `status status-${job.status}` },
    job.status === 'running' ? h('span', { class: 'spinner', 'aria-hidden': 'true' }) : null,
    t(`status.${job.status}`)));
  const progress = job.status === 'done' ? 1 : Number(job.progress) || 0;
  cell('job-progress').replaceChildren(bar(progress, t('ingest.progress_label', { id: job.id }), job.status),
    h('span', { class: 'pct' }, `${Math.round(progress * 100)}%`));
  const modules = Object.entries(job.modules || {});
  cell('job-modules').replaceChildren(...modules.map(([name, fraction]) => h('span', { class: 'module-progress', title: `${name} ${Math.round(fraction * 100)}%` },
    h('span', { class: 'module-name' }, name === 'decode' ? t('module.decode') : t(`route.${name}`)),
    h('span', { class: 'mini-bar', 'aria-hidden': 'true' }, h('span', { style: { width: `${Math.round(fraction * 100)}%` } })),
    h('span', { class: 'sr-only' }, `${Math.round(fraction * 100)}%`))));
  const outcome = [];
  if (job.outcome) outcome.push(h('span', { class: `outcome outcome-${job.outcome}` }, t(`outcome.${job.outcome}`)));
  if (job.error) outcome.push(h('span', { class: 'job-error', title: job.error.code }, job.error.message || job.error.code));
  const extras = [];
  if (job.attempts > 1) extras.push(t('ingest.attempts', { n: job.attempts }));
  if (job.started && job.finished) extras.push(t('ingest.took', { s: (job.finished - job.started).toFixed(1) }));
  if (extras.length) outcome.push(h('span', { class: 'job-extra' }, extras.join(' · ')));
  cell('job-outcome').replaceChildren(...outcome);
  const canCancel = ACTIVE.has(job.status);
  const canRetry = job.status === 'failed' || job.status === 'cancelled';
  row.cancel.hidden = !canCancel;
  row.retry.hidden = !canRetry;
  row.cancel.lastChild.textContent = t('ingest.cancel');
  row.retry.lastChild.textContent = t('ingest.retry');
  row.cancel.setAttribute('aria-label', t('ingest.cancel_label', { id: job.id }));
  row.retry.setAttribute('aria-label', t('ingest.retry_label', { id: job.id }));
}

function bar(fraction, label, status = '') {
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  return h('span', { class: `bar ${status ? `bar-${status}` : ''}`, role: 'progressbar', 'aria-label': label,
    'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(pct) },
  h('span', { class: 'bar-fill', style: { width: `${pct}%` } }));
}

async function act(id, action) {
  try {
    const job = await api(`/jobs/${id}/${action}`, { method: 'POST' });
    if (job && job.id) {
      jobs = jobs.map((j) => (j.id === job.id ? job : j));
      renderJobs();
    }
  } catch (error) {
    toast(errorMessage(error));
  }
  refresh();
}

export function resetIngest() {
  jobs = [];
  known = new Map();
  for (const row of rows.values()) row.remove();
  rows.clear();
  clearTimeout(pollTimer);
}
