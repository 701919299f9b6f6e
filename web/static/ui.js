// Small DOM and formatting helpers shared by the views. No innerHTML with data: text goes in as text.

import { t } from './i18n.js';

/** Build an element: h('button', {class: 'btn', onclick: fn, 'aria-label': '…'}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key in PROPS) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}
const PROPS = { value: 1, checked: 1, muted: 1, disabled: 1, hidden: 1, selected: 1 };

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An inline SVG icon from the fixed set below (constant markup, never data). */
export function icon(name, cls = '') {
  const span = document.createElement('span');
  span.className = `icon ${cls}`.trim();
  span.setAttribute('aria-hidden', 'true');
  span.innerHTML = ICONS[name] || '';
  return span;
}

const svg = (body) => `<svg viewBox="0 0 24 24" width="16" height="16" fill="none" stroke="currentColor"
  stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`;
export const ICONS = {
  search: svg('<circle cx="11" cy="11" r="7"/><path d="m20 20-3.5-3.5"/>'),
  image: svg('<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/><path d="m21 16-5-5-9 9"/>'),
  upload: svg('<path d="M12 16V4m0 0-4 4m4-4 4 4"/><path d="M4 16v2a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-2"/>'),
  play: svg('<path d="M7 4.5v15l12-7.5z" fill="currentColor"/>'),
  replay: svg('<path d="M3 12a9 9 0 1 0 3-6.7"/><path d="M3 4v5h5"/>'),
  film: svg('<rect x="3" y="4" width="18" height="16" rx="2"/><path d="M7 4v16M17 4v16M3 9h4M3 15h4M17 9h4M17 15h4"/>'),
  close: svg('<path d="M6 6l12 12M18 6 6 18"/>'),
  edit: svg('<path d="M4 20h4L19 9l-4-4L4 16z"/><path d="m13.5 6.5 4 4"/>'),
  trash: svg('<path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13"/>'),
  refresh: svg('<path d="M20 11a8 8 0 0 0-14.3-4.9L4 8"/><path d="M4 4v4h4"/><path d="M4 13a8 8 0 0 0 14.3 4.9L20 16"/><path d="M20 20v-4h-4"/>'),
  plus: svg('<path d="M12 5v14M5 12h14"/>'),
  globe: svg('<circle cx="12" cy="12" r="9"/><path d="M3 12h18M12 3a14 14 0 0 1 0 18M12 3a14 14 0 0 0 0 18"/>'),
  logout: svg('<path d="M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3"/><path d="M10 17l-5-5 5-5M5 12h11"/>'),
  info: svg('<circle cx="12" cy="12" r="9"/><path d="M12 11v5M12 8h.01"/>'),
  alert: svg('<path d="M12 3 2 20h20z"/><path d="M12 10v4M12 17h.01"/>'),
  check: svg('<path d="m5 12 5 5 9-10"/>'),
  folder: svg('<path d="M3 6a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"/>'),
  stop: svg('<rect x="6" y="6" width="12" height="12" rx="1.5"/>'),
  chevronLeft: svg('<path d="m15 6-6 6 6 6"/>'),
  chevronRight: svg('<path d="m9 6 6 6-6 6"/>'),
  key: svg('<circle cx="8" cy="15" r="4"/><path d="m11 12 9-9M17 6l3 3"/>'),
  library: svg('<path d="M4 4h4v16H4zM10 4h4v16h-4z"/><path d="m16 5 4 1-3 14-4-1z"/>'),
};

// -- formatting ----------------------------------------------------------------------------------

/** Seconds as mm:ss.s (h:mm:ss.s from an hour on). */
export function fmtTime(seconds) {
  const value = Number.isFinite(seconds) ? Math.max(0, seconds) : 0;
  const tenths = Math.round(value * 10);
  const hours = Math.floor(tenths / 36000);
  const minutes = Math.floor((tenths % 36000) / 600);
  const secs = ((tenths % 600) / 10).toFixed(1).padStart(4, '0');
  const mm = String(minutes).padStart(2, '0');
  return hours ? `${hours}:${mm}:${secs}` : `${mm}:${secs}`;
}

export function fmtRange(start, end) {
  return `${fmtTime(start)}–${fmtTime(end)}`;
}

