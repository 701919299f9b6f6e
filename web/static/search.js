// The search page: text and image queries, filters, the results grid with hover previews and
// keyboard navigation, query notes, how the query was understood and timings.

import { api, enc } from './api.js';
import { getLang, onLangChange, t } from './i18n.js';
import { openPlayer } from './player.js';
import { currentLibrary, libraryModules, on, state } from './state.js';
import {
  basename, errorMessage, fmtRange, fmtScore, fmtTime, h, highlightNodes, icon, toast,
} from './ui.js';

export const ROUTES = ['visual', 'labels', 'ocr', 'asr', 'meta'];
const QUICK_CHIPS = ['chip.last7', 'chip.thisyear', 'chip.short30', 'chip.long2m', 'type:video', 'type:image', '#tag'];
const EXAMPLES = { zh: ['一只猫', '发射台上的火箭', '字幕 “限时优惠”', '一杯咖啡 短于30秒'],
  en: ['a cup of coffee', 'a space rocket', 'someone riding a bicycle', 'a cat type:video'] };
const PREVIEW_DELAY_MS = 120;

let input;
let grid;
let queryImage = null; // {file, url}
let lastResponse = null;
let lastError = null;
let searching = null; // AbortController of the request in flight
let previewing = null; // {card, video}
let previewTimer = 0;

export function initSearch() {
  input = document.getElementById('q');
  grid = document.getElementById('results');
  document.getElementById('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    runSearch();
  });
  const fileInput = document.getElementById('image-input');
  document.getElementById('image-button').addEventListener('click', () => fileInput.click());
  fileInput.addEventListener('change', () => {
    const [file] = fileInput.files;
    fileInput.value = '';
    if (file) useImage(file, true);
  });
  document.getElementById('image-remove').addEventListener('click', () => {
    clearImage();
    input.focus();
  });
  for (const box of document.querySelectorAll('#route-filters input, #kind-filter input')) {
    box.addEventListener('change', () => {
      if (lastResponse || lastError) runSearch();
    });
  }
  document.getElementById('topk').addEventListener('change', () => {
    if (lastResponse) runSearch();
  });
  renderChips();
  // ArrowDown from the search box goes to the first result
  input.addEventListener('keydown', (event) => {
    if (event.key !== 'ArrowDown' || event.altKey || event.ctrlKey || event.metaKey) return;
    const first = grid.querySelector('.card-main');
    if (!first) return;
    event.preventDefault();
    first.focus();
  });
  grid.addEventListener('keydown', onGridKey);
  // previews: pointer hover and keyboard focus
  grid.addEventListener('mouseover', (event) => hoverCard(event.target.closest('.card')));
  grid.addEventListener('mouseleave', () => stopPreview());
  grid.addEventListener('focusin', (event) => hoverCard(event.target.closest('.card')));
  grid.addEventListener('focusout', (event) => {
    if (!grid.contains(event.relatedTarget)) stopPreview();
  });
  on('library', () => {
    updateRouteAvailability();
    if (lastResponse) runSearch();
  });
  on('libraries', updateRouteAvailability);
  onLangChange(() => {
    renderChips();
    renderEmpty();
    if (lastResponse) renderResponse(lastResponse);
    if (queryImage) renderImageChip();
  });
  renderEmpty();
}

/** Forget the shown results and the query image (at sign-out). */
export function resetSearch() {
  if (searching) searching.abort();
  stopPreview();
  lastResponse = null;
  lastError = null;
  if (queryImage) URL.revokeObjectURL(queryImage.url);
  queryImage = null;
  renderImageChip();
  input.value = '';
  grid.replaceChildren();
  document.getElementById('results-meta').replaceChildren();
  document.getElementById('results-notes').replaceChildren();
  renderEmpty();
}

export function focusSearch() {
  input.focus();
  input.select();
}

// -- query image ---------------------------------------------------------------------------------

