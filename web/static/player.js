// The player: a modal <dialog> that plays a segment (seek to start when metadata is in, pause at end),
// replays it or plays the whole file; images are shown as they are. Escape closes (native dialog).

import { t } from './i18n.js';
import { basename, fmtRange, fmtScore, fmtTime, h, highlightNodes, shortPath } from './ui.js';

let dialog;
let video;
let image;
let current = null; // {title, url, kind, start, end, matches, routes, path}
let stopAtEnd = false;
let frameRequest = 0;
let opener = null;
// stop this much before the end (a frame may be presented before the check runs) ...
const END_LOOKAHEAD = 0.06;
// ... and rest on the frame this much before it (one frame at 25 fps)
const LAST_FRAME = 0.04;

export function initPlayer() {
  dialog = document.getElementById('player');
  video = document.getElementById('player-video');
  image = document.getElementById('player-image');
  document.getElementById('player-close').addEventListener('click', () => dialog.close());
  document.getElementById('player-replay').addEventListener('click', replaySegment);
  document.getElementById('player-whole').addEventListener('click', playWhole);
  dialog.addEventListener('close', onClose);
  // a click on the backdrop (outside the panel) closes too
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
  video.addEventListener('loadedmetadata', onMetadata);
  video.addEventListener('timeupdate', () => {
    checkEnd();
    drawTimeline();
  });
  video.addEventListener('play', () => {
    setStatus('');
    watch();
  });
  video.addEventListener('seeked', drawTimeline);
  video.addEventListener('error', () => {
    if (!current || current.kind !== 'video' || !video.getAttribute('src')) return;
    const message = video.error ? `${video.error.code} ${video.error.message || ''}`.trim() : '';
    setStatus(t('player.cannot_play', { message }), true);
  });
  document.getElementById('player-timeline').addEventListener('click', (event) => {
    if (!Number.isFinite(video.duration)) return;
    const box = event.currentTarget.getBoundingClientRect();
    stopAtEnd = false;
    video.currentTime = ((event.clientX - box.left) / box.width) * video.duration;
  });
}

/** Open a result (or a medium: start 0, end its duration). */
export function openPlayer(item) {
  opener = document.activeElement;
  current = { matches: [], routes: {}, ...item };
  const isVideo = current.kind !== 'image';
  dialog.classList.toggle('is-image', !isVideo);
  document.getElementById('player-title').textContent = current.title || basename(current.path);
  const pathLine = document.getElementById('player-path');
  pathLine.textContent = shortPath(current.path, 4);
  pathLine.title = current.path || '';
  const range = document.getElementById('player-range');
  range.textContent = isVideo ? t('player.segment', { range: fmtRange(current.start, current.end) }) : t('card.image');
  setStatus('');
  renderMatches();
  if (isVideo) {
    image.hidden = true;
    image.removeAttribute('src');
    video.hidden = false;
    stopAtEnd = true;
    video.dataset.start = String(current.start);
    video.dataset.end = String(current.end);
    video.src = current.url;
  } else {
    video.hidden = true;
    video.removeAttribute('src');
    image.hidden = false;
    image.src = current.url;
    image.alt = current.title || basename(current.path);
  }
  if (!dialog.open) dialog.showModal();
  (isVideo ? document.getElementById('player-replay') : document.getElementById('player-close')).focus();
  drawTimeline();
}

export function isPlayerOpen() {
  return Boolean(dialog && dialog.open);
}

function onMetadata() {
  if (!current) return;
  video.currentTime = Math.min(current.start, Math.max(0, (video.duration || current.start) - 0.05));
  start();
  drawTimeline();
}

function start() {
  const item = current;
  const attempt = video.play();
  if (attempt && attempt.catch) {
    attempt.catch((error) => {
      // autoplay with sound refused: play muted rather than not at all (the controls unmute). Any other
      // refusal (the player was closed, the source changed) is left alone.
      if (error.name !== 'NotAllowedError' || current !== item || !dialog.open) return;
      video.muted = true;
      video.play().catch(() => {});
    });
  }
}

function replaySegment() {
  if (!current) return;
  stopAtEnd = true;
  video.currentTime = current.start;
  start();
}

