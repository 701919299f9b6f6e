// The /v1 client: every call carries "Authorization: Bearer <key>"; errors become ApiError with the
// server's {"error": {"code", "message"}}. Media URLs (stream_url, thumbnail_url) carry their own token.

import { t } from './i18n.js';

const KEY_STORE = 'zhaopian.key';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

let unauthorizedHandler = () => {};

/** Called with the ApiError of any 401 (the key was revoked or mistyped). */
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

export const keyStore = {
  get() {
    try { return localStorage.getItem(KEY_STORE) || ''; } catch { return ''; }
  },
  set(key) {
    try { localStorage.setItem(KEY_STORE, key); } catch { /* private mode: the key lives for this page */ }
    memoryKey = key;
  },
  clear() {
    try { localStorage.removeItem(KEY_STORE); } catch { /* nothing stored */ }
    memoryKey = '';
  },
};
let memoryKey = '';

function currentKey() {
  return keyStore.get() || memoryKey;
}

/** A key handed over in the address (#key=...): stored, then removed from the address bar and history. */
export function takeKeyFromUrl() {
  const hash = location.hash.replace(/^#/, '');
  const params = new URLSearchParams(hash.startsWith('/') ? hash.split('?')[1] || '' : hash);
  const key = params.get('key');
  if (!key) return false;
  keyStore.set(key.trim());
  params.delete('key');
  const route = hash.startsWith('/') ? hash.split('?')[0] : '/search';
  history.replaceState(history.state, '', `${location.pathname}${location.search}#${route}`);
  return true;
}

function url(path, query) {
  const target = new URL(`/v1${path}`, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') target.searchParams.set(name, value);
  }
  return target;
}

async function parse(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const error = body && body.error;
    throw new ApiError(response.status, (error && error.code) || `http_${response.status}`,
      (error && error.message) || `HTTP ${response.status} ${response.statusText || ''}`.trim());
  }
  return body;
}

/** Call the API. `json` sends a JSON body, `form` a FormData (multipart). */
export async function api(path, { method = 'GET', json, form, query, signal, key, quiet401 = false } = {}) {
  const headers = { Authorization: `Bearer ${key ?? currentKey()}`, Accept: 'application/json' };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(url(path, query), { method, headers, body, signal });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', t('error.network'));
  }
  try {
    return await parse(response);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && !quiet401) unauthorizedHandler(err);
    throw err;
  }
}

/** Upload one file (multipart part `file`) with progress: onProgress(fraction). */
export function uploadFile(path, file, { onProgress, query } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url(path, query));
    xhr.setRequestHeader('Authorization', `Bearer ${currentKey()}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', t('error.network')));
    xhr.onload = () => {
      const response = new Response(xhr.status === 204 ? null : xhr.responseText, {
        status: xhr.status, statusText: xhr.statusText,
      });
      parse(response).then(resolve, (err) => {
        if (err instanceof ApiError && err.status === 401) unauthorizedHandler(err);
        reject(err);
      });
    };
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

export const enc = encodeURIComponent;