/** Use an image (from the file picker, a drop or the clipboard) as the query and search. */
export function useImage(file, search = true) {
  if (!file) return;
  if (!/^image\//.test(file.type) && !/\.(jpe?g|png|gif|webp|bmp|tiff?)$/i.test(file.name || '')) {
    toast(t('search.image_only', { name: file.name || file.type || '?' }));
    return;
  }
  if (queryImage) URL.revokeObjectURL(queryImage.url);
  queryImage = { file, url: URL.createObjectURL(file) };
  renderImageChip();
  if (search) runSearch();
}

function clearImage() {
  if (queryImage) URL.revokeObjectURL(queryImage.url);
  queryImage = null;
  renderImageChip();
  if (lastResponse && input.value.trim()) runSearch();
}

function renderImageChip() {
  const chip = document.getElementById('image-chip');
  chip.hidden = !queryImage;
  document.getElementById('searchbar').classList.toggle('has-image', Boolean(queryImage));
  if (!queryImage) return;
  const name = queryImage.file.name || 'clipboard.png';
  chip.querySelector('img').src = queryImage.url;
  chip.querySelector('.chip-name').textContent = name;
  chip.setAttribute('aria-label', t('search.image_chip', { name }));
}

export function hasQueryImage() {
  return Boolean(queryImage);
}

// -- filters -------------------------------------------------------------------------------------

function renderChips() {
  const box = document.getElementById('quick-chips');
  box.replaceChildren(...QUICK_CHIPS.map((key) => {
    const text = key.startsWith('chip.') ? t(key) : key;
    return h('button', { type: 'button', class: 'chip', onclick: () => appendToQuery(text) }, text);
  }));
}

function appendToQuery(text) {
  const value = input.value.trimEnd();
  if (text === '#tag') {
    input.value = `${value}${value ? ' ' : ''}#`;
    input.focus();
    return;
  }
  if (!value.split(/\s+/).includes(text)) input.value = `${value}${value ? ' ' : ''}${text}`;
  input.focus();
  if (input.value.trim() || queryImage) runSearch();
}

function updateRouteAvailability() {
  const modules = libraryModules();
  for (const box of document.querySelectorAll('#route-filters input')) {
    const available = !modules.length || modules.includes(box.value);
    box.disabled = !available;
    box.closest('label').classList.toggle('unavailable', !available);
  }
}

/** null: every route; else the checked ones the library has. */
function chosenRoutes() {
  const boxes = [...document.querySelectorAll('#route-filters input:not(:disabled)')];
  const checked = boxes.filter((b) => b.checked).map((b) => b.value);
  if (checked.length === boxes.length) return null;
  return checked;
}

function chosenKind() {
  return document.querySelector('#kind-filter input:checked')?.value || '';
}

function queryText() {
  let text = input.value.trim();
  const kind = chosenKind();
  if (kind && !/\btype:(video|image)\b/i.test(text)) text = `${text} type:${kind}`.trim();
  return text;
}

// -- searching -------------------------------------------------------------------------------------

export async function runSearch() {
  const library = currentLibrary();
  if (!library) {
    toast(t('lib.none'));
    return;
  }
  const text = queryText();
  const image = queryImage;
  if (!input.value.trim() && !image) {
    setStatus(t('search.need_query'));
    input.focus();
    return;
  }
  const routes = chosenRoutes();
  if (routes && !routes.length) {
    setStatus(t('search.routes_none'));
    return;
  }
  const topK = Number(document.getElementById('topk').value) || 24;
  if (searching) searching.abort();
  const controller = new AbortController();
  searching = controller;
  stopPreview();
  grid.setAttribute('aria-busy', 'true');
  document.getElementById('results-pane').classList.add('is-loading');
  setStatus(t('search.searching'));
  try {
    let response;
    if (image) {
      const form = new FormData();
      form.append('image', image.file, image.file.name || 'clipboard.png');
      if (text) form.append('text', text);
      form.append('top_k', String(topK));
      for (const route of routes || []) form.append('routes', route);
      response = await api(`/libraries/${enc(library.name)}/search/image`, { method: 'POST', form, signal: controller.signal });
    } else {
      response = await api(`/libraries/${enc(library.name)}/search`, {
        method: 'POST', json: { text, top_k: topK, routes }, signal: controller.signal,
      });
    }
    if (searching !== controller) return;
    lastResponse = response;
    lastError = null;
    renderResponse(response);
  } catch (error) {
    if (error.name === 'AbortError') return;
    lastResponse = null;
    lastError = error;
    renderError(error);
  } finally {
    if (searching === controller) {
      searching = null;
      grid.removeAttribute('aria-busy');
      document.getElementById('results-pane').classList.remove('is-loading');
    }
  }
}