function playWhole() {
  if (!current) return;
  stopAtEnd = false;
  video.currentTime = 0;
  start();
}

/** Pause at the segment's end; checked every animation frame while playing, and on timeupdate. */
function checkEnd() {
  if (!current || !stopAtEnd || video.paused) return false;
  if (video.currentTime >= current.end - END_LOOKAHEAD) {
    video.pause();
    stopAtEnd = false;
    // show the segment's own last frame, not the first one of the next shot
    video.currentTime = Math.max(current.start, current.end - LAST_FRAME);
    setStatus(t('player.paused_at_end'));
    return true;
  }
  return false;
}

function watch() {
  cancelAnimationFrame(frameRequest);
  const tick = () => {
    if (!dialog.open || video.paused) return;
    if (checkEnd()) return;
    drawTimeline();
    frameRequest = requestAnimationFrame(tick);
  };
  frameRequest = requestAnimationFrame(tick);
}

function onClose() {
  cancelAnimationFrame(frameRequest);
  video.pause();
  video.removeAttribute('src');
  video.load();
  image.removeAttribute('src');
  current = null;
  if (opener && opener.isConnected) opener.focus();
  opener = null;
}

function setStatus(text, error = false) {
  const status = document.getElementById('player-status');
  status.textContent = text;
  status.classList.toggle('error', error);
}

function drawTimeline() {
  const bar = document.getElementById('player-timeline');
  const time = document.getElementById('player-time');
  if (!current || current.kind === 'image') return;
  const duration = Number.isFinite(video.duration) && video.duration > 0 ? video.duration
    : Math.max(current.end, 1);
  const pct = (x) => `${Math.max(0, Math.min(100, (x / duration) * 100))}%`;
  const segment = bar.querySelector('.tl-segment');
  segment.style.left = pct(current.start);
  segment.style.width = `calc(${pct(current.end - current.start)} + 1px)`;
  bar.querySelector('.tl-head').style.left = pct(video.currentTime || 0);
  time.textContent = `${fmtTime(video.currentTime || 0)} / ${fmtTime(duration)}`;
  const marks = bar.querySelector('.tl-marks');
  if (marks.dataset.duration !== String(duration)) {
    marks.dataset.duration = String(duration);
    marks.replaceChildren(...current.matches.filter((m) => Number.isFinite(m.start)).map((m) =>
      h('span', { class: `tl-mark r-${m.route}`, style: { left: pct(m.start), width: pct(Math.max(0, (m.end ?? m.start) - m.start)) } })));
  }
}

function renderMatches() {
  const list = document.getElementById('player-matches');
  const routes = Object.entries(current.routes || {}).sort((a, b) => b[1] - a[1]);
  const badges = document.getElementById('player-routes');
  badges.replaceChildren(...routes.map(([route, score]) =>
    h('span', { class: `route-badge r-${route}` }, h('i', { 'aria-hidden': 'true' }), t(`route.${route}`), ' ',
      h('b', {}, fmtScore(score)))));
  document.getElementById('player-score').textContent = Number.isFinite(current.score)
    ? `${t('card.score')} ${fmtScore(current.score)}` : '';
  document.getElementById('player-matches-section').hidden = !current.matches.length;
  document.getElementById('player-timeline').querySelector('.tl-marks').dataset.duration = '';
  list.replaceChildren(...current.matches.map((match) => {
    const timed = current.kind !== 'image' && Number.isFinite(match.start) && match.route !== 'meta';
    const label = h('span', { class: 'match-text' }, highlightNodes(match.highlight || match.text || ''));
    return h('li', { class: 'match-row' },
      h('span', { class: `route-tag r-${match.route}` }, t(`route.${match.route}`)),
      timed
        ? h('button', { type: 'button', class: 'link-btn match-time', 'aria-label': t('player.jump', { time: fmtTime(match.start) }),
          onclick: () => { stopAtEnd = false; video.currentTime = match.start; start(); } }, fmtTime(match.start))
        : h('span', { class: 'match-time muted' }, match.field || ''),
      label);
  }));
}
