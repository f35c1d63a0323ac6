/** HTTP for the browser-facing listeners (console, agent API): access checks, answers, the web app. */
export * from './auth.js';
export * from './respond.js';
export * from './static.js';