function setStatus(text) {
  document.getElementById('search-status').textContent = text;
}

// -- rendering -------------------------------------------------------------------------------------

function renderEmpty() {
  if (lastResponse || lastError) return;
  const box = document.getElementById('results-empty');
  box.hidden = false;
  box.replaceChildren(
    h('div', { class: 'empty-icon' }, icon('film')),
    h('h2', {}, t('search.empty_title')),
    h('p', {}, t('search.empty_body')),
    h('p', { class: 'examples' }, h('span', { class: 'muted' }, `${t('search.examples')}:`),
      ...EXAMPLES[getLang()].map((example) => h('button', {
        type: 'button', class: 'chip chip-example',
        onclick: () => { input.value = example; runSearch(); },
      }, example))),
    h('p', { class: 'muted small' }, t('search.shortcuts')));
}

function renderError(error) {
  grid.replaceChildren();
  document.getElementById('results-meta').replaceChildren();
  document.getElementById('results-notes').replaceChildren();
  const box = document.getElementById('results-empty');
  box.hidden = false;
  box.replaceChildren(h('div', { class: 'inline-error', role: 'alert' }, icon('alert'),
    h('span', {}, errorMessage(error)), error.code ? h('code', {}, error.code) : null));
  setStatus(errorMessage(error));
}

function renderResponse(response) {
  const results = response.results || [];
  renderNotes(response.notes || []);
  renderMeta(response, results.length);
  const empty = document.getElementById('results-empty');
  empty.hidden = results.length > 0;
  if (!results.length) {
    empty.replaceChildren(h('div', { class: 'empty-icon' }, icon('search')), h('p', {}, t('search.no_results')));
  }
  grid.replaceChildren(...results.map(card));
  setStatus(results.length === 1 ? t('search.count_one') : t('search.count', { n: results.length }));
}

function renderNotes(notes) {
  const box = document.getElementById('results-notes');
  box.replaceChildren(...notes.map((note) => h('p', { class: 'note', role: 'note' }, icon('info'), h('span', {}, note))));
}

function renderMeta(response, count) {
  const meta = document.getElementById('results-meta');
  const timings = response.timings_ms || {};
  const total = timings.total ?? Object.values(timings).reduce((a, b) => a + (Number(b) || 0), 0);
  // "visual.recall", "visual.rewrite", ... summed per route; every step in the tooltip
  const groups = new Map();
  for (const [name, ms] of Object.entries(timings)) {
    if (name === 'total') continue;
    const group = name.split('.')[0];
    groups.set(group, (groups.get(group) || 0) + (Number(ms) || 0));
  }
  const detail = Object.entries(timings).map(([name, ms]) => `${name} ${ms}`).join('\n');
  const ms = (value) => (value < 10 ? value.toFixed(1) : String(Math.round(value)));
  meta.replaceChildren(
    h('span', { class: 'result-count' }, count === 1 ? t('search.count_one') : t('search.count', { n: count })),
    Object.keys(timings).length ? h('span', { class: 'timings', title: `${t('search.timings')}\n${detail}` },
      h('b', {}, t('search.took', { ms: Math.round(total) })),
      [...groups].map(([name, value]) => h('span', { class: 'timing' },
        ROUTES.includes(name) ? h('i', { class: `dot r-${name}`, 'aria-hidden': 'true' }) : null, `${name} ${ms(value)}`)))
      : null,
    understood(response));
}

