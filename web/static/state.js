// What the views share: who is signed in, the libraries and the one being worked on.

const LIBRARY_STORE = 'zhaopian.library';
const listeners = new Map();

export const state = {
  me: null, // {tenant, admin}
  libraries: [], // [{name, tenant, config, created}]
  library: '', // the current library's name
};

export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, new Set());
  listeners.get(event).add(fn);
}

export function emit(event, detail) {
  for (const fn of listeners.get(event) || []) fn(detail);
}

export function currentLibrary() {
  return state.libraries.find((lib) => lib.name === state.library) || null;
}

/** Module names of the current library (visual, labels, ocr, asr, meta). */
export function libraryModules() {
  const modules = currentLibrary()?.config?.modules;
  if (!modules) return [];
  return Array.isArray(modules) ? modules : Object.keys(modules);
}

export function setLibraries(libraries) {
  state.libraries = libraries;
  const saved = savedLibrary();
  const names = libraries.map((lib) => lib.name);
  const pick = [state.library, saved, 'default'].find((name) => name && names.includes(name)) || names[0] || '';
  selectLibrary(pick, { force: true });
}

export function selectLibrary(name, { force = false } = {}) {
  if (name === state.library && !force) return;
  const changed = name !== state.library;
  state.library = name;
  try { if (name) localStorage.setItem(LIBRARY_STORE, name); } catch { /* not persisted */ }
  emit('libraries');
  if (changed || force) emit('library', name);
}

function savedLibrary() {
  try { return localStorage.getItem(LIBRARY_STORE) || ''; } catch { return ''; }
}