/** A duration for tables: 0:42, 12:05, 1:02:03. */
export function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return t('common.none');
  const s = Math.round(seconds);
  const hours = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hours ? `${hours}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

export function fmtBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return t('common.none');
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export function fmtDate(epochSeconds) {
  if (!epochSeconds) return t('common.none');
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtScore(score) {
  if (!Number.isFinite(score)) return '';
  const abs = Math.abs(score);
  if (abs >= 100) return score.toFixed(0);
  if (abs >= 1) return score.toFixed(2);
  if (abs >= 0.01 || abs === 0) return score.toFixed(3);
  return score.toPrecision(2);
}

/** The end of a long path: …/media/trip/clip.mp4 (the whole path belongs in a title attribute). */
export function shortPath(path, keep = 3) {
  const parts = String(path || '').split(/[\\/]/).filter(Boolean);
  return parts.length > keep ? `…/${parts.slice(-keep).join('/')}` : String(path || '');
}

/** The name a file was uploaded with: the server keeps uploads as uploads/…/<16 hex digits>-<name>. */
export function uploadedName(path) {
  const name = basename(path);
  return /[\\/]uploads[\\/]/.test(String(path || '')) ? name.replace(/^[0-9a-f]{16}-(?=.)/, '') : name;
}

export function basename(path) {
  return String(path || '').split(/[\\/]/).filter(Boolean).pop() || String(path || '');
}

// -- highlights ------------------------------------------------------------------------------------

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function unescapeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return code > 0 && code < 0x110000 ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

/** The server's highlight (escaped text with <em> marks) made safe: everything escaped, then only
 * <em> and </em> restored. Returned as markup (for tests and tools). */
export function sanitizeHighlight(highlight) {
  return splitHighlight(highlight).map(([text, em]) => (em ? `<em>${escapeHtml(text)}</em>` : escapeHtml(text))).join('');
}

/** [[text, emphasised], ...] of a highlight; no markup but <em> survives, entities decoded once. */
function splitHighlight(highlight) {
  const out = [];
  let em = false;
  for (const part of String(highlight ?? '').split(/(<\/?em\s*>)/i)) {
    if (/^<em\s*>$/i.test(part)) em = true;
    else if (/^<\/em\s*>$/i.test(part)) em = false;
    else if (part) out.push([unescapeEntities(part), em]);
  }
  return out;
}

/** The highlight as DOM nodes: text nodes and <em> elements only. */
export function highlightNodes(highlight) {
  const frag = document.createDocumentFragment();
  for (const [text, em] of splitHighlight(highlight)) {
    frag.append(em ? h('em', {}, text) : document.createTextNode(text));
  }
  return frag;
}

// -- toasts ----------------------------------------------------------------------------------------

export function toast(message, kind = 'error', timeout = kind === 'error' ? 8000 : 3500) {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    icon(kind === 'error' ? 'alert' : kind === 'success' ? 'check' : 'info'),
    h('span', { class: 'toast-text' }, message),
    h('button', { type: 'button', class: 'icon-btn toast-close', 'aria-label': t('common.close'),
      onclick: () => item.remove() }, icon('close')));
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (timeout) setTimeout(() => item.remove(), timeout);
  return item;
}

export function errorMessage(error) {
  if (!error) return '';
  if (error.message) return error.message;
  return t('error.generic', { code: error.code || 'unknown' });
}

// -- dialogs ---------------------------------------------------------------------------------------

/** A modal question; resolves true when confirmed. */
export function confirmDialog(message, { confirmLabel = t('common.delete'), danger = true } = {}) {
  const dialog = document.getElementById('confirm-dialog');
  const text = dialog.querySelector('.confirm-text');
  const ok = dialog.querySelector('.confirm-ok');
  text.textContent = message;
  ok.textContent = confirmLabel;
  ok.classList.toggle('danger', danger);
  ok.classList.toggle('primary', !danger);
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const done = () => {
      dialog.removeEventListener('close', done);
      resolve(dialog.returnValue === 'ok');
      if (opener && opener.isConnected) opener.focus();
    };
    dialog.returnValue = '';
    dialog.addEventListener('close', done);
    dialog.showModal();
    dialog.querySelector('.confirm-cancel').focus();
  });
}

/** Keep keyboard focus visible in the dialog even when something inside it is removed. */
export function openDialog(dialog, focusTarget) {
  if (!dialog.open) dialog.showModal();
  (focusTarget || dialog.querySelector('[autofocus]') || dialog.querySelector('input, button'))?.focus();
}