/** Chips for how the query was read: text, phrases, routes and filters. */
function understood(response) {
  const parsed = response.query;
  if (!parsed) return null;
  const chips = [];
  const chip = (label, value, cls = '') => chips.push(h('span', { class: `pchip ${cls}` }, h('span', { class: 'pchip-k' }, label), value));
  if (parsed.text) chip(t('parsed.text'), parsed.text);
  for (const phrase of parsed.phrases || []) chip(t('parsed.phrase'), `“${phrase}”`);
  for (const route of parsed.routes || []) chip(t('parsed.route'), t(`route.${route}`), `r-${route}`);
  const f = parsed.filters || {};
  for (const kind of f.kinds || []) chip(t('parsed.kind'), t(`kind.${kind}`));
  if (f.min_duration != null) chip(t('parsed.min'), `${f.min_duration} s`);
  if (f.max_duration != null) chip(t('parsed.max'), `${f.max_duration} s`);
  if (f.recorded_after) chip(t('parsed.after'), String(f.recorded_after).slice(0, 10));
  if (f.recorded_before) chip(t('parsed.before'), String(f.recorded_before).slice(0, 10));
  for (const tag of f.tags || []) chip(t('parsed.tag'), `#${tag}`);
  for (const lib of f.libraries || []) chip(t('parsed.library'), lib);
  if (parsed.source === 'llm') chips.push(h('span', { class: 'pchip pchip-llm' }, t('parsed.llm')));
  if (!chips.length) return null;
  return h('span', { class: 'understood' }, h('span', { class: 'muted' }, `${t('search.understood')}:`), chips);
}

function card(result, index) {
  const isImage = result.kind === 'image';
  const title = result.title || basename(result.video);
  const range = isImage ? t('card.image') : fmtRange(result.start, result.end);
  const routes = Object.entries(result.routes || {}).sort((a, b) => b[1] - a[1]);
  const matches = (result.matches || []).slice(0, 2);
  const button = h('button', {
    type: 'button', class: 'card-main', dataset: { index: String(index) },
    'aria-label': t('card.play', { title, range }),
    onclick: () => openPlayer({
      title, path: result.video, url: result.stream_url, kind: result.kind, start: result.start,
      end: result.end, matches: result.matches || [], routes: result.routes || {}, score: result.score,
    }),
  },
  h('span', { class: 'thumb' },
    result.thumbnail_url ? h('img', { src: result.thumbnail_url, alt: '', loading: 'lazy', decoding: 'async' }) : null,
    h('span', { class: 'thumb-shade', 'aria-hidden': 'true' }),
    h('span', { class: 'badge-rank', 'aria-hidden': 'true' }, `#${index + 1}`),
    h('span', { class: 'badge-kind', 'aria-hidden': 'true' }, icon(isImage ? 'image' : 'film')),
    h('span', { class: 'badge-time' }, range),
    h('span', { class: 'play-glyph', 'aria-hidden': 'true' }, icon('play')),
    h('span', { class: 'preview-bar', 'aria-hidden': 'true' }, h('span', {}))),
  h('span', { class: 'card-body' },
    h('span', { class: 'card-title-row' },
      h('span', { class: 'card-title', title: result.video }, title),
      h('span', { class: 'card-score', title: t('card.score') }, fmtScore(result.score))),
    h('span', { class: 'card-sub' }, basename(result.video),
      result.library && result.library !== state.library ? h('span', { class: 'lib-tag' }, result.library) : null),
    routes.length ? h('span', { class: 'route-badges' }, routes.map(([route, score]) =>
      h('span', { class: `route-badge r-${route}`, title: `${route} ${score}` },
        h('i', { 'aria-hidden': 'true' }), t(`route.${route}`), ' ', h('b', {}, fmtScore(score))))) : null,
    matches.length ? h('span', { class: 'matches' }, matches.map((match) => h('span', { class: 'match' },
      h('span', { class: `route-tag r-${match.route}` }, t(`route.${match.route}`)),
      !isImage && match.route !== 'meta' && Number.isFinite(match.start)
        ? h('span', { class: 'match-time' }, fmtTime(match.start))
        : (match.field ? h('span', { class: 'match-time' }, match.field) : null),
      h('span', { class: 'match-text' }, highlightNodes(match.highlight || match.text || ''))))) : null));
  const item = h('li', { class: `card${isImage ? ' is-image' : ''}`, dataset: { kind: result.kind, video: result.video } }, button);
  item.result = result;
  return item;
}

// -- hover and focus previews ------------------------------------------------------------------------

function hoverCard(cardEl) {
  if (!cardEl) return;
  if (previewing && previewing.card === cardEl) return;
  stopPreview();
  const result = cardEl.result;
  if (!result || result.kind === 'image' || !result.stream_url) return;
  previewTimer = setTimeout(() => startPreview(cardEl, result), PREVIEW_DELAY_MS);
  previewing = { card: cardEl, video: null };
}

function startPreview(cardEl, result) {
  if (!previewing || previewing.card !== cardEl) return;
  const thumb = cardEl.querySelector('.thumb');
  const start = Math.max(0, result.start);
  const end = Math.max(result.end, start + 0.5);
  const bar = cardEl.querySelector('.preview-bar > span');
  const video = h('video', { class: 'preview', muted: true, playsinline: true, preload: 'auto', 'aria-hidden': 'true',
    tabindex: '-1', disablepictureinpicture: true });
  video.muted = true;
  video.addEventListener('loadedmetadata', () => {
    video.currentTime = start;
    video.play().catch(() => {});
  });
  const loop = () => {
    if (video.currentTime >= end - 0.03 || video.currentTime < start - 0.5) {
      video.currentTime = start;
      if (video.paused) video.play().catch(() => {});
    }
    bar.style.width = `${Math.max(0, Math.min(100, ((video.currentTime - start) / (end - start)) * 100))}%`;
  };
  video.addEventListener('timeupdate', loop);
  video.addEventListener('ended', loop);
  video.addEventListener('playing', () => cardEl.classList.add('previewing'));
  video.src = result.stream_url;
  thumb.append(video);
  previewing.video = video;
}

function stopPreview() {
  clearTimeout(previewTimer);
  if (!previewing) return;
  const { card: cardEl, video } = previewing;
  previewing = null;
  cardEl.classList.remove('previewing');
  if (video) {
    video.pause();
    video.removeAttribute('src');
    video.load();
    video.remove();
  }
  const bar = cardEl.querySelector('.preview-bar > span');
  if (bar) bar.style.width = '0';
}

// -- keyboard: arrows move between cards -------------------------------------------------------------

function columns(cards) {
  if (!cards.length) return 1;
  const top = cards[0].getBoundingClientRect().top;
  let n = 0;
  for (const el of cards) {
    if (Math.abs(el.getBoundingClientRect().top - top) > 4) break;
    n += 1;
  }
  return Math.max(1, n);
}

function onGridKey(event) {
  const current = event.target.closest('.card-main');
  if (!current || event.altKey || event.ctrlKey || event.metaKey) return;
  const cards = [...grid.querySelectorAll('.card-main')];
  const index = cards.indexOf(current);
  const cols = columns(cards);
  const target = {
    ArrowRight: index + 1, ArrowLeft: index - 1, ArrowDown: index + cols, ArrowUp: index - cols,
    Home: 0, End: cards.length - 1,
  }[event.key];
  if (target === undefined) return;
  event.preventDefault();
  const next = cards[Math.max(0, Math.min(cards.length - 1, target))];
  next.focus();
}
